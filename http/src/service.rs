//! What every route of the server shares, whichever roles it runs.
//!
//! [`assemble`] takes the routes of the roles (and their OpenAPI descriptions) and adds:
//!
//! - the service endpoints `/healthz`, `/readyz`, `/metrics` and `/openapi.json`;
//! - a bound on requests in flight under `/v1`: past it, an immediate 503 with a `Retry-After`
//!   estimated from the backlog, rather than a queue that grows without end (`admission.rs`);
//! - request counts and latency histograms by route, method and status;
//! - an `x-request-id` on every request and answer, and a tracing span carrying it;
//! - problem documents for unknown routes (404) and methods (405);
//! - 431 for a header section past Stay's bounds (`header_bound.rs`);
//! - the rest of a body a refusal did not read drained before the answer (`unread_body.rs`).
//!
//! The other layers are in `layers.rs`, the endpoints in `endpoints.rs`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderName, StatusCode};
use axum::middleware;
use axum::Router;
use stay_store::{EventStore, Executors, MigrationSet, SqlDatabase};
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::admission::{admit, Admission};
use crate::endpoints::{self, OpsState};
use crate::header_bound::bound_headers;
use crate::layers::{loggable_uri, record_metrics, unknown_route, wrong_method};
use crate::refusal_log;
use crate::unread_body::drain_unread_body;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Renders the process's metrics as Prometheus text.
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// What `/readyz` checks: the store answers, every schema is up to date, and each role this
/// process runs is ready to serve.
#[derive(Clone, Debug)]
pub struct Readiness {
    /// The event store.
    pub store: EventStore,
    /// The SQL database beside it, and the components' migrations it must have.
    pub sql: Option<(SqlDatabase, Vec<MigrationSet>)>,
    /// The checks of the roles this process runs, one each.
    pub roles: Vec<Arc<dyn RoleReadiness>>,
}

/// A role's own part of `/readyz`: what makes that role ready to serve, asked at each request.
pub trait RoleReadiness: std::fmt::Debug + Send + Sync + 'static {
    /// The check's name in `/readyz`'s answer: the role's, as `projector`.
    fn name(&self) -> &'static str;

    /// Looks, and says what it found.
    fn check(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = RoleCheck> + Send + '_>>;
}

/// What a role's readiness check found.
#[derive(Clone, Debug, PartialEq)]
pub struct RoleCheck {
    /// Whether the role is ready to serve.
    pub ok: bool,
    /// One line for people.
    pub detail: String,
    /// Structured detail for tools (the projector's leases and lag), if any.
    pub report: Option<serde_json::Value>,
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

/// The whole server: the roles' routes under `/v1` plus the service endpoints and shared layers.
pub fn assemble(v1: Vec<(Router, OpenApi)>, config: ServiceConfig) -> (Router, OpenApi) {
    let admission = Arc::new(Admission::new(config.max_in_flight));
    let mut api = Router::new();
    let mut openapi = base_document();
    for (routes, doc) in v1 {
        api = api.merge(routes);
        openapi.merge(doc);
    }
    crate::openapi::document_shared_refusals(&mut openapi);
    // A process with no /v1 routes (the projector role) has nothing to bound.
    let api = if api.has_routes() { api.route_layer(middleware::from_fn_with_state(admission, admit)) } else { api };

    let (ops, ops_doc) = OpenApiRouter::new()
        .routes(routes!(endpoints::healthz))
        .routes(routes!(endpoints::readyz))
        .routes(routes!(endpoints::metrics_text))
        .routes(routes!(endpoints::openapi_json))
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
        .layer(middleware::from_fn(bound_headers))
        .layer(middleware::from_fn(record_metrics))
        .layer(middleware::from_fn(drain_unread_body))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let id = request.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
                    // The URI as logs may show it: a token passed in the query is hidden.
                    let uri = loggable_uri(request.uri());
                    tracing::info_span!("request", request_id = %id, method = %request.method(), uri = %uri)
                })
                // A 503 (overload, a stop, the payment provider's open circuit) is the service
                // working as meant: counted, and logged in aggregate, never a line per request.
                .on_failure(|failure: ServerErrorsFailureClass, latency: Duration, _span: &tracing::Span| match failure {
                    ServerErrorsFailureClass::StatusCode(StatusCode::SERVICE_UNAVAILABLE) => refusal_log::refused(),
                    failure => tracing::warn!(classification = %failure, latency_ms = latency.as_millis(), "response failed"),
                }),
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
