//! The baseline app: axum with one route, `POST /rooms`, that runs one `Register` command per
//! request, for a new room id each time, through a plain `cqrs_es::CqrsFramework` over
//! `postgres_es::PostgresEventRepository` as `postgres_es::postgres_cqrs` builds it (no snapshots,
//! no aggregate cache, no queries): what a minimal framework app does with each command.
//!
//! It runs on a tokio runtime of its own, on threads of its own, as a server process would: the
//! load generator's tasks do not run on its workers, as they do not run on `stay serve`'s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{anyhow, Context};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use cqrs_es::AggregateError;
use postgres_es::{postgres_cqrs, PostgresCqrs};
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::demo_room::{DemoRoom, DemoRoomCommand, Listing};

/// The table `PostgresEventRepository` reads and writes by default (postgres-es 0.5's `db/init.sql`).
/// No snapshots table: the framework is built without snapshots.
const EVENTS_TABLE: &str = "CREATE TABLE IF NOT EXISTS events (
    aggregate_type text NOT NULL,
    aggregate_id text NOT NULL,
    sequence bigint CHECK (sequence >= 0) NOT NULL,
    event_type text NOT NULL,
    event_version text NOT NULL,
    payload json NOT NULL,
    metadata json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
)";

/// The baseline app, serving until stopped (or dropped).
#[derive(Debug)]
pub struct App {
    /// Its base URL (`http://127.0.0.1:PORT`).
    pub base: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl App {
    /// Starts the app on the PostgreSQL database `url` (creating its events table) with a pool of
    /// `connections`; answers once it listens.
    pub async fn start(url: &str, connections: u32) -> anyhow::Result<Self> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let url = url.to_owned();
        let thread = std::thread::Builder::new()
            .name("baseline-app".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .thread_name("baseline-app")
                    .build()
                    .context("the baseline app's runtime")?;
                runtime.block_on(serve(&url, connections, ready_tx, stop_rx))
            })
            .context("starting the baseline app's thread")?;
        let mut app = Self { base: String::new(), stop: Some(stop_tx), thread: Some(thread) };
        match ready_rx.await {
            Ok(address) => {
                app.base = format!("http://{address}");
                Ok(app)
            }
            // It ended before listening: its own error says why.
            Err(_) => {
                Err(app.join().await.err().unwrap_or_else(|| anyhow!("the baseline app stopped before listening")))
            }
        }
    }

    /// Stops it: no new connections, requests in flight answered, its pool closed.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.join().await
    }

    async fn join(&mut self) -> anyhow::Result<()> {
        let Some(thread) = self.thread.take() else { return Ok(()) };
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(ended)) => ended,
            _ => Err(anyhow!("the baseline app's thread panicked")),
        }
    }
}

async fn serve(
    url: &str,
    connections: u32,
    ready: oneshot::Sender<SocketAddr>,
    stop: oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(connections.max(1))
        .connect(url)
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    sqlx::query(EVENTS_TABLE).execute(&pool).await.context("creating the events table")?;
    let cqrs = Arc::new(postgres_cqrs::<DemoRoom>(pool.clone(), Vec::new(), ()));
    let listener = TcpListener::bind("127.0.0.1:0").await.context("listening on 127.0.0.1")?;
    let address = listener.local_addr().context("the baseline app's address")?;
    if ready.send(address).is_err() {
        // Nobody is waiting for it any more.
        return Ok(());
    }
    // A dropped `App` drops the sender, which stops the server too.
    let stopped = async {
        let _ = stop.await;
    };
    axum::serve(listener, router(cqrs)).with_graceful_shutdown(stopped).await.context("serving the baseline app")?;
    pool.close().await;
    Ok(())
}

fn router(cqrs: Arc<PostgresCqrs<DemoRoom>>) -> Router {
    Router::new().route("/rooms", post(register)).with_state(cqrs)
}

/// `POST /rooms`: registers a new room; 201 with its id.
async fn register(State(cqrs): State<Arc<PostgresCqrs<DemoRoom>>>, Json(listing): Json<Listing>) -> Response {
    let room_id = Uuid::new_v4().to_string();
    match cqrs.execute(&room_id, DemoRoomCommand::Register(listing)).await {
        Ok(()) => (StatusCode::CREATED, Json(serde_json::json!({ "room_id": room_id }))).into_response(),
        Err(AggregateError::UserError(_) | AggregateError::AggregateConflict) => StatusCode::CONFLICT.into_response(),
        Err(error) => {
            tracing::warn!(%error, room_id, "a baseline command failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
