//! Group commit on PostgreSQL: the appends of concurrent commands share one transaction, one
//! `INSERT` and one WAL flush.
//!
//! Appends are queued to writer tasks. A writer takes what is queued (up to [`MAX_GROUP`]
//! appends, at most one per aggregate) and writes it in one transaction:
//!
//! 1. one `INSERT … SELECT … FROM (VALUES …) ON CONFLICT DO NOTHING RETURNING …` for all of the
//!    group's events. Each row carries its append's expected version, and the `WHERE` guard drops
//!    the rows of an append that is ahead of its stream; the primary key (via `DO NOTHING`) drops
//!    those of an append behind it.
//! 2. An append that got fewer rows back than it has events conflicted: its rows (if some of a
//!    longer append slipped in) are deleted again in the same transaction, and it alone is
//!    answered `Conflict`. The rest commit.
//! 3. `COMMIT`; every append gets its positions.
//!
//! If the transaction fails as a whole (a deadlock with another process's group, a payload the
//! database refuses, a dropped connection), it is rolled back — nothing of it is written — and each
//! of its appends is tried again alone, so only the append at fault fails.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use tokio::sync::{mpsc, oneshot, Mutex, Notify};

use crate::error::StoreError;
use crate::event::Append;
use crate::position::Position;
use crate::signal::FeedSignal;

/// How many appends one transaction takes at most.
pub(crate) const MAX_GROUP: usize = 256;
/// Bound parameters per event in the group `INSERT`.
const PARAMS_PER_EVENT: usize = 9;
/// PostgreSQL allows 65,535 bound parameters per statement; stay below it.
const MAX_EVENTS_PER_INSERT: usize = 65_535 / PARAMS_PER_EVENT - 1;
/// Groups written at once: while one waits for its flush, the next is being written.
pub(crate) const WRITERS: usize = 2;

/// An append waiting for its group.
#[derive(Debug)]
pub(crate) struct AppendJob {
    pub(crate) append: Append,
    pub(crate) reply: oneshot::Sender<Result<Vec<Position>, StoreError>>,
}

/// What a writer needs besides its queue.
#[derive(Clone, Debug)]
pub(crate) struct GroupWriter {
    pub(crate) pool: PgPool,
    pub(crate) signal: FeedSignal,
    pub(crate) committed: Arc<Notify>,
}

/// Runs one writer over the shared queue until every sender is gone.
pub(crate) async fn run_writer(writer: GroupWriter, jobs: Arc<Mutex<mpsc::Receiver<AppendJob>>>) {
    let mut held_over: Vec<AppendJob> = Vec::new();
    loop {
        let mut group = std::mem::take(&mut held_over);
        if group.is_empty() {
            let mut jobs = jobs.lock().await;
            match jobs.recv().await {
                Some(job) => group.push(job),
                None => return,
            }
            take_queued(&mut jobs, &mut group);
        } else if let Ok(mut jobs) = jobs.try_lock() {
            // Held-over appends never wait for the queue: another writer may be waiting on it.
            take_queued(&mut jobs, &mut group);
        }
        // One append per aggregate per group: a second one waits for the next group (it was
        // decided on a version the first one may move).
        let mut seen = HashSet::new();
        let (group, later): (Vec<_>, Vec<_>) = group
            .into_iter()
            .partition(|job| seen.insert((job.append.aggregate_type.clone(), job.append.aggregate_id.clone())));
        held_over = later;
        writer.write(group).await;
    }
}

/// Adds what is queued now to `group`, up to [`MAX_GROUP`].
fn take_queued(jobs: &mut mpsc::Receiver<AppendJob>, group: &mut Vec<AppendJob>) {
    while group.len() < MAX_GROUP {
        match jobs.try_recv() {
            Ok(job) => group.push(job),
            Err(_) => break,
        }
    }
}

impl GroupWriter {
    /// Writes one group and answers each of its appends.
    async fn write(&self, group: Vec<AppendJob>) {
        let appends: Vec<&Append> = group.iter().map(|job| &job.append).collect();
        let outcomes = match write_group(&self.pool, &appends).await {
            Ok(outcomes) => outcomes,
            Err(err) => {
                tracing::debug!(error = %err, appends = appends.len(), "a group commit failed; its appends go alone");
                let mut outcomes = Vec::with_capacity(appends.len());
                for append in &appends {
                    outcomes.push(write_group(&self.pool, &[append]).await.and_then(|mut one| one.remove(0)));
                }
                outcomes
            }
        };
        let head = outcomes.iter().filter_map(|o| o.as_ref().ok()).filter_map(|p| p.iter().max()).max().copied();
        if let Some(head) = head {
            self.signal.advance(head);
            self.committed.notify_one();
        }
        for (job, outcome) in group.into_iter().zip(outcomes) {
            let _ = job.reply.send(outcome);
        }
    }
}

/// Writes `appends` in one transaction. The outer `Err`: nothing was written; the inner results
/// are each append's own answer.
async fn write_group(pool: &PgPool, appends: &[&Append]) -> Result<Vec<Result<Vec<Position>, StoreError>>, StoreError> {
    let mut tx = pool.begin().await?;
    // Rows back, per append (by index), as (sequence, position).
    let mut written: Vec<Vec<(i64, Position)>> = vec![Vec::new(); appends.len()];
    let rows: Vec<(usize, &Append, u64)> = appends
        .iter()
        .enumerate()
        .flat_map(|(index, append)| (0..append.events.len() as u64).map(move |n| (index, *append, n)))
        .collect();
    let mut metadata = Vec::with_capacity(appends.len());
    for append in appends {
        metadata.push(serde_json::to_value(append.metadata.to_map())?);
    }
    // A group holds one append per aggregate: the aggregate names the append.
    let index_of: HashMap<(&str, &str), usize> = appends
        .iter()
        .enumerate()
        .map(|(index, append)| ((append.aggregate_type.as_str(), append.aggregate_id.as_str()), index))
        .collect();
    for chunk in rows.chunks(MAX_EVENTS_PER_INSERT) {
        for row in insert_rows(&mut tx, chunk, &metadata).await? {
            let (kind, id): (String, String) = (row.try_get("aggregate_type")?, row.try_get("aggregate_id")?);
            let sequence: i64 = row.try_get("sequence")?;
            let position = position_of(&row)?;
            let Some(&index) = index_of.get(&(kind.as_str(), id.as_str())) else {
                return Err(StoreError::Database(format!("the group insert returned a row of {kind} {id}").into()));
            };
            written[index].push((sequence, position));
        }
    }
    let mut outcomes = Vec::with_capacity(appends.len());
    for (append, mut rows) in appends.iter().zip(written) {
        if rows.len() == append.events.len() {
            rows.sort_unstable_by_key(|(sequence, _)| *sequence);
            outcomes.push(Ok(rows.into_iter().map(|(_, position)| position).collect()));
            continue;
        }
        if !rows.is_empty() {
            // Part of a longer append slipped in beside a rival's events: take it out again.
            let sequences: Vec<i64> = rows.iter().map(|(sequence, _)| *sequence).collect();
            sqlx::query("DELETE FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = ANY($3)")
                .bind(&append.aggregate_type)
                .bind(&append.aggregate_id)
                .bind(&sequences)
                .execute(&mut *tx)
                .await?;
        }
        outcomes.push(Err(StoreError::Conflict));
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// One `INSERT` for `rows` (append index, append, event index), guarded per append; the rows
/// written. `metadata` is each append's metadata as JSON, by append index.
async fn insert_rows(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    rows: &[(usize, &Append, u64)],
    metadata: &[serde_json::Value],
) -> Result<Vec<PgRow>, StoreError> {
    let mut sql = String::from(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at) \
         SELECT v.t, v.id, v.seq, v.et, v.ev, v.payload, v.meta, v.at FROM (VALUES ",
    );
    for i in 0..rows.len() {
        let b = i * PARAMS_PER_EVENT;
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!(
            "(${}::text, ${}::text, ${}::bigint, ${}::text, ${}::text, ${}::jsonb, ${}::jsonb, ${}::timestamptz, ${}::bigint)",
            b + 1,
            b + 2,
            b + 3,
            b + 4,
            b + 5,
            b + 6,
            b + 7,
            b + 8,
            b + 9
        ));
    }
    sql.push_str(
        ") AS v (t, id, seq, et, ev, payload, meta, at, expected) \
         WHERE v.expected = 0 OR EXISTS (SELECT 1 FROM events e \
                                         WHERE e.aggregate_type = v.t AND e.aggregate_id = v.id AND e.sequence = v.expected) \
         ORDER BY v.t, v.id, v.seq \
         ON CONFLICT DO NOTHING \
         RETURNING aggregate_type, aggregate_id, sequence, global_position, tx_id::text AS tx_id_text",
    );
    let mut query = sqlx::query(&sql);
    for (index, append, n) in rows {
        let event = &append.events[*n as usize];
        query = query
            .bind(&append.aggregate_type)
            .bind(&append.aggregate_id)
            .bind(to_i64(append.expected_version + 1 + n))
            .bind(&event.event_type)
            .bind(&event.event_version)
            .bind(&event.payload)
            .bind(&metadata[*index])
            .bind(append.metadata.recorded_at)
            .bind(to_i64(append.expected_version));
    }
    Ok(query.fetch_all(&mut **tx).await?)
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) fn position_of(row: &PgRow) -> Result<Position, StoreError> {
    let tx_id: String = row.try_get("tx_id_text")?;
    let tx_id: u64 = tx_id.parse().map_err(|e| StoreError::Decode(format!("tx_id `{tx_id}`: {e}")))?;
    let global: i64 = row.try_get("global_position")?;
    Ok(Position::new(tx_id, global.max(0) as u64))
}
