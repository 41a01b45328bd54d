//! The layers around every route: a bound on requests in flight, request metrics, closing
//! connections whose body was refused, and problem documents for unknown routes and methods.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
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

/// A refusal sent before the request's body was read (401, 413, 503…) leaves the rest of that
/// body on the connection, and the connection cannot carry another request; say so, so clients
/// open a new one instead of failing on the next request.
pub(crate) async fn close_after_refused_body(request: Request, next: Next) -> Response {
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
