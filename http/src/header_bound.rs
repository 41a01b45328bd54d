//! Stay's own bound on a request's header section, refused with a problem document (431).
//!
//! hyper refuses a header section past its read buffer, or with more fields than it parses, with
//! a 431 of its own that has an empty body. The server ([`crate::serve`]) therefore gives hyper
//! room beyond these bounds ([`HYPER_MAX_BUF_SIZE`], [`HYPER_MAX_HEADERS`]), and this layer
//! refuses what exceeds them as every other refusal is refused. The bounds are those hyper applied
//! by default before, so no request accepted before is refused now.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::problem::ApiError;

/// The most header fields a request may carry.
pub const MAX_HEADER_FIELDS: usize = 100;

/// The most bytes of request line and header fields a request may carry.
pub const MAX_HEADER_BYTES: usize = 400 * 1024;

/// hyper's read buffer: room for a header section well past [`MAX_HEADER_BYTES`], so that
/// the refusal is ours. Past it, hyper still answers its own empty 431.
pub(crate) const HYPER_MAX_BUF_SIZE: usize = 2 * 1024 * 1024;

/// The header fields hyper parses: room past [`MAX_HEADER_FIELDS`], for the same reason.
pub(crate) const HYPER_MAX_HEADERS: usize = 256;

/// 431 `headers_too_large` for a header section past the bounds.
pub(crate) async fn bound_headers(request: Request, next: Next) -> Response {
    let fields = request.headers().len();
    if fields > MAX_HEADER_FIELDS {
        return headers_too_large(format!("the request has {fields} header fields; at most {MAX_HEADER_FIELDS}"))
            .into_response();
    }
    let bytes = header_section_bytes(&request);
    if bytes > MAX_HEADER_BYTES {
        return headers_too_large(format!(
            "the request line and header fields take {bytes} bytes; at most {MAX_HEADER_BYTES}"
        ))
        .into_response();
    }
    next.run(request).await
}

/// The request line and header fields as they came on the wire (give or take optional spaces).
fn header_section_bytes(request: &Request) -> usize {
    // The request target's length without writing it out (this runs on every request).
    let uri = request.uri();
    let target = uri.scheme_str().map_or(0, |scheme| scheme.len() + "://".len())
        + uri.authority().map_or(0, |authority| authority.as_str().len())
        + uri.path_and_query().map_or(1, |path| path.as_str().len());
    let line = request.method().as_str().len() + " ".len() + target + " HTTP/1.1\r\n".len();
    let fields: usize = request.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    line + fields
}

/// 431 `headers_too_large`.
fn headers_too_large(detail: String) -> ApiError {
    ApiError::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large", detail)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::header;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;
    use crate::problem::PROBLEM_JSON;

    fn app() -> Router {
        Router::new().route("/", get(|| async { "ok" })).layer(axum::middleware::from_fn(bound_headers))
    }

    #[tokio::test]
    async fn headers_within_the_bounds_pass() {
        let request = Request::get("/").header("x-big", "x".repeat(MAX_HEADER_BYTES / 2)).body(Body::empty());
        let response = app().oneshot(request.expect("request")).await.expect("answer");
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_huge_header_is_a_problem_document() {
        let request = Request::get("/").header("x-big", "x".repeat(MAX_HEADER_BYTES)).body(Body::empty());
        let response = app().oneshot(request.expect("request")).await.expect("answer");
        assert_eq!(response.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }

    #[test]
    fn the_request_line_counts_its_target_as_sent() {
        for target in ["/", "/v1/rooms?limit=5&cursor=abc", "http://example.com:8080/v1/rooms?x=1"] {
            let request = Request::get(target).body(Body::empty()).expect("request");
            let line = format!("GET {target} HTTP/1.1\r\n");
            assert_eq!(header_section_bytes(&request), line.len(), "{target}");
        }
    }

    #[tokio::test]
    async fn too_many_fields_are_a_problem_document() {
        let mut request = Request::get("/");
        for n in 0..=MAX_HEADER_FIELDS {
            request = request.header(format!("x-field-{n}"), "1");
        }
        let response = app().oneshot(request.body(Body::empty()).expect("request")).await.expect("answer");
        assert_eq!(response.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }
}
