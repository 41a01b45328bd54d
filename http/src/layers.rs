//! The layers around every route: request metrics, and problem documents for unknown routes and
//! methods.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

use crate::problem::ApiError;

/// Counts requests and times them by route, method and status.
pub(crate) async fn record_metrics(request: Request, next: Next) -> Response {
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

/// 404 `route_not_found`.
pub(crate) async fn unknown_route() -> ApiError {
    ApiError::not_found("route_not_found", "no such route; see /openapi.json")
}

/// 405 `method_not_allowed`.
pub(crate) async fn wrong_method() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method")
}
