//! Stay's event store: where every event is written once and read in order.
//!
//! - [`EventStore`] — one contract over three backends: a SQLite file (the default), PostgreSQL
//!   and EventStoreDB (cargo feature `eventstoredb`). Append with an expected version, load an
//!   aggregate's stream, read the global feed after an opaque [`Position`] and wait for more.
//! - [`Executor`] — runs a command on an aggregate: load (cache, snapshots), handle, append,
//!   retry conflicts, and answer the committed events with their positions.
//! - [`SqlDatabase`] — the SQL database beside the log, where consumers write their rows and
//!   their checkpoint (moved by compare-and-set, [`checkpoint`]) in one transaction.
//! - [`migrate`] — our own embedded migrations, one list per owning component.

pub mod backoff;
pub mod checkpoint;
pub mod checkpoint_moves;
pub mod clock;
pub mod database;
pub mod error;
pub mod event;
pub mod executor;
pub mod executors;
pub mod import;
pub mod migrate;
mod pg_group_commit;
pub mod position;
pub mod postgres;
mod redact;
mod signal;
pub mod sql;
pub mod sqlite;
mod sqlite_tail;
pub mod store;
pub mod watch;

#[cfg(feature = "eventstoredb")]
pub mod eventstoredb;

pub use backoff::Backoff;
pub use checkpoint::CHECKPOINT_MIGRATIONS;
pub use clock::SystemClock;
pub use database::{SqlDatabase, SqlTransaction, SqliteDatabase};
pub use error::StoreError;
pub use event::{Append, CommandContext, EventMetadata, NewEvent, RecordedEvent, Snapshot};
pub use executor::{Committed, CommittedEvent, ExecuteError, Executor, ExecutorConfig, ExecutorStats};
pub use executors::Executors;
pub use import::{EventKey, ImportError, ImportProgress, ImportedEvent};
pub use migrate::{Migration, MigrationSet, STORE_MIGRATIONS};
pub use position::{FeedDistance, Position};
pub use sql::{Arg, Cell, Row};
pub use store::{Backend, EventStore, StoreOptions, StoreUrl};
pub use watch::{AggregateWatch, Subscription};
