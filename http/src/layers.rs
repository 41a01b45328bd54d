//! The layers around every route: a bound on requests in flight, request metrics, and problem
//! documents for unknown routes and methods.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::problem::ApiError;

/// Answers 503 at once when every permit is taken, rather than queueing without end.
pub(crate) async fn limit_in_flight(State(permits): State<Arc<Semaphore>>, request: Request, next: Next) -> Response {
    match permits.try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => {
            metrics::counter!("stay_http_shed_total").increment(1);
            ApiError::overloaded().into_response()
        }
    }
}

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
