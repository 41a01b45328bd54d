//! `EventStore`: one contract over the SQLite, PostgreSQL and EventStoreDB backends.
//!
//! Callers append, load aggregates, read and wait on the global feed without knowing which
//! backend holds the log. Upcasters apply here, on every read path, so the feed and aggregate
//! loads always see current event shapes.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use cqrs_es::Aggregate;
use serde_json::Value;
use tokio::time::Instant;

use crate::checkpoint::CHECKPOINT_MIGRATIONS;
use crate::database::SqlDatabase;
use crate::error::StoreError;
use crate::event::{upcast_serialized, Append, RecordedEvent, Snapshot};
use crate::migrate::STORE_MIGRATIONS;
use crate::position::{FeedDistance, Position};
use crate::postgres::PostgresStore;
use crate::redact::redact_password;
use crate::signal::FeedSignal;
use crate::sqlite::{sqlite_path, SqliteStore};

#[cfg(feature = "eventstoredb")]
use crate::eventstoredb::EventStoreDbStore;

/// How soon a woken reader looks again while committed events wait behind the feed's fence.
const HELD_BACK_RECHECK: Duration = Duration::from_millis(25);

/// Where the event log lives, parsed from `--store`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// A SQLite file: `sqlite://PATH`, `sqlite:PATH` or a plain path.
    Sqlite(PathBuf),
    /// A PostgreSQL database: `postgres://…` or `postgresql://…`.
    Postgres(String),
    /// An EventStoreDB server: `esdb://…` or `esdb+discover://…`.
    EventStoreDb(String),
}

impl FromStr for StoreUrl {
    type Err = StoreError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let url = url.trim();
        if url.is_empty() {
            return Err(StoreError::UnsupportedUrl(String::new()));
        }
        let scheme = url.split_once("://").map(|(scheme, _)| scheme.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("postgres" | "postgresql") => Ok(StoreUrl::Postgres(url.to_owned())),
            Some("esdb" | "esdb+discover") => Ok(StoreUrl::EventStoreDb(url.to_owned())),
            Some("sqlite") | None => Ok(StoreUrl::Sqlite(sqlite_path(url))),
            Some(_) => Err(StoreError::UnsupportedUrl(redact_password(url))),
        }
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            StoreUrl::Postgres(url) | StoreUrl::EventStoreDb(url) => f.write_str(&redact_password(url)),
        }
    }
}

/// Tuning that is the same for every backend.
#[derive(Clone)]
pub struct StoreOptions {
    /// Applied in order to every event read.
    pub upcasters: Arc<Vec<Box<dyn EventUpcaster>>>,
    /// How often a waiting feed reader looks again when no wake-up arrives.
    pub poll_interval: Duration,
    /// PostgreSQL connections in the pool.
    pub max_connections: u32,
    /// Every aggregate type the system writes, each the aggregate's own `Aggregate::TYPE`, named
    /// where the store is opened (the store knows no aggregates). EventStoreDB's feed is their
    /// streams (unless its URL's `stayAggregateTypes` says otherwise); the SQL stores need none.
    pub aggregate_types: Vec<String>,
}

impl fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreOptions")
            .field("upcasters", &self.upcasters.len())
            .field("poll_interval", &self.poll_interval)
            .field("max_connections", &self.max_connections)
            .field("aggregate_types", &self.aggregate_types)
            .finish()
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            upcasters: Arc::new(Vec::new()),
            poll_interval: Duration::from_millis(250),
            max_connections: 32,
            aggregate_types: Vec::new(),
        }
    }
}

/// The backend behind an `EventStore`.
#[derive(Clone, Debug)]
pub enum Backend {
    /// A SQLite file.
    Sqlite(SqliteStore),
    /// A PostgreSQL database.
    Postgres(PostgresStore),
    /// An EventStoreDB server.
    #[cfg(feature = "eventstoredb")]
    EventStoreDb(EventStoreDbStore),
}

/// The event log: append, load, read and wait on the global feed. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EventStore {
    backend: Backend,
    options: StoreOptions,
}

macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match &$self.backend {
            Backend::Sqlite($store) => $call,
            Backend::Postgres($store) => $call,
            #[cfg(feature = "eventstoredb")]
            Backend::EventStoreDb($store) => $call,
        }
    };
}

impl EventStore {
    /// Opens the store at `url` (does not migrate: see `migrate`).
    pub async fn open(url: &StoreUrl, options: StoreOptions) -> Result<Self, StoreError> {
        let backend = match url {
            StoreUrl::Sqlite(path) => Backend::Sqlite(SqliteStore::open(path).await?),
            StoreUrl::Postgres(url) => Backend::Postgres(PostgresStore::connect(url, options.max_connections).await?),
            #[cfg(feature = "eventstoredb")]
            StoreUrl::EventStoreDb(url) => {
                Backend::EventStoreDb(EventStoreDbStore::connect(url, &options.aggregate_types).await?)
            }
            #[cfg(not(feature = "eventstoredb"))]
            StoreUrl::EventStoreDb(url) => {
                return Err(StoreError::UnsupportedUrl(format!(
                    "{} (this binary was built without the `eventstoredb` feature)",
                    crate::redact::redact_password(url)
                )))
            }
        };
        Ok(Self { backend, options })
    }

    /// Wraps an opened backend.
    pub fn from_backend(backend: Backend, options: StoreOptions) -> Self {
        Self { backend, options }
    }

    /// The backend, for what only one backend can do.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// A short name of the backend: `sqlite`, `postgres` or `eventstoredb`.
    pub fn kind(&self) -> &'static str {
        match &self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
            #[cfg(feature = "eventstoredb")]
            Backend::EventStoreDb(_) => "eventstoredb",
        }
    }

    /// The SQL database beside the log (SQLite file or PostgreSQL database), where consumers keep
    /// their tables and checkpoints; `None` for EventStoreDB, whose users name a separate one.
    pub fn sql_database(&self) -> Option<SqlDatabase> {
        match &self.backend {
            Backend::Sqlite(s) => Some(SqlDatabase::Sqlite(crate::database::SqliteDatabase::of_log(s))),
            Backend::Postgres(s) => Some(SqlDatabase::Postgres(s.pool().clone())),
            #[cfg(feature = "eventstoredb")]
            Backend::EventStoreDb(_) => None,
        }
    }

    /// Creates or upgrades the event log's schema (and the checkpoint table beside it); returns
    /// what it applied. Idempotent. EventStoreDB needs no schema.
    pub async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        let Some(db) = self.sql_database() else { return Ok(Vec::new()) };
        let mut applied = Vec::new();
        for set in [&STORE_MIGRATIONS, &CHECKPOINT_MIGRATIONS] {
            applied.extend(db.migrate(set).await?);
        }
        Ok(applied)
    }

    /// Events the PostgreSQL feed holds back right now, behind a transaction still open below
    /// them (a metric: steadily high means a long transaction is holding readers back); `None` on
    /// the other backends, whose feeds never hold committed events back.
    pub async fn held_back(&self) -> Result<Option<u64>, StoreError> {
        match &self.backend {
            Backend::Postgres(s) => s.held_back().await.map(Some),
            _ => Ok(None),
        }
    }

    /// Migrations of the event log not yet applied (empty when ready).
    pub async fn pending_migrations(&self) -> Result<Vec<&'static str>, StoreError> {
        let Some(db) = self.sql_database() else { return Ok(Vec::new()) };
        let mut pending = Vec::new();
        for set in [&STORE_MIGRATIONS, &CHECKPOINT_MIGRATIONS] {
            pending.extend(db.pending_migrations(set).await?);
        }
        Ok(pending)
    }

    /// An aggregate's events after `after_sequence`, upcast, in order.
    pub async fn load_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        after_sequence: u64,
    ) -> Result<Vec<SerializedEvent>, StoreError> {
        let events = dispatch!(self, s => s.load_events::<A>(aggregate_id, after_sequence).await?);
        Ok(events.into_iter().map(|e| upcast_serialized(e, &self.options.upcasters)).collect())
    }

    /// Appends one aggregate's events atomically, if its stream is still at `expected_version`;
    /// otherwise `StoreError::Conflict`. Returns the events' feed positions.
    pub async fn append(&self, append: Append) -> Result<Vec<Position>, StoreError> {
        if append.events.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self, s => s.append(append).await)
    }

    /// Up to `limit` events after `after` in feed order, upcast. Every committed event appears
    /// exactly once, and each aggregate's events in sequence order.
    pub async fn read_feed(&self, after: Position, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let events = dispatch!(self, s => s.read_feed(after, limit).await?);
        Ok(self.upcast_all(events))
    }

    /// One aggregate's whole stream with positions and times, upcast (for audit and replay).
    pub async fn read_stream(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let events = dispatch!(self, s => s.read_stream(aggregate_type, aggregate_id).await?);
        Ok(self.upcast_all(events))
    }

    /// The position of the newest event the feed can deliver.
    pub async fn head(&self) -> Result<Position, StoreError> {
        dispatch!(self, s => s.head().await)
    }

    /// How far the feed runs ahead of `after`: how many events (up to `cap`) and when the first of
    /// them was recorded, from positions and one row's time, never decoding an event (for lag).
    pub async fn distance_after(&self, after: Position, cap: u64) -> Result<FeedDistance, StoreError> {
        dispatch!(self, s => s.distance_after(after, cap).await)
    }

    /// Waits until the feed has an event after `after`, or `timeout` passes; true when it has.
    /// Woken by commits (in this process directly, across processes by notification), with
    /// polling as the fallback; never a busy loop.
    pub async fn wait_for_events(&self, after: Position, timeout: Duration) -> Result<bool, StoreError> {
        let deadline = Instant::now() + timeout;
        let mut wake = self.signal().subscribe();
        // Woken but nothing readable yet: events have committed behind PostgreSQL's fence (an
        // older transaction, possibly not Stay's, is still running). Its end sends no
        // notification, so look again soon rather than at the next poll.
        let mut held_back = false;
        loop {
            if !dispatch!(self, s => s.read_feed(after, 1).await?).is_empty() {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let interval = self.options.poll_interval.max(Duration::from_millis(10));
            let interval = if held_back { interval.min(HELD_BACK_RECHECK) } else { interval };
            let nap = interval.min(deadline - now);
            tokio::select! {
                changed = wake.changed() => {
                    held_back = true;
                    if changed.is_err() {
                        tokio::time::sleep(nap).await;
                    }
                }
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    /// The newest snapshot of an aggregate: its last sequence and serialised state.
    pub async fn load_snapshot(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<(u64, Value)>, StoreError> {
        dispatch!(self, s => s.load_snapshot(aggregate_type, aggregate_id).await)
    }

    /// Records a snapshot; an older one than stored is ignored.
    pub async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        dispatch!(self, s => s.save_snapshot(snapshot).await)
    }

    fn signal(&self) -> &FeedSignal {
        dispatch!(self, s => s.signal())
    }

    fn upcast_all(&self, events: Vec<RecordedEvent>) -> Vec<RecordedEvent> {
        events.into_iter().map(|e| e.upcast(&self.options.upcasters)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_backend() {
        assert_eq!("stay-data/stay.db".parse::<StoreUrl>().unwrap(), StoreUrl::Sqlite("stay-data/stay.db".into()));
        assert_eq!("sqlite:///tmp/x.db".parse::<StoreUrl>().unwrap(), StoreUrl::Sqlite("/tmp/x.db".into()));
        assert_eq!("sqlite:x.db".parse::<StoreUrl>().unwrap(), StoreUrl::Sqlite("x.db".into()));
        assert!(matches!("postgres://u@h/db".parse::<StoreUrl>().unwrap(), StoreUrl::Postgres(_)));
        assert!(matches!("postgresql://u@h/db".parse::<StoreUrl>().unwrap(), StoreUrl::Postgres(_)));
        assert!(matches!("esdb://h:2113?tls=false".parse::<StoreUrl>().unwrap(), StoreUrl::EventStoreDb(_)));
        assert!(matches!("mysql://h/db".parse::<StoreUrl>(), Err(StoreError::UnsupportedUrl(_))));
        assert!(matches!("  ".parse::<StoreUrl>(), Err(StoreError::UnsupportedUrl(_))));
    }

    #[test]
    fn passwords_stay_out_of_logs() {
        let url: StoreUrl = "postgres://stay:secret@db:5432/stay".parse().unwrap();
        assert_eq!(url.to_string(), "postgres://stay:***@db:5432/stay");
    }

    #[cfg(not(feature = "eventstoredb"))]
    #[tokio::test]
    async fn an_eventstoredb_url_without_the_feature_keeps_its_password_out_of_the_error() {
        let url: StoreUrl = "esdb://admin:changeit@h:2113?tls=false".parse().unwrap();
        let err = EventStore::open(&url, StoreOptions::default()).await.expect_err("not compiled in");
        let message = err.to_string();
        assert!(message.contains("eventstoredb") && !message.contains("changeit"), "{message}");
    }
}
