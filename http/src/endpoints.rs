//! The service endpoints every process serves: `/healthz`, `/readyz`, `/metrics`, `/openapi.json`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use stay_store::Executors;
use utoipa::ToSchema;

use crate::service::{Readiness, RenderMetrics};

/// What the service endpoints read.
#[derive(Clone)]
pub(crate) struct OpsState {
    pub(crate) readiness: Readiness,
    pub(crate) render_metrics: RenderMetrics,
    pub(crate) executors: Option<Arc<Executors>>,
    pub(crate) openapi: Arc<String>,
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "service", responses((status = 200, description = "The process runs", body = Health)))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// `/healthz`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    status: &'static str,
}

/// One readiness check.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Check {
    name: String,
    ok: bool,
    detail: String,
    /// Structured detail, for the checks that have it (the projector's leases and lag).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    report: Option<serde_json::Value>,
}

impl Check {
    fn new(name: &str, ok: bool, detail: impl Into<String>) -> Self {
        Self { name: name.to_owned(), ok, detail: detail.into(), report: None }
    }
}

/// `/readyz`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Ready {
    ready: bool,
    checks: Vec<Check>,
}

/// Readiness: the store is reachable, every migration is applied, and each role this process runs
/// is ready (its own checks: see the roles' `RoleReadiness`). A role's lag is detail, never a reason.
#[utoipa::path(get, path = "/readyz", tag = "service", responses(
    (status = 200, description = "Ready", body = Ready),
    (status = 503, description = "Not ready; the failing checks say why", body = Ready),
))]
pub(crate) async fn readyz(State(ops): State<OpsState>) -> (StatusCode, Json<Ready>) {
    // Every check runs at once, each within the same bound, so the answer comes within about 2 s
    // however many roles this process runs (probes give up at 5 s).
    const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
    let mut roles = tokio::task::JoinSet::new();
    for (at, role) in ops.readiness.roles.iter().enumerate() {
        let role = role.clone();
        roles.spawn(async move { (at, tokio::time::timeout(PROBE_TIMEOUT, role.check()).await) });
    }
    let (store, pending) = tokio::join!(
        tokio::time::timeout(PROBE_TIMEOUT, ops.readiness.store.head()),
        tokio::time::timeout(PROBE_TIMEOUT, pending_migrations(&ops.readiness)),
    );
    let mut checks = vec![
        match store {
            Ok(Ok(head)) => Check::new("store", true, format!("head at {head}")),
            Ok(Err(err)) => Check::new("store", false, err.to_string()),
            Err(_) => Check::new("store", false, "no answer within 2 s"),
        },
        match pending {
            Ok(pending) if pending.is_empty() => Check::new("migrations", true, "all applied"),
            Ok(pending) => Check::new("migrations", false, format!("pending: {}", pending.join(", "))),
            Err(_) => Check::new("migrations", false, "no answer within 2 s"),
        },
    ];
    let mut found: Vec<Option<Check>> = ops.readiness.roles.iter().map(|_| None).collect();
    while let Some(Ok((at, answer))) = roles.join_next().await {
        let name = ops.readiness.roles[at].name();
        found[at] = Some(match answer {
            Ok(role) => Check { name: name.to_owned(), ok: role.ok, detail: role.detail, report: role.report },
            Err(_) => Check::new(name, false, "no answer within 2 s"),
        });
    }
    for (role, check) in ops.readiness.roles.iter().zip(found) {
        checks.push(check.unwrap_or_else(|| Check::new(role.name(), false, "the check failed")));
    }
    let ready = checks.iter().all(|c| c.ok);
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Ready { ready, checks }))
}

/// The migrations not yet applied: the log's, then each component's as `component/name`.
async fn pending_migrations(readiness: &Readiness) -> Vec<String> {
    let mut pending = match readiness.store.pending_migrations().await {
        Ok(pending) => pending.into_iter().map(str::to_owned).collect(),
        Err(err) => vec![format!("unknown: {err}")],
    };
    if let Some((db, sets)) = &readiness.sql {
        for set in sets {
            match db.pending_migrations(set).await {
                Ok(names) => pending.extend(names.into_iter().map(|n| format!("{}/{n}", set.component))),
                Err(err) => pending.push(format!("{}: unknown: {err}", set.component)),
            }
        }
    }
    pending
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "service", responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub(crate) async fn metrics_text(State(ops): State<OpsState>) -> Response {
    if let Some(executors) = &ops.executors {
        for (aggregate, stats) in executors.stats() {
            use std::sync::atomic::Ordering::Relaxed;
            let counters = [
                ("stay_executor_commands_total", stats.committed.load(Relaxed)),
                ("stay_executor_rejected_total", stats.rejected.load(Relaxed)),
                ("stay_executor_conflicts_total", stats.conflicts.load(Relaxed)),
                ("stay_executor_gave_up_total", stats.gave_up.load(Relaxed)),
                ("stay_executor_cache_misses_total", stats.cache_misses.load(Relaxed)),
            ];
            for (name, value) in counters {
                metrics::counter!(name, "aggregate" => aggregate).absolute(value);
            }
        }
    }
    if let Some(bytes) = resident_memory_bytes() {
        metrics::gauge!("stay_process_resident_memory_bytes").set(bytes as f64);
    }
    let body = (ops.render_metrics)();
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"))], body).into_response()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "service", responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json")))]
pub(crate) async fn openapi_json(State(ops): State<OpsState>) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], ops.openapi.as_str().to_owned())
        .into_response()
}

/// This process's resident memory, from `/proc/self/status` (Linux); `None` elsewhere.
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn resident_memory_is_read_on_linux() {
        let bytes = resident_memory_bytes().expect("VmRSS");
        assert!(bytes > 1024 * 1024, "a running test process holds more than 1 MB: {bytes}");
    }
}
