//! Importing another store's log: events written with their own sequence, metadata and time.
//!
//! `stay import` moves a whole log (exported by `stay export`) into an empty store, possibly of
//! another backend. An ordinary append cannot do that: it numbers events after an expected
//! version and stamps them with the time of the append. An import append takes each event as the
//! source recorded it (aggregate, sequence, type, version, payload, metadata and recorded time)
//! and writes a batch of them in file order, in one transaction:
//!
//! - SQLite: the insert trigger numbers the rows from the counter in insert order, so the batch
//!   gets the next gap-free positions in file order, exactly as appends do.
//! - PostgreSQL: one `INSERT … SELECT … ORDER BY` ordinal, so identity values follow file order
//!   inside the batch's transaction, and batches commit one after another, so their `tx_id`s
//!   rise too: the feed's `(tx_id, global_position)` order is the file's order, and the feed's
//!   fence sees each batch as any other committed transaction.
//! - EventStoreDB (`eventstoredb/import.rs`): no transaction spans streams, so each aggregate's
//!   run of events is one append expecting the revision before it, appends follow one another in
//!   file order (so `$all` is in file order), and the time travels in the envelope the feed reads
//!   it from. Progress is a stream of records written before and after each batch; that module
//!   says what is atomic there and how a kill at any point resumes.
//!
//! On the SQL backends progress lives in the store's `event_imports` row (one per store): the
//! file's digest, its event count and how many events are in. Each batch moves it by
//! compare-and-set in the batch's own transaction, so after an interruption (even `kill -9`) the
//! row says exactly which events committed, a second import of the same file resumes after them,
//! and two imports at once cannot interleave. Every backend refuses the same way: a store holding
//! events no run of this import wrote, or another file's import. Snapshots are not imported: they
//! are caches that loads rebuild.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sqlx::{Connection, Row};

use crate::error::StoreError;
use crate::position::Position;
use crate::store::{Backend, EventStore};

/// SQLite's limit on bound parameters per statement is 32,766; stay well below it.
const SQLITE_EVENTS_PER_INSERT: usize = 500;

/// One event as the source store recorded it.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportedEvent {
    /// The aggregate's type.
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// Its 1-based sequence in the aggregate's stream, kept as it was.
    pub sequence: u64,
    /// Stable type name.
    pub event_type: String,
    /// Schema version.
    pub event_version: String,
    /// The event as JSON.
    pub payload: Value,
    /// Command id, correlation, causation, actor, time: kept as they were.
    pub metadata: Value,
    /// When the source recorded it (kept to the microsecond).
    pub recorded_at: DateTime<Utc>,
}

/// How far the import into a store has got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportProgress {
    /// The imported file's SHA-256 (hex): which import this is.
    pub digest: String,
    /// Events in the file.
    pub total: u64,
    /// Events committed so far: the file's first `imported` events.
    pub imported: u64,
}

impl ImportProgress {
    /// Whether every event of the file is in.
    pub fn is_complete(&self) -> bool {
        self.imported >= self.total
    }
}

/// The identity of a stored event: its aggregate and sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventKey {
    /// The aggregate's type.
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// Its sequence.
    pub sequence: u64,
}

/// Why an import cannot start or go on.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The target holds events that no import of this file put there.
    #[error("the target store is not empty: it holds {events} events and no import of this file; import only into an empty store")]
    NotEmpty {
        /// Events it holds.
        events: u64,
    },
    /// The target is receiving (or received) another file.
    #[error("the target store holds an import of another file (sha256 {digest}); import only into an empty store")]
    AnotherImport {
        /// That file's digest.
        digest: String,
    },
    /// The target's events and its import record disagree: something else wrote to it.
    #[error("the target store holds {events} events, but its import has committed {imported}: something else wrote to it; start again with an empty store")]
    Diverged {
        /// Events it holds.
        events: u64,
        /// Events its import record counts.
        imported: u64,
    },
    /// Another import moved the record between this one's batches.
    #[error(
        "another import into this store is running (its progress moved under this one); let it finish or stop it first"
    )]
    Concurrent,
    /// An aggregate's stream in the target is not at the revision the file's next event follows
    /// (EventStoreDB): something else wrote to it or removed events from it.
    #[error("the target's stream {stream} is not where its event #{sequence} belongs: something else wrote to it; start again with an empty store")]
    StreamDiverged {
        /// The stream, `{Type}-{id}`.
        stream: String,
        /// The sequence of the first event the import could not append.
        sequence: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ImportError {
    fn from(err: sqlx::Error) -> Self {
        ImportError::Store(err.into())
    }
}

impl EventStore {
    /// Starts the import of a file (identified by `digest`, holding `total` events) into this
    /// store, or resumes it: refused unless the store is empty, or holds exactly the events an
    /// earlier run of the same import committed. Run `migrate` first.
    pub async fn begin_import(&self, digest: &str, total: u64) -> Result<ImportProgress, ImportError> {
        match self.backend() {
            Backend::Sqlite(s) => {
                let mut conn = s.pool().acquire().await?;
                let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
                let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events").fetch_one(&mut *tx).await?;
                let row = sqlx::query("SELECT digest, total, imported FROM event_imports WHERE id = 1")
                    .fetch_optional(&mut *tx)
                    .await?;
                let found = row.map(|row| progress_of(&row)).transpose()?;
                let progress = decide(found, digest, total, count(events))?;
                let now = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
                sqlx::query(
                    "INSERT INTO event_imports (id, digest, total, imported, started_at, updated_at)
                     VALUES (1, ?, ?, 0, ?, ?) ON CONFLICT (id) DO NOTHING",
                )
                .bind(digest)
                .bind(to_i64(total))
                .bind(&now)
                .bind(&now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(progress)
            }
            Backend::Postgres(s) => {
                let mut tx = s.pool().begin().await?;
                // One import decides at a time; the lock ends with the transaction.
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext('stay_event_imports'))").execute(&mut *tx).await?;
                let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events").fetch_one(&mut *tx).await?;
                let row = sqlx::query("SELECT digest, total, imported FROM event_imports WHERE id = 1")
                    .fetch_optional(&mut *tx)
                    .await?;
                let found = row.map(|row| pg_progress_of(&row)).transpose()?;
                let progress = decide(found, digest, total, count(events))?;
                sqlx::query(
                    "INSERT INTO event_imports (id, digest, total, imported, started_at, updated_at)
                     VALUES (1, $1, $2, 0, now(), now()) ON CONFLICT (id) DO NOTHING",
                )
                .bind(digest)
                .bind(to_i64(total))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(progress)
            }
            #[cfg(feature = "eventstoredb")]
            Backend::EventStoreDb(s) => s.begin_import(digest, total).await,
        }
    }

    /// The newest event in the log (by feed order), to check that a resumed import's committed
    /// part is the file's beginning.
    pub async fn last_event(&self) -> Result<Option<EventKey>, ImportError> {
        let key = match self.backend() {
            Backend::Sqlite(s) => sqlx::query(
                "SELECT aggregate_type, aggregate_id, sequence FROM events ORDER BY global_position DESC LIMIT 1",
            )
            .fetch_optional(s.pool())
            .await?
            .map(|row| {
                Ok::<_, sqlx::Error>(EventKey {
                    aggregate_type: row.try_get("aggregate_type")?,
                    aggregate_id: row.try_get("aggregate_id")?,
                    sequence: count(row.try_get("sequence")?),
                })
            }),
            Backend::Postgres(s) => sqlx::query(
                "SELECT aggregate_type, aggregate_id, sequence FROM events ORDER BY tx_id DESC, global_position DESC LIMIT 1",
            )
            .fetch_optional(s.pool())
            .await?
            .map(|row| {
                Ok::<_, sqlx::Error>(EventKey {
                    aggregate_type: row.try_get("aggregate_type")?,
                    aggregate_id: row.try_get("aggregate_id")?,
                    sequence: count(row.try_get("sequence")?),
                })
            }),
            #[cfg(feature = "eventstoredb")]
            Backend::EventStoreDb(s) => return Ok(s.last_event().await?),
        };
        Ok(key.transpose()?)
    }

    /// Writes the file's next events (those after `progress.imported`, in file order) with the
    /// import's progress; answers the new progress. The events get the next feed positions in the
    /// order given. On the SQL backends this is one transaction, which fails whole (nothing
    /// written) if a stream already has one of the sequences or another import moved the progress
    /// meanwhile; on EventStoreDB each aggregate's run of events is atomic, and a batch cut short
    /// is resumed by the next `begin_import` (see `eventstoredb/import.rs`).
    pub async fn import_batch(
        &self,
        progress: &ImportProgress,
        events: &[ImportedEvent],
    ) -> Result<ImportProgress, ImportError> {
        let next = ImportProgress { imported: progress.imported + events.len() as u64, ..progress.clone() };
        if events.is_empty() {
            return Ok(next);
        }
        match self.backend() {
            Backend::Sqlite(s) => {
                let mut conn = s.pool().acquire().await?;
                let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
                let last: i64 = sqlx::query_scalar("SELECT last_position FROM event_counter WHERE id = 1")
                    .fetch_one(&mut *tx)
                    .await?;
                if count(last) != progress.imported {
                    return Err(ImportError::Diverged { events: count(last), imported: progress.imported });
                }
                let moved = sqlx::query(
                    "UPDATE event_imports SET imported = ?, updated_at = ? WHERE id = 1 AND digest = ? AND imported = ?",
                )
                .bind(to_i64(next.imported))
                .bind(Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true))
                .bind(&progress.digest)
                .bind(to_i64(progress.imported))
                .execute(&mut *tx)
                .await?;
                if moved.rows_affected() != 1 {
                    return Err(ImportError::Concurrent);
                }
                for chunk in events.chunks(SQLITE_EVENTS_PER_INSERT) {
                    insert_sqlite(&mut tx, chunk).await?;
                }
                tx.commit().await?;
                s.signal().advance(Position::new(next.imported, 0));
                Ok(next)
            }
            Backend::Postgres(s) => {
                let mut tx = s.pool().begin().await?;
                let moved = sqlx::query(
                    "UPDATE event_imports SET imported = $1, updated_at = now() WHERE id = 1 AND digest = $2 AND imported = $3",
                )
                .bind(to_i64(next.imported))
                .bind(&progress.digest)
                .bind(to_i64(progress.imported))
                .execute(&mut *tx)
                .await?;
                if moved.rows_affected() != 1 {
                    return Err(ImportError::Concurrent);
                }
                insert_postgres(&mut tx, events).await?;
                tx.commit().await?;
                // Wake the feed readers of servers on this database (polling is their fallback).
                let _ = sqlx::query("SELECT pg_notify('stay_events', '')").execute(s.pool()).await;
                Ok(next)
            }
            #[cfg(feature = "eventstoredb")]
            Backend::EventStoreDb(s) => s.import_batch(progress, events).await,
        }
    }
}

/// Whether an import of `digest` may start or resume, given what the store holds.
fn decide(found: Option<ImportProgress>, digest: &str, total: u64, events: u64) -> Result<ImportProgress, ImportError> {
    match found {
        None if events > 0 => Err(ImportError::NotEmpty { events }),
        None => Ok(ImportProgress { digest: digest.to_owned(), total, imported: 0 }),
        Some(found) if found.digest != digest => Err(ImportError::AnotherImport { digest: found.digest }),
        // Done earlier: the store may have moved on since (a server ran on it); nothing to do.
        Some(found) if found.is_complete() => Ok(found),
        Some(found) if found.imported != events => Err(ImportError::Diverged { events, imported: found.imported }),
        Some(found) => Ok(found),
    }
}

fn progress_of(row: &sqlx::sqlite::SqliteRow) -> Result<ImportProgress, sqlx::Error> {
    Ok(ImportProgress {
        digest: row.try_get("digest")?,
        total: count(row.try_get("total")?),
        imported: count(row.try_get("imported")?),
    })
}

fn pg_progress_of(row: &sqlx::postgres::PgRow) -> Result<ImportProgress, sqlx::Error> {
    Ok(ImportProgress {
        digest: row.try_get("digest")?,
        total: count(row.try_get("total")?),
        imported: count(row.try_get("imported")?),
    })
}

async fn insert_sqlite(conn: &mut sqlx::SqliteConnection, events: &[ImportedEvent]) -> Result<(), ImportError> {
    let mut sql = String::from(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at) VALUES ",
    );
    for i in 0..events.len() {
        sql.push_str(if i == 0 { "(?, ?, ?, ?, ?, ?, ?, ?)" } else { ", (?, ?, ?, ?, ?, ?, ?, ?)" });
    }
    let mut query = sqlx::query(&sql);
    for event in events {
        query = query
            .bind(&event.aggregate_type)
            .bind(&event.aggregate_id)
            .bind(to_i64(event.sequence))
            .bind(&event.event_type)
            .bind(&event.event_version)
            .bind(serde_json::to_string(&event.payload).map_err(StoreError::from)?)
            .bind(serde_json::to_string(&event.metadata).map_err(StoreError::from)?)
            .bind(event.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true));
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

async fn insert_postgres(conn: &mut sqlx::PgConnection, events: &[ImportedEvent]) -> Result<(), ImportError> {
    let types: Vec<&str> = events.iter().map(|e| e.aggregate_type.as_str()).collect();
    let ids: Vec<&str> = events.iter().map(|e| e.aggregate_id.as_str()).collect();
    let sequences: Vec<i64> = events.iter().map(|e| to_i64(e.sequence)).collect();
    let event_types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let versions: Vec<&str> = events.iter().map(|e| e.event_version.as_str()).collect();
    let mut payloads = Vec::with_capacity(events.len());
    let mut metadata = Vec::with_capacity(events.len());
    for event in events {
        payloads.push(serde_json::to_string(&event.payload).map_err(StoreError::from)?);
        metadata.push(serde_json::to_string(&event.metadata).map_err(StoreError::from)?);
    }
    let times: Vec<DateTime<Utc>> = events.iter().map(|e| e.recorded_at).collect();
    // Identity values are taken as rows leave the ordered select: in file order.
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at)
         SELECT v.t, v.id, v.seq, v.et, v.ev, v.payload::jsonb, v.meta::jsonb, v.at
           FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[],
                       $8::timestamptz[])
                WITH ORDINALITY AS v (t, id, seq, et, ev, payload, meta, at, n)
          ORDER BY v.n",
    )
    .bind(&types)
    .bind(&ids)
    .bind(&sequences)
    .bind(&event_types)
    .bind(&versions)
    .bind(&payloads)
    .bind(&metadata)
    .bind(&times)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn count(value: i64) -> u64 {
    value.max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(digest: &str, total: u64, imported: u64) -> ImportProgress {
        ImportProgress { digest: digest.into(), total, imported }
    }

    #[test]
    fn an_empty_store_starts_an_import() {
        assert_eq!(decide(None, "d", 10, 0).expect("starts"), progress("d", 10, 0));
    }

    #[test]
    fn a_store_with_events_of_its_own_is_refused() {
        assert!(matches!(decide(None, "d", 10, 3), Err(ImportError::NotEmpty { events: 3 })));
    }

    #[test]
    fn the_same_import_resumes_where_it_stopped() {
        assert_eq!(decide(Some(progress("d", 10, 4)), "d", 10, 4).expect("resumes"), progress("d", 10, 4));
    }

    #[test]
    fn another_file_or_foreign_events_are_refused() {
        assert!(matches!(decide(Some(progress("e", 10, 4)), "d", 10, 4), Err(ImportError::AnotherImport { .. })));
        assert!(matches!(
            decide(Some(progress("d", 10, 4)), "d", 10, 5),
            Err(ImportError::Diverged { events: 5, imported: 4 })
        ));
    }

    #[test]
    fn a_finished_import_is_done_even_after_the_store_moved_on() {
        assert!(decide(Some(progress("d", 10, 10)), "d", 10, 12).expect("done").is_complete());
    }
}
