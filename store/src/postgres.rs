//! The PostgreSQL backend: several processes, one database.
//!
//! Appends of concurrent commands are written together: one transaction, one `INSERT … RETURNING`
//! and one WAL flush per group, with a conflicting append failing alone (`pg_group_commit.rs`).
//!
//! The feed never trusts `global_position` alone: identity values are taken at insert and become
//! visible at commit, so a slow transaction can commit a lower position after a reader has moved
//! past it. Every row also records its transaction (`tx_id xid8`), and the feed reads only rows
//! whose transaction is older than every transaction still running
//! (`tx_id < pg_snapshot_xmin(pg_current_snapshot())`), in `(tx_id, global_position)` order. Such
//! rows can no longer change or gain neighbours before them, so nothing is ever skipped; a
//! rolled-back transaction leaves nothing behind and holds nothing up.
//!
//! Wake-ups: in-process waiters are woken directly after a commit; other processes by a
//! `NOTIFY stay_events` that a background task sends after commits (coalesced, and outside the
//! writing transaction: a NOTIFY inside it would serialise every commit on PostgreSQL's notify
//! lock); polling is the fallback.

use std::sync::Arc;
use std::time::Duration;

use cqrs_es::persist::SerializedEvent;
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, PgPool, Row};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use crate::error::StoreError;
use crate::event::{load_through, Append, RecordedEvent, Snapshot};
use crate::pg_group_commit::{position_of, run_writer, AppendJob, GroupWriter, MAX_GROUP, WRITERS};
use crate::position::{FeedDistance, Position};
use crate::redact::redact_password;
use crate::signal::FeedSignal;

/// The channel other processes listen on.
const CHANNEL: &str = "stay_events";
/// A transaction left idle this long is ended by the server, so it cannot hold the feed forever.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "60s";

/// The PostgreSQL event store.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    signal: FeedSignal,
    /// The queue of the group-commit writers.
    appends: mpsc::Sender<AppendJob>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (which must exist) and starts the wake-up tasks.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url
            .parse::<PgConnectOptions>()
            .map_err(|e| StoreError::UnsupportedUrl(format!("{}: {e}", redact_password(url))))?
            .options([("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION_TIMEOUT)])
            .disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(Self::from_pool(pool))
    }

    /// Wraps an existing pool and starts the wake-up tasks.
    pub fn from_pool(pool: PgPool) -> Self {
        let signal = FeedSignal::new();
        let committed = Arc::new(Notify::new());
        let mut tasks = vec![
            tokio::spawn(send_notifications(pool.clone(), committed.clone())),
            tokio::spawn(receive_notifications(pool.clone(), signal.clone())),
        ];
        let (appends, queue) = mpsc::channel(4 * MAX_GROUP);
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        let writer = GroupWriter { pool: pool.clone(), signal: signal.clone(), committed };
        for _ in 0..WRITERS {
            tasks.push(tokio::spawn(run_writer(writer.clone(), queue.clone())));
        }
        Self { inner: Arc::new(Inner { pool, signal, appends, tasks }) }
    }

    /// The connection pool (for consumers' own tables in the same database).
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    pub(crate) fn signal(&self) -> &FeedSignal {
        &self.inner.signal
    }

    fn repository(&self) -> PostgresEventRepository {
        PostgresEventRepository::new(self.inner.pool.clone()).with_tables("events", "aggregate_snapshots")
    }

    /// An aggregate's events after `after_sequence`, in order, as stored (not upcast).
    pub async fn load_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        after_sequence: u64,
    ) -> Result<Vec<SerializedEvent>, StoreError> {
        load_through::<_, A>(&self.repository(), aggregate_id, after_sequence).await
    }

    /// Appends one aggregate's events atomically; returns their positions. The append joins the
    /// next group commit (see `pg_group_commit.rs`); a conflicting append fails alone.
    pub async fn append(&self, append: Append) -> Result<Vec<Position>, StoreError> {
        if append.events.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.inner.appends.send(AppendJob { append, reply }).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Reads up to `limit` events after `after`, in feed order, never past a running transaction.
    pub async fn read_feed(&self, after: Position, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata,
                    recorded_at, global_position, tx_id::text AS tx_id_text
               FROM events
              WHERE (tx_id, global_position) > ($1::text::xid8, $2)
                AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
              ORDER BY tx_id, global_position
              LIMIT $3",
        )
        .bind(after.major().to_string())
        .bind(to_i64(after.minor()))
        .bind(limit.min(i64::MAX as usize) as i64)
        .fetch_all(&self.inner.pool)
        .await?;
        rows.iter().map(recorded_event).collect()
    }

    /// One aggregate's whole stream with positions (for audit).
    pub async fn read_stream(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata,
                    recorded_at, global_position, tx_id::text AS tx_id_text
               FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence",
        )
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_all(&self.inner.pool)
        .await?;
        rows.iter().map(recorded_event).collect()
    }

    /// The position of the newest event the feed can deliver (`START` when none).
    pub async fn head(&self) -> Result<Position, StoreError> {
        let row = sqlx::query(
            "SELECT global_position, tx_id::text AS tx_id_text FROM events
              WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot())
              ORDER BY tx_id DESC, global_position DESC LIMIT 1",
        )
        .fetch_optional(&self.inner.pool)
        .await?;
        row.as_ref().map(position_of).transpose().map(|p| p.unwrap_or(Position::START))
    }

    /// How far the feed runs ahead of `after`: identity values have gaps (rolled-back inserts) and
    /// do not follow feed order, so the events are counted, up to `cap`, over the feed-order index
    /// (the same range and fence as `read_feed`); the time is the first one's. No payload is read.
    pub async fn distance_after(&self, after: Position, cap: u64) -> Result<FeedDistance, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM (
                       SELECT 1 FROM events
                        WHERE (tx_id, global_position) > ($1::text::xid8, $2)
                          AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
                        LIMIT $3) AS ahead) AS events,
                    (SELECT recorded_at FROM events
                      WHERE (tx_id, global_position) > ($1::text::xid8, $2)
                        AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
                      ORDER BY tx_id, global_position LIMIT 1) AS first_recorded_at",
        )
        .bind(after.major().to_string())
        .bind(to_i64(after.minor()))
        .bind(to_i64(cap))
        .fetch_one(&self.inner.pool)
        .await?;
        let events: i64 = row.try_get("events")?;
        Ok(FeedDistance { events: events.max(0) as u64, first_recorded_at: row.try_get("first_recorded_at")? })
    }

    /// How many committed-or-running events the fence holds back right now (a metric: a steadily
    /// high value means a long transaction is holding the feed).
    pub async fn held_back(&self) -> Result<u64, StoreError> {
        let held: i64 =
            sqlx::query_scalar("SELECT count(*) FROM events WHERE tx_id >= pg_snapshot_xmin(pg_current_snapshot())")
                .fetch_one(&self.inner.pool)
                .await?;
        Ok(held.max(0) as u64)
    }

    /// The newest snapshot of an aggregate: its last sequence and state.
    pub async fn load_snapshot(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<(u64, Value)>, StoreError> {
        let row = sqlx::query(
            "SELECT last_sequence, payload FROM aggregate_snapshots WHERE aggregate_type = $1 AND aggregate_id = $2",
        )
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_optional(&self.inner.pool)
        .await?;
        row.map(|row| {
            let sequence: i64 = row.try_get("last_sequence")?;
            let payload: Value = row.try_get("payload")?;
            Ok((sequence.max(0) as u64, payload))
        })
        .transpose()
    }

    /// Records a snapshot, kept only if newer than the one stored.
    pub async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO aggregate_snapshots (aggregate_type, aggregate_id, last_sequence, payload, taken_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
               SET last_sequence = excluded.last_sequence, payload = excluded.payload, taken_at = excluded.taken_at
             WHERE excluded.last_sequence > aggregate_snapshots.last_sequence",
        )
        .bind(&snapshot.aggregate_type)
        .bind(&snapshot.aggregate_id)
        .bind(to_i64(snapshot.last_sequence))
        .bind(&snapshot.state)
        .bind(snapshot.taken_at)
        .execute(&self.inner.pool)
        .await?;
        Ok(())
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn recorded_event(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    let sequence: i64 = row.try_get("sequence")?;
    Ok(RecordedEvent {
        position: position_of(row)?,
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: sequence.max(0) as u64,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        payload: row.try_get("payload")?,
        metadata: row.try_get("metadata")?,
        recorded_at: row.try_get("recorded_at")?,
    })
}

/// Sends one NOTIFY per burst of local commits, after they committed.
async fn send_notifications(pool: PgPool, committed: Arc<Notify>) {
    loop {
        committed.notified().await;
        if let Err(err) = sqlx::query("SELECT pg_notify($1, '')").bind(CHANNEL).execute(&pool).await {
            tracing::debug!(error = %err, "could not notify other processes; they fall back to polling");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Wakes local feed readers when another process has committed.
async fn receive_notifications(pool: PgPool, signal: FeedSignal) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(sqlx::Error::PoolClosed) => return,
            Err(err) => {
                tracing::debug!(error = %err, "cannot listen for feed notifications; polling meanwhile");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(err) = listener.listen(CHANNEL).await {
            tracing::debug!(error = %err, "cannot listen for feed notifications; polling meanwhile");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        loop {
            match listener.recv().await {
                Ok(_) => signal.poke(),
                Err(sqlx::Error::PoolClosed) => return,
                Err(err) => {
                    tracing::debug!(error = %err, "feed notifications interrupted; reconnecting");
                    signal.poke();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            }
        }
    }
}
