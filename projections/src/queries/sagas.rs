//! The sagas model's rows: the saga overview, filtered by status, one page at a time.
//!
//! Pages run in saga id order, descending. Saga ids are their reservations' ids: time-ordered UUID
//! v7 for a reservation made without an `Idempotency-Key`, derived from the key (UUID v5) with one,
//! so the order is not time order. A saga never changes its id, so a page boundary never
//! moves while sagas change status or step: paging neither repeats nor skips a saga, however many
//! updates arrive between two pages. (Ordering by `updated_at` would move a saga that changes past
//! the cursor, and a page could then miss it or show it twice.) A saga created after the first page
//! is not in later pages: it sorts before the cursor.

use std::fmt;
use std::str::FromStr;

use stay_store::{Arg, Row, SqlDatabase, StoreError};

use crate::models::sagas;

const COLUMNS: &str = "saga_id, status, step, outcome, updated_at, position";

/// Where a saga stands, as the model records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SagaStatus {
    /// Working through its steps (or compensating).
    Running,
    /// Ended with the reservation confirmed.
    Completed,
    /// Ended after undoing what it had done (the reservation rejected or cancelled).
    Compensated,
    /// Stopped on a step that needs an operator (`stay saga retry|skip`).
    Parked,
}

impl SagaStatus {
    /// Every status, in the order the docs list them.
    pub const ALL: [SagaStatus; 4] =
        [SagaStatus::Running, SagaStatus::Completed, SagaStatus::Compensated, SagaStatus::Parked];

    /// The status as stored and as the API writes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            SagaStatus::Running => "running",
            SagaStatus::Completed => "completed",
            SagaStatus::Compensated => "compensated",
            SagaStatus::Parked => "parked",
        }
    }
}

impl fmt::Display for SagaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that is not a saga status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a saga status (running, completed, compensated or parked)")]
pub struct UnknownSagaStatus(pub String);

impl FromStr for SagaStatus {
    type Err = UnknownSagaStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SagaStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownSagaStatus(s.chars().take(64).collect()))
    }
}

/// A saga as the sagas model holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SagaRow {
    /// The saga (its reservation's id).
    pub saga_id: String,
    /// Where it stands.
    pub status: SagaStatus,
    /// The step it is at (or ended on).
    pub step: String,
    /// How it ended (`confirmed`, `rejected`, `cancelled`), once it has.
    pub outcome: Option<String>,
    /// When its last event was recorded (RFC 3339).
    pub updated_at: String,
    /// The feed position of that event.
    pub position: String,
}

impl SagaRow {
    fn read(row: &Row) -> Result<Self, StoreError> {
        let status = row.text("status")?;
        Ok(Self {
            saga_id: row.text("saga_id")?,
            status: status
                .parse()
                .map_err(|err: UnknownSagaStatus| StoreError::Decode(format!("column `status`: {err}")))?,
            step: row.text("step")?,
            outcome: row.opt_text("outcome")?,
            updated_at: row.text("updated_at")?,
            position: row.text("position")?,
        })
    }
}

/// One page of the saga overview.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SagaPage {
    /// The sagas, by saga id, descending.
    pub rows: Vec<SagaRow>,
    /// Where the next page starts (the last saga id of this page), when there are more.
    pub next: Option<String>,
}

/// At most `limit` sagas of version `v` whose status is one of `statuses` (any, when empty),
/// by saga id descending, with ids before `before` (the previous page's `next`), in one statement that the
/// model's primary key or `(status, saga_id)` index answers.
pub async fn page(
    db: &SqlDatabase,
    v: i64,
    statuses: &[SagaStatus],
    before: Option<&str>,
    limit: i64,
) -> Result<SagaPage, StoreError> {
    let mut conditions = Vec::new();
    let mut args: Vec<Arg> = Vec::new();
    if !statuses.is_empty() {
        let first = args.len() + 1;
        let marks: Vec<String> = (first..first + statuses.len()).map(|n| format!("${n}")).collect();
        conditions.push(format!("status IN ({})", marks.join(", ")));
        args.extend(statuses.iter().map(|status| status.as_str().into()));
    }
    if let Some(before) = before {
        conditions.push(format!("saga_id < ${}", args.len() + 1));
        args.push(before.into());
    }
    let filter = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
    // One more than asked: a full page has a next one only if that row exists.
    let sql =
        format!("SELECT {COLUMNS} FROM {} {filter} ORDER BY saga_id DESC LIMIT ${}", sagas::table(v), args.len() + 1);
    args.push(limit.saturating_add(1).into());
    let mut rows = db.rows(&sql, &args).await?.iter().map(SagaRow::read).collect::<Result<Vec<_>, _>>()?;
    let more = i64::try_from(rows.len()).unwrap_or(i64::MAX) > limit;
    if more {
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    }
    let next = if more { rows.last().map(|row| row.saga_id.clone()) } else { None };
    Ok(SagaPage { rows, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse_from_their_names_only() {
        for status in SagaStatus::ALL {
            assert_eq!(status.as_str().parse::<SagaStatus>(), Ok(status));
        }
        for bad in ["", "Running", "done", "parked,running"] {
            assert!(bad.parse::<SagaStatus>().is_err(), "{bad:?}");
        }
    }
}
