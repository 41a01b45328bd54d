//! The SQLite backend: a single file, one process, zero set-up.
//!
//! Appends go through one writer task that commits the appends of concurrent commands together
//! (group commit): one `fsync` covers many commands, and a conflicting command fails alone while
//! the rest of its group commits. The insert trigger numbers events from a
//! counter row inside the writing transaction, so the global position is gap-free and follows
//! commit order; the feed can simply read `global_position > after`.
//!
//! The same writer runs the single-statement writes of the consumers' tables in this file (the
//! saga's schedule and ledger, idempotency records, leases): they share the appends' commits
//! instead of each waiting for SQLite's write lock and paying an `fsync` of its own. Each runs in
//! a savepoint, so a statement that fails undoes only itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::SecondsFormat;
use cqrs_es::persist::SerializedEvent;
use cqrs_es::Aggregate;
use serde_json::Value;
use sqlite_es::SqliteEventRepository;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Executor, Row, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use crate::error::StoreError;
use crate::event::{load_through, parse_time, Append, RecordedEvent, Snapshot};
use crate::position::{FeedDistance, Position};
use crate::signal::FeedSignal;
use crate::sql::{self, Arg, Row as SqlRow};
use crate::sqlite_tail::Tail;

/// How many queued appends one transaction takes at most.
const MAX_GROUP: usize = 512;
/// SQLite's limit on bound parameters per statement is 32,766; stay well below it.
const MAX_EVENTS_PER_INSERT: usize = 500;

/// The SQLite event store.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    read_pool: SqlitePool,
    writer: mpsc::Sender<WriteJob>,
    signal: FeedSignal,
    /// The newest events this process committed, for feed reads that start among them.
    tail: Arc<Tail>,
}

/// Work for the writer task, answered once its group has committed (or failed).
#[derive(Debug)]
struct WriteJob {
    work: Work,
    reply: oneshot::Sender<Result<Written, StoreError>>,
}

#[derive(Debug)]
enum Work {
    Append(Append),
    Snapshot(Snapshot),
    /// One statement on a consumer's table (SQLite placeholders), and whether it returns rows.
    Statement {
        sql: String,
        args: Vec<Arg>,
    },
}

/// What a job wrote.
#[derive(Debug)]
enum Written {
    /// An append's positions (none for a snapshot).
    Positions(Vec<Position>),
    /// A statement's rows touched, and the rows it returned.
    Statement(u64, Vec<SqlRow>),
}

pub(crate) fn connect_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // Durable commits: the WAL is synced at every commit.
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
        .disable_statement_logging()
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and starts its writer.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(StoreError::database)?;
        }
        let options = connect_options(&path);
        let writer_conn = options.connect().await?;
        let read_pool = SqlitePoolOptions::new().max_connections(8).min_connections(1).connect_with(options).await?;
        let signal = FeedSignal::new();
        let (writer, jobs) = mpsc::channel(4 * MAX_GROUP);
        let tail = Arc::new(Tail::default());
        tokio::spawn(run_writer(writer_conn, jobs, signal.clone(), tail.clone()));
        Ok(Self { inner: Arc::new(Inner { path, read_pool, writer, signal, tail }) })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The pool for reads (and for consumers' own tables in the same file).
    pub fn pool(&self) -> &SqlitePool {
        &self.inner.read_pool
    }

    pub(crate) fn signal(&self) -> &FeedSignal {
        &self.inner.signal
    }

    /// The cqrs-es repository over our tables, used to load aggregates.
    fn repository(&self) -> SqliteEventRepository {
        SqliteEventRepository::new(self.inner.read_pool.clone()).with_tables("events", "aggregate_snapshots")
    }

    /// An aggregate's events after `after_sequence`, in order, as stored (not upcast).
    pub async fn load_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        after_sequence: u64,
    ) -> Result<Vec<SerializedEvent>, StoreError> {
        load_through::<_, A>(&self.repository(), aggregate_id, after_sequence).await
    }

    /// Appends one aggregate's events atomically; returns their positions.
    pub async fn append(&self, append: Append) -> Result<Vec<Position>, StoreError> {
        match self.write(Work::Append(append)).await? {
            Written::Positions(positions) => Ok(positions),
            Written::Statement(..) => {
                Err(StoreError::Database("the writer answered an append with a statement".into()))
            }
        }
    }

    /// Runs one writing statement (SQLite placeholders) in the writer's next commit; the rows it
    /// touched and the rows it returned (`RETURNING`). It fails alone: the rest of its group
    /// commits.
    pub(crate) async fn write_statement(&self, sql: String, args: Vec<Arg>) -> Result<(u64, Vec<SqlRow>), StoreError> {
        match self.write(Work::Statement { sql, args }).await? {
            Written::Statement(touched, rows) => Ok((touched, rows)),
            Written::Positions(_) => Err(StoreError::Database("the writer answered a statement with positions".into())),
        }
    }

    async fn write(&self, work: Work) -> Result<Written, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.inner.writer.send(WriteJob { work, reply }).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Reads up to `limit` events after `after`, in feed order: from the newest events this
    /// process committed when they cover `after` (`sqlite_tail.rs`), else from the database.
    pub async fn read_feed(&self, after: Position, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        if let Some(events) = self.inner.tail.read(after, limit) {
            return Ok(events);
        }
        self.read_feed_from_database(after, limit).await
    }

    /// Reads up to `limit` events after `after` from the database.
    pub async fn read_feed_from_database(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata,
                    recorded_at, global_position
               FROM events WHERE global_position > ? ORDER BY global_position LIMIT ?",
        )
        .bind(to_i64(after.major()))
        .bind(limit.min(i64::MAX as usize) as i64)
        .fetch_all(&self.inner.read_pool)
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
                    recorded_at, global_position
               FROM events WHERE aggregate_type = ? AND aggregate_id = ? ORDER BY sequence",
        )
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_all(&self.inner.read_pool)
        .await?;
        rows.iter().map(recorded_event).collect()
    }

    /// The position of the newest committed event (`START` when empty).
    pub async fn head(&self) -> Result<Position, StoreError> {
        let last: i64 = sqlx::query_scalar("SELECT last_position FROM event_counter WHERE id = 1")
            .fetch_one(&self.inner.read_pool)
            .await?;
        Ok(Position::new(last.max(0) as u64, 0))
    }

    /// How far the feed runs ahead of `after`: positions are gap-free, so the count is the head's
    /// position less `after`'s (capped at `cap`); the time is the next event's, read by the
    /// position index. Nothing else of any event is read.
    pub async fn distance_after(&self, after: Position, cap: u64) -> Result<FeedDistance, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT last_position FROM event_counter WHERE id = 1) AS head,
                    (SELECT recorded_at FROM events WHERE global_position > ? ORDER BY global_position LIMIT 1)
                      AS first_recorded_at",
        )
        .bind(to_i64(after.major()))
        .fetch_one(&self.inner.read_pool)
        .await?;
        let head: i64 = row.try_get("head")?;
        let first: Option<String> = row.try_get("first_recorded_at")?;
        Ok(FeedDistance {
            events: (head.max(0) as u64).saturating_sub(after.major()).min(cap),
            first_recorded_at: first.as_deref().map(parse_time).transpose()?,
        })
    }

    /// The newest snapshot of an aggregate: its last sequence and state.
    pub async fn load_snapshot(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<(u64, Value)>, StoreError> {
        let row = sqlx::query(
            "SELECT last_sequence, payload FROM aggregate_snapshots WHERE aggregate_type = ? AND aggregate_id = ?",
        )
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_optional(&self.inner.read_pool)
        .await?;
        row.map(|row| {
            let sequence: i64 = row.try_get("last_sequence")?;
            let payload: Value = row.try_get("payload")?;
            Ok((sequence.max(0) as u64, payload))
        })
        .transpose()
    }

    /// Records a snapshot (kept only if newer than the one stored), through the writer task.
    pub async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.write(Work::Snapshot(snapshot)).await.map(drop)
    }
}

/// The file path in a SQLite store URL.
pub fn sqlite_path(url: &str) -> PathBuf {
    let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
    PathBuf::from(path)
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn recorded_event(row: &SqliteRow) -> Result<RecordedEvent, StoreError> {
    let sequence: i64 = row.try_get("sequence")?;
    let position: i64 = row.try_get("global_position")?;
    let recorded_at: String = row.try_get("recorded_at")?;
    Ok(RecordedEvent {
        position: Position::new(position.max(0) as u64, 0),
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: sequence.max(0) as u64,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        payload: row.try_get("payload")?,
        metadata: row.try_get("metadata")?,
        recorded_at: parse_time(&recorded_at)?,
    })
}

/// The writer task: takes queued appends in groups and commits each group once.
async fn run_writer(
    mut conn: SqliteConnection,
    mut jobs: mpsc::Receiver<WriteJob>,
    signal: FeedSignal,
    tail: Arc<Tail>,
) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = jobs.recv().await {
        group.push(first);
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        if let Some(head) = write_group(&mut conn, &mut group, &tail).await {
            signal.advance(head);
        }
        group.clear();
    }
    let _ = conn.close().await;
}

/// Writes one group in one transaction, keeps its events in the tail and answers every append in
/// it. Returns the new head.
async fn write_group(conn: &mut SqliteConnection, group: &mut Vec<WriteJob>, tail: &Tail) -> Option<Position> {
    let mut outcomes: Vec<Result<Written, StoreError>> = Vec::with_capacity(group.len());
    let committed = write_group_transaction(conn, group, &mut outcomes).await;

    if let Err(err) = committed {
        tracing::error!(error = %err, "event log commit failed; the group is rolled back");
        let _ = conn.execute("ROLLBACK").await;
        let message = err.to_string();
        for job in group.drain(..) {
            let _ = job.reply.send(Err(StoreError::Database(message.clone().into())));
        }
        return None;
    }

    let mut head = None;
    for (job, outcome) in group.drain(..).zip(outcomes) {
        if let Ok(Written::Positions(positions)) = &outcome {
            head = positions.last().copied().max(head);
            if let Work::Append(append) = &job.work {
                if let Err(err) = tail.committed(append, positions) {
                    // Only the in-memory copy failed (an event that cannot be re-read as JSON):
                    // readers after it go to the database, which has it.
                    tracing::warn!(error = %err, "an event was committed but not kept in the feed's tail");
                }
            }
        }
        let _ = job.reply.send(outcome);
    }
    head
}

async fn write_group_transaction(
    conn: &mut SqliteConnection,
    group: &[WriteJob],
    outcomes: &mut Vec<Result<Written, StoreError>>,
) -> Result<(), StoreError> {
    conn.execute("BEGIN IMMEDIATE").await?;
    for job in group {
        match &job.work {
            Work::Append(append) => outcomes.push(append_in_group(conn, append).await?.map(Written::Positions)),
            Work::Snapshot(snapshot) => {
                outcomes.push(Ok(Written::Positions(Vec::new())));
                save_snapshot_row(conn, snapshot).await?;
            }
            Work::Statement { sql, args } => outcomes.push(statement_in_group(conn, sql, args).await?),
        }
    }
    conn.execute("COMMIT").await?;
    Ok(())
}

/// Writes one append. The outer `Err` aborts the whole group (the connection failed); the inner
/// result is this append's own answer (a conflict, or its positions). The version check is exact
/// because this task is the only writer; a failed statement in SQLite undoes only itself, so a
/// conflicting append leaves the rest of the group intact. An append split over several
/// statements runs in a savepoint so it lands whole or not at all.
async fn append_in_group(
    conn: &mut SqliteConnection,
    append: &Append,
) -> Result<Result<Vec<Position>, StoreError>, StoreError> {
    let current: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MAX(sequence), 0) FROM events WHERE aggregate_type = ? AND aggregate_id = ?",
    )
    .bind(&append.aggregate_type)
    .bind(&append.aggregate_id)
    .fetch_one(&mut *conn)
    .await?;
    if current.max(0) as u64 != append.expected_version {
        return Ok(Err(StoreError::Conflict));
    }
    let split = append.events.len() > MAX_EVENTS_PER_INSERT;
    if split {
        conn.execute("SAVEPOINT append").await?;
    }
    match insert_events(conn, append).await {
        Ok(positions) => {
            if split {
                conn.execute("RELEASE append").await?;
            }
            Ok(Ok(positions))
        }
        Err(err @ (StoreError::Conflict | StoreError::Decode(_))) => {
            if split {
                conn.execute("ROLLBACK TO append").await?;
                conn.execute("RELEASE append").await?;
            }
            Ok(Err(err))
        }
        Err(err) => Err(err),
    }
}

/// Runs one statement in a savepoint. The outer `Err` aborts the whole group (the transaction is
/// gone); the inner result is the statement's own answer (a constraint it broke is undone alone).
async fn statement_in_group(
    conn: &mut SqliteConnection,
    sql: &str,
    args: &[Arg],
) -> Result<Result<Written, StoreError>, StoreError> {
    conn.execute("SAVEPOINT statement").await?;
    match sql::run_sqlite(&mut *conn, sql, args).await {
        Ok((touched, rows)) => {
            conn.execute("RELEASE statement").await?;
            Ok(Ok(Written::Statement(touched, rows)))
        }
        Err(err) => {
            // Should SQLite have rolled the whole transaction back (a full disk, an I/O error),
            // the savepoint is gone too and this fails: the group then fails as a whole.
            conn.execute("ROLLBACK TO statement").await?;
            conn.execute("RELEASE statement").await?;
            Ok(Err(err))
        }
    }
}

async fn insert_events(conn: &mut SqliteConnection, append: &Append) -> Result<Vec<Position>, StoreError> {
    let metadata = serde_json::to_string(&append.metadata.to_map())?;
    let recorded_at = append.metadata.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true);
    let mut sequence = append.expected_version;
    for chunk in append.events.chunks(MAX_EVENTS_PER_INSERT) {
        let mut sql = String::from(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at) VALUES ",
        );
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 { "(?, ?, ?, ?, ?, ?, ?, ?)" } else { ", (?, ?, ?, ?, ?, ?, ?, ?)" });
        }
        let mut query = sqlx::query(&sql);
        for event in chunk {
            sequence += 1;
            query = query
                .bind(&append.aggregate_type)
                .bind(&append.aggregate_id)
                .bind(to_i64(sequence))
                .bind(&event.event_type)
                .bind(&event.event_version)
                .bind(serde_json::to_string(&event.payload)?)
                .bind(&metadata)
                .bind(&recorded_at);
        }
        query.execute(&mut *conn).await?;
    }
    let last: i64 =
        sqlx::query_scalar("SELECT last_position FROM event_counter WHERE id = 1").fetch_one(&mut *conn).await?;
    let last = last.max(0) as u64;
    let count = append.events.len() as u64;
    Ok((last + 1 - count..=last).map(|p| Position::new(p, 0)).collect())
}

async fn save_snapshot_row(conn: &mut SqliteConnection, snapshot: &Snapshot) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO aggregate_snapshots (aggregate_type, aggregate_id, last_sequence, payload, taken_at)
         VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
           SET last_sequence = excluded.last_sequence, payload = excluded.payload, taken_at = excluded.taken_at
         WHERE excluded.last_sequence > aggregate_snapshots.last_sequence",
    )
    .bind(&snapshot.aggregate_type)
    .bind(&snapshot.aggregate_id)
    .bind(to_i64(snapshot.last_sequence))
    .bind(serde_json::to_string(&snapshot.state)?)
    .bind(snapshot.taken_at.to_rfc3339_opts(SecondsFormat::Micros, true))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::event::{Append, CommandContext, NewEvent, RecordedEvent};
    use crate::position::Position;
    use crate::store::{Backend, EventStore, StoreOptions, StoreUrl};

    async fn store(path: &std::path::Path) -> EventStore {
        let store =
            EventStore::open(&StoreUrl::Sqlite(path.to_path_buf()), StoreOptions::default()).await.expect("open");
        store.migrate().await.expect("migrate");
        store
    }

    fn sqlite(store: &EventStore) -> &super::SqliteStore {
        match store.backend() {
            Backend::Sqlite(sqlite) => sqlite,
            #[allow(unreachable_patterns)] // only SQLite without the other backends' features
            _ => panic!("a SQLite store"),
        }
    }

    async fn note(store: &EventStore, id: &str, expected_version: u64, events: usize) {
        let append = Append {
            aggregate_type: "Probe".into(),
            aggregate_id: id.into(),
            expected_version,
            events: (0..events)
                .map(|i| NewEvent {
                    event_type: "Noted".into(),
                    event_version: "1".into(),
                    payload: serde_json::json!({"n": i, "price": 12.5, "text": "ä \"quoted\"", "list": [1, null]}),
                })
                .collect(),
            metadata: CommandContext::new("sqlite-test").metadata(chrono::Utc::now()),
        };
        store.append(append).await.expect("append");
    }

    /// Reads the feed after `after` as a consumer does: batch after batch until one is empty.
    async fn follow(store: &EventStore, mut after: Position) -> Vec<RecordedEvent> {
        let mut seen = Vec::new();
        loop {
            let batch = store.read_feed(after, 1).await.expect("read");
            let Some(last) = batch.last() else { return seen };
            after = last.position;
            seen.extend(batch);
        }
    }

    fn positions(events: &[RecordedEvent]) -> Vec<u64> {
        events.iter().map(|e| e.position.major()).collect()
    }

    #[tokio::test]
    async fn the_feed_read_from_memory_is_the_feed_read_from_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store(&dir.path().join("events.db")).await;
        note(&store, "a", 0, 1).await;
        note(&store, "b", 0, 3).await;
        note(&store, "a", 1, 2).await;

        let from_memory = sqlite(&store).inner.tail.read(Position::new(1, 0), 100).expect("kept in memory");
        let from_file = sqlite(&store).read_feed_from_database(Position::new(1, 0), 100).await.expect("read");

        assert_eq!(positions(&from_file), vec![2, 3, 4, 5, 6]);
        assert_eq!(from_memory, from_file, "every field, the payload's JSON and the time to the microsecond");
    }

    #[tokio::test]
    async fn events_another_process_wrote_to_the_file_are_read_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("events.db");
        let ours = store(&path).await;
        let theirs = store(&path).await;
        note(&ours, "a", 0, 1).await;
        note(&ours, "a", 1, 1).await;
        note(&theirs, "b", 0, 2).await;

        let before_our_next_commit = follow(&ours, Position::new(1, 0)).await;
        note(&ours, "a", 2, 1).await;
        let after_it = follow(&ours, Position::new(4, 0)).await;

        assert_eq!(positions(&before_our_next_commit), vec![2, 3, 4], "theirs come from the file");
        assert_eq!(positions(&after_it), vec![5], "ours after theirs");
    }
}
