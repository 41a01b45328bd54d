//! The layers around every route: request metrics, the request's URI as spans may show it, and
//! problem documents for unknown routes and methods.

use std::borrow::Cow;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{StatusCode, Uri};
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

/// What a query parameter's value becomes in logs when its name says it holds a token.
const REDACTED: &str = "***";

/// The request target as spans and logs show it: every query parameter whose name holds `token`
/// (such as `/v1/live`'s `?access_token=`, for browsers that cannot send a header) has its value
/// replaced by `***`; the path and the other parameters stay, so a log still says what was asked.
/// Names are compared decoded and without regard to case, as a lenient reader might take them.
pub(crate) fn loggable_uri(uri: &Uri) -> Cow<'_, str> {
    let Some(query) = uri.query() else { return Cow::Owned(uri.to_string()) };
    let secret = |raw_name: &str| {
        let decoded: Vec<(String, String)> = serde_urlencoded::from_str(raw_name).unwrap_or_default();
        let name = decoded.first().map_or_else(|| raw_name.to_owned(), |(name, _)| name.clone());
        name.to_ascii_lowercase().contains("token") || raw_name.to_ascii_lowercase().contains("token")
    };
    let pairs: Vec<Cow<'_, str>> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if secret(name) => Cow::Owned(format!("{name}={REDACTED}")),
            _ => Cow::Borrowed(pair),
        })
        .collect();
    if pairs.iter().all(|pair| matches!(pair, Cow::Borrowed(_))) {
        return Cow::Owned(uri.to_string());
    }
    let target = uri.path_and_query().map_or("", |pq| pq.path());
    let prefix = match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
        _ => String::new(),
    };
    Cow::Owned(format!("{prefix}{target}?{}", pairs.join("&")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged(uri: &str) -> String {
        loggable_uri(&uri.parse::<Uri>().expect("a URI")).into_owned()
    }

    #[test]
    fn a_token_in_the_query_is_never_shown() {
        assert_eq!(logged("/v1/live?access_token=eyJ.secret.sig"), "/v1/live?access_token=***");
        assert_eq!(
            logged("/v1/live?after=12&access_token=eyJ.secret.sig&x=1"),
            "/v1/live?after=12&access_token=***&x=1"
        );
        assert_eq!(logged("/v1/live?access_token=a&access_token=b"), "/v1/live?access_token=***&access_token=***");
        // Spelled so that a lenient reader would still take it for the token.
        assert_eq!(logged("/v1/live?access%5Ftoken=eyJ.secret"), "/v1/live?access%5Ftoken=***");
        assert_eq!(logged("/v1/live?Access_Token=eyJ.secret"), "/v1/live?Access_Token=***");
        assert_eq!(logged("http://h:1/v1/live?access_token=s"), "http://h:1/v1/live?access_token=***");
    }

    #[test]
    fn other_targets_are_logged_as_they_came() {
        for uri in ["/v1/rooms", "/v1/rooms?limit=5&cursor=abc", "/v1/live?after=3", "/v1/x?=&&a", "/"] {
            assert_eq!(logged(uri), uri);
        }
    }
}
