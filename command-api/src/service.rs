//! What every route of the server shares, whichever roles it runs.
//!
//! [`assemble`] takes the routes of the roles (and their OpenAPI descriptions) and adds:
//!
//! - the service endpoints `/healthz`, `/readyz`, `/metrics` and `/openapi.json`;
//! - a bound on requests in flight under `/v1`: past it, an immediate 503 with `Retry-After`
//!   rather than a queue that grows without end;
//! - request counts and latency histograms by route, method and status;
//! - an `x-request-id` on every request and answer, and a tracing span carrying it;
//! - problem documents for unknown routes (404) and methods (405).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Serialize;
use stay_store::{EventStore, Executors, MigrationSet, SqlDatabase};
use tokio::sync::Semaphore;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::openapi::OpenApi;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::problem::ApiError;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Renders the process's metrics as Prometheus text.
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// What `/readyz` checks: the store answers and every schema is up to date.
#[derive(Clone, Debug)]
pub struct Readiness {
    /// The event store.
    pub store: EventStore,
    /// The SQL database beside it, and the components' migrations it must have.
    pub sql: Option<(SqlDatabase, Vec<MigrationSet>)>,
}

/// How the server around the routes behaves.
#[derive(Clone)]
pub struct ServiceConfig {
    /// Requests under `/v1` allowed in flight at once.
    pub max_in_flight: usize,
    /// For `/readyz`.
    pub readiness: Readiness,
    /// For `/metrics`.
    pub render_metrics: RenderMetrics,
    /// Executors whose counters `/metrics` reports, when this process runs commands.
    pub executors: Option<Arc<Executors>>,
}

impl std::fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceConfig").field("max_in_flight", &self.max_in_flight).finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct OpsState {
    readiness: Readiness,
    render_metrics: RenderMetrics,
    executors: Option<Arc<Executors>>,
    openapi: Arc<String>,
}

/// The whole server: the roles' routes under `/v1` plus the service endpoints and shared layers.
pub fn assemble(v1: Vec<(Router, OpenApi)>, config: ServiceConfig) -> (Router, OpenApi) {
    let permits = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
    let mut api = Router::new();
    let mut openapi = base_document();
    for (routes, doc) in v1 {
        api = api.merge(routes);
        openapi.merge(doc);
    }
    // A process with no /v1 routes (the projector role) has nothing to bound.
    let api =
        if api.has_routes() { api.route_layer(middleware::from_fn_with_state(permits, limit_in_flight)) } else { api };

    let (ops, ops_doc) = OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics_text))
        .routes(routes!(openapi_json))
        .split_for_parts();
    openapi.merge(ops_doc);
    let state = OpsState {
        readiness: config.readiness,
        render_metrics: config.render_metrics,
        executors: config.executors,
        openapi: Arc::new(openapi.to_json().unwrap_or_else(|_| "{}".into())),
    };
    let router = Router::new()
        .merge(api)
        .merge(ops.with_state(state))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn(record_metrics))
        .layer(middleware::from_fn(close_after_refused_body))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let id = request.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
                    tracing::info_span!("request", request_id = %id, method = %request.method(), uri = %request.uri())
                })
                // A 503 under overload is the service working as meant, not an error to page on.
                .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::WARN)),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid));
    (router, openapi)
}

fn base_document() -> OpenApi {
    use utoipa::openapi::{InfoBuilder, OpenApiBuilder};
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Stay")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some("Event-sourced accommodation reservations: the HTTP API (see API.md)."))
                .build(),
        )
        .build()
}

async fn limit_in_flight(State(permits): State<Arc<Semaphore>>, request: Request, next: Next) -> Response {
    match permits.try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => {
            metrics::counter!("stay_http_shed_total").increment(1);
            ApiError::overloaded().into_response()
        }
    }
}

/// A refusal sent before the request's body was read (401, 413, 503…) leaves the rest of that
/// body on the connection, and the connection cannot carry another request; say so, so clients
/// open a new one instead of failing on the next request.
async fn close_after_refused_body(request: Request, next: Next) -> Response {
    let has_body = request.headers().contains_key(header::TRANSFER_ENCODING)
        || request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|length| length.trim() != "0");
    let mut response = next.run(request).await;
    if has_body && (response.status().is_client_error() || response.status().is_server_error()) {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("route", route), ("method", method), ("status", status)];
    metrics::counter!("stay_http_requests_total", &labels).increment(1);
    metrics::histogram!("stay_http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    response
}

async fn unknown_route() -> ApiError {
    ApiError::not_found("route_not_found", "no such route; see /openapi.json")
}

async fn wrong_method() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method")
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "service", responses((status = 200, description = "The process runs", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// `/healthz`'s answer.
#[derive(Debug, Serialize, ToSchema)]
struct Health {
    status: &'static str,
}

/// One readiness check.
#[derive(Debug, Serialize, ToSchema)]
struct Check {
    name: String,
    ok: bool,
    detail: String,
}

/// `/readyz`'s answer.
#[derive(Debug, Serialize, ToSchema)]
struct Ready {
    ready: bool,
    checks: Vec<Check>,
}

/// Readiness: the store is reachable and every migration is applied.
#[utoipa::path(get, path = "/readyz", tag = "service", responses(
    (status = 200, description = "Ready", body = Ready),
    (status = 503, description = "Not ready; the failing checks say why", body = Ready),
))]
async fn readyz(State(ops): State<OpsState>) -> (StatusCode, Json<Ready>) {
    const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
    let mut checks = Vec::new();
    let store = tokio::time::timeout(PROBE_TIMEOUT, ops.readiness.store.head()).await;
    checks.push(match store {
        Ok(Ok(head)) => Check { name: "store".into(), ok: true, detail: format!("head at {head}") },
        Ok(Err(err)) => Check { name: "store".into(), ok: false, detail: err.to_string() },
        Err(_) => Check { name: "store".into(), ok: false, detail: "no answer within 2 s".into() },
    });
    let mut pending = match ops.readiness.store.pending_migrations().await {
        Ok(pending) => pending.into_iter().map(str::to_owned).collect(),
        Err(err) => vec![format!("unknown: {err}")],
    };
    if let Some((db, sets)) = &ops.readiness.sql {
        for set in sets {
            match db.pending_migrations(set).await {
                Ok(names) => pending.extend(names.into_iter().map(|n| format!("{}/{n}", set.component))),
                Err(err) => pending.push(format!("{}: unknown: {err}", set.component)),
            }
        }
    }
    checks.push(if pending.is_empty() {
        Check { name: "migrations".into(), ok: true, detail: "all applied".into() }
    } else {
        Check { name: "migrations".into(), ok: false, detail: format!("pending: {}", pending.join(", ")) }
    });
    let ready = checks.iter().all(|c| c.ok);
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Ready { ready, checks }))
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "service", responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
async fn metrics_text(State(ops): State<OpsState>) -> Response {
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
    let body = (ops.render_metrics)();
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"))], body).into_response()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "service", responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json")))]
async fn openapi_json(State(ops): State<OpsState>) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], ops.openapi.as_str().to_owned())
        .into_response()
}
