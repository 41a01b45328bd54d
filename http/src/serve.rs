//! Serving the router on a listener: HTTP/1.1 and HTTP/2 as `axum::serve` does, with room in
//! hyper's parser for the header sections that Stay refuses itself (see `header_bound.rs`), and
//! the same graceful shutdown: once `shutdown` completes, no new connection is accepted, idle
//! ones are closed, and requests in flight are finished before [`serve`] returns.

use std::future::Future;
use std::io;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::header_bound::{HYPER_MAX_BUF_SIZE, HYPER_MAX_HEADERS};

/// Serves `router` on `listener` until `shutdown` completes and every connection has finished.
pub async fn serve(listener: TcpListener, router: Router, shutdown: impl Future<Output = ()> + Send) -> io::Result<()> {
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
    graceful.shutdown().await;
    Ok(())
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
