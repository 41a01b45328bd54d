//! A request body that the answer did not need is read and thrown away, up to a bound, before
//! the answer goes out, so that the client reads the answer.
//!
//! A refusal sent before the body was read (401, 413 for a declared or an overlong body, 503…)
//! leaves the rest of the body on the connection. Closing the connection then would make the
//! kernel reset it while the client is still sending, and a client that writes its whole body
//! before it reads (Python's urllib and requests, most scripts) sees a broken pipe instead of
//! the answer. So the rest of the body is drained first: at most [`DRAIN_MAX_BYTES`] and
//! [`DRAIN_MAX_TIME`]. Once drained, the connection carries the next request as usual; only a body
//! that could not be drained closes it (`Connection: close`), since the rest of it is still
//! arriving where the next request should be.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

/// The most bytes of an unread body drained before the answer.
pub const DRAIN_MAX_BYTES: u64 = 8 * 1024 * 1024;

/// The longest an unread body is drained before the answer.
pub const DRAIN_MAX_TIME: Duration = Duration::from_secs(5);

/// Drains what the route left of the request's body, then answers; closes the connection only
/// when the body could not be drained.
pub(crate) async fn drain_unread_body(request: Request, next: Next) -> Response {
    if !has_body(request.headers()) {
        return next.run(request).await;
    }
    let declared = declared_length(request.headers());
    let awaits_continue = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let left = Arc::new(Left::default());
    let request = request.map(|body| Body::new(Watched { inner: Some(body), left: left.clone(), ended: false }));
    let mut response = next.run(request).await;
    let Some(body) = left.take() else {
        // Read to its end: the connection is ready for the next request.
        return response;
    };
    // A client that waits for `100 Continue` has not sent a body the route never asked for.
    let sent = !awaits_continue || left.polled();
    let drained = sent && declared.is_none_or(|length| length <= DRAIN_MAX_BYTES) && drain(body).await;
    if !drained {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Whether the request says it has a body.
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING) || declared_length(headers).is_some_and(|length| length > 0)
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok())
}

/// Reads `body` to its end within the bounds; whether it got there.
async fn drain(mut body: Body) -> bool {
    let read_all = async {
        let mut read = 0u64;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            read += frame.data_ref().map_or(0, |data| data.len() as u64);
            if read > DRAIN_MAX_BYTES {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_MAX_TIME, read_all).await.unwrap_or(false)
}

/// What the route left of the body: handed back when the route drops it before its end.
#[derive(Debug, Default)]
struct Left {
    body: Mutex<Option<Body>>,
    polled: std::sync::atomic::AtomicBool,
}

impl Left {
    fn take(&self) -> Option<Body> {
        self.body.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    fn polled(&self) -> bool {
        self.polled.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The request body as the route sees it; gives the rest back to [`Left`] when dropped unread.
struct Watched {
    inner: Option<Body>,
    left: Arc<Left>,
    ended: bool,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.left.polled.store(true, std::sync::atomic::Ordering::Relaxed);
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(None) };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            if !self.ended && !inner.is_end_stream() {
                *self.left.body.lock().unwrap_or_else(PoisonError::into_inner) = Some(inner);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::http::StatusCode;
    use axum::routing::post;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;
    use crate::body::read_body;

    const CHUNK: usize = 64 * 1024;

    /// A body of equal chunks of 64 KiB that counts what the server took from it.
    struct Chunks {
        left: usize,
        taken: Arc<AtomicUsize>,
    }

    impl HttpBody for Chunks {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            self.left -= 1;
            self.taken.fetch_add(CHUNK, Ordering::Relaxed);
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; CHUNK])))))
        }
    }

    fn streamed(chunks: usize, taken: Arc<AtomicUsize>) -> Body {
        Body::new(Chunks { left: chunks, taken })
    }

    async fn answer(app: Router, body: Body, length: Option<usize>) -> Response {
        let mut request = Request::post("/").header(header::CONTENT_TYPE, "application/json");
        request = match length {
            Some(length) => request.header(header::CONTENT_LENGTH, length),
            None => request.header(header::TRANSFER_ENCODING, "chunked"),
        };
        app.oneshot(request.body(body).expect("request")).await.expect("answer")
    }

    fn app() -> Router {
        Router::new()
            .route(
                "/",
                post(|request: Request| async move {
                    match read_body(request.into_body(), 1024).await {
                        Ok(_) => StatusCode::OK,
                        Err(err) => err.status(),
                    }
                }),
            )
            .layer(axum::middleware::from_fn(drain_unread_body))
    }

    #[tokio::test]
    async fn an_overlong_body_is_drained_and_the_connection_kept() {
        let taken = Arc::new(AtomicUsize::new(0));
        let response = answer(app(), streamed(48, taken.clone()), None).await; // 3 MiB
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(!response.headers().contains_key(header::CONNECTION));
        assert_eq!(taken.load(Ordering::Relaxed), 48 * CHUNK, "all of it was read");
    }

    #[tokio::test]
    async fn a_body_past_the_drain_bound_closes_the_connection() {
        let taken = Arc::new(AtomicUsize::new(0));
        let chunks = (DRAIN_MAX_BYTES as usize / CHUNK) + 16;
        let response = answer(app(), streamed(chunks, taken.clone()), None).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.headers()[header::CONNECTION], "close");
        assert!(taken.load(Ordering::Relaxed) <= DRAIN_MAX_BYTES as usize + 2 * CHUNK);
    }

    #[tokio::test]
    async fn a_refusal_after_the_whole_body_keeps_the_connection() {
        let response = answer(app(), Body::from("{}"), Some(2)).await;
        assert_eq!(response.status(), StatusCode::OK);
        let refused = Router::new()
            .route(
                "/",
                post(|request: Request| async move {
                    let _ = read_body(request.into_body(), 1024).await;
                    StatusCode::CONFLICT
                }),
            )
            .layer(axum::middleware::from_fn(drain_unread_body));
        let response = answer(refused, Body::from("{}"), Some(2)).await;
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert!(!response.headers().contains_key(header::CONNECTION));
    }
}
