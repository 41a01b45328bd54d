//! Serving the router on a listener: HTTP/1.1 and HTTP/2 as `axum::serve` does, with room in
//! hyper's parser for the header sections that Stay refuses itself (see `header_bound.rs`), and a
//! graceful shutdown that does not race clients' kept-alive connections.
//!
//! Once `shutdown` completes, no new connection is accepted. Closing the idle kept-alive ones at
//! that instant (as `axum::serve` does) races a client that is just sending its next request on
//! one: the request is lost with the connection, and the client cannot tell whether it was
//! carried out. So the connections stay open for [`DRAIN`] first, and every HTTP/1.1 answer in
//! that time carries `Connection: close`, so clients move their next request elsewhere; then idle
//! connections are closed and requests in flight are finished before [`serve`] returns.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Version};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::header_bound::{HYPER_MAX_BUF_SIZE, HYPER_MAX_HEADERS};

/// How long kept-alive connections are still served after the stop begins, each answer telling
/// its client to close the connection, before the idle ones are closed.
pub const DRAIN: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` until `shutdown` completes and every connection has finished.
pub async fn serve(listener: TcpListener, router: Router, shutdown: impl Future<Output = ()> + Send) -> io::Result<()> {
    let draining = Arc::new(AtomicBool::new(false));
    let router = router.layer(middleware::from_fn_with_state(draining.clone(), close_when_draining));
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().max_buf_size(HYPER_MAX_BUF_SIZE).max_headers(HYPER_MAX_HEADERS);
    builder.http2().enable_connect_protocol();
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(err) => {
                accept_failed(err).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::trace!(error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    draining.store(true, Ordering::Relaxed);
    tokio::time::sleep(DRAIN).await;
    graceful.shutdown().await;
    Ok(())
}

/// While draining, tells each HTTP/1.1 client to close its connection after this answer (HTTP/2
/// has no such header; hyper's graceful shutdown sends its clients GOAWAY instead).
async fn close_when_draining(State(draining): State<Arc<AtomicBool>>, request: Request, next: Next) -> Response {
    let http1 = request.version() <= Version::HTTP_11;
    let mut response = next.run(request).await;
    if http1 && draining.load(Ordering::Relaxed) {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A failed accept: a connection that went away before it was accepted is nothing; anything else
/// (out of file descriptors, say) is logged, and accepting pauses for a second rather than spin.
async fn accept_failed(err: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(err.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::error!(error = %err, "cannot accept connections");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    async fn ask(stream: &mut TcpStream) -> String {
        stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
        let mut answer = vec![0; 4096];
        let read = stream.read(&mut answer).await.expect("read");
        String::from_utf8_lossy(&answer[..read]).to_lowercase()
    }

    #[tokio::test]
    async fn a_kept_alive_connection_is_served_while_draining_and_told_to_close() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Router::new().route("/", get(|| async { "hi" })), async move {
            let _ = stop_rx.await;
        }));
        let mut kept = TcpStream::connect(addr).await.expect("connect");
        let before = ask(&mut kept).await;
        assert!(before.starts_with("http/1.1 200") && !before.contains("connection: close"), "{before}");

        stop_tx.send(()).expect("stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
        // No new connection is taken, but the kept one is still served, and told to close.
        assert!(TcpStream::connect(addr).await.is_err(), "the listener is closed");
        let during = ask(&mut kept).await;
        assert!(during.starts_with("http/1.1 200") && during.contains("connection: close"), "{during}");

        tokio::time::timeout(DRAIN * 3, server).await.expect("stops after the drain").expect("task").expect("serve");
    }
}
