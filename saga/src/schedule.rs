//! The saga's schedule: which instances need driving, when, and who is driving each (a lease).
//!
//! An instance's *history* is its event stream; this table only says when to look at it next and
//! who is looking. Two processes sharing PostgreSQL never drive one instance at once: a driver
//! claims due rows with a lease (`FOR UPDATE SKIP LOCKED`), renews it between steps, and gives it
//! back with the next time to look. A wake-up that arrives while an instance is being driven (a
//! cancellation) bumps `wakes`, so the driver's "nothing to do" cannot overwrite it.

use stay_store::migrate::Migration;
use stay_store::{Arg, MigrationSet, Row, SqlDatabase, SqlTransaction, StoreError};

/// The saga's tables: the schedule's `saga_instances` and the payment ledger's
/// `saga_payment_ledger` ([`crate::payment_ledger`]), set up together.
pub const SAGA_MIGRATIONS: MigrationSet = MigrationSet {
    component: "saga",
    sqlite: &[Migration { version: 1, name: "saga_tables", sql: include_str!("../migrations/sqlite/0001_saga.sql") }],
    postgres: &[Migration {
        version: 1,
        name: "saga_tables",
        sql: include_str!("../migrations/postgres/0001_saga.sql"),
    }],
};

/// Instances renewed per statement (SQLite allows 32,766 parameters; PostgreSQL 65,535).
const RENEW_CHUNK: usize = 500;

const SAGA_COLUMNS: &str = "saga_id, status, step, updated_at_ms, last_error, due_at_ms";

fn saga_row(row: &Row) -> Result<SagaRow, StoreError> {
    Ok(SagaRow {
        saga_id: row.text("saga_id")?,
        status: row.text("status")?,
        step: row.text("step")?,
        updated_at_ms: row.int("updated_at_ms")?,
        last_error: row.opt_text("last_error")?,
        due_at_ms: row.opt_int("due_at_ms")?,
    })
}

/// An instance claimed for driving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    /// The saga (and reservation) id.
    pub saga_id: String,
    /// Wake-ups seen at the claim.
    pub wakes: i64,
}

/// What a drive left the instance at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release<'a> {
    /// Its status name (`None`: unchanged).
    pub status: Option<&'a str>,
    /// Its step name (`None`: unchanged).
    pub step: Option<&'a str>,
    /// When to look again, if ever (ms since the epoch).
    pub due_at_ms: Option<i64>,
    /// Its last error.
    pub last_error: Option<&'a str>,
}

/// A row of the admin list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SagaRow {
    /// The saga (and reservation) id.
    pub saga_id: String,
    /// running, completed, compensated, parked.
    pub status: String,
    /// The step it is at.
    pub step: String,
    /// When it last changed (ms since the epoch).
    pub updated_at_ms: i64,
    /// Its last error.
    pub last_error: Option<String>,
    /// When it will be looked at next (ms since the epoch).
    pub due_at_ms: Option<i64>,
}

/// The `saga_instances` table in the SQL database beside the log.
#[derive(Clone, Debug)]
pub struct Schedule {
    db: SqlDatabase,
}

impl Schedule {
    /// The tables in `db` (migrated with [`SAGA_MIGRATIONS`]).
    pub fn new(db: SqlDatabase) -> Self {
        Self { db }
    }

    /// The database.
    pub fn database(&self) -> &SqlDatabase {
        &self.db
    }

    /// In the feed consumer's transaction: a reservation was requested — a new instance, due now.
    /// With `lease`, the instance is claimed at once for its owner until the given time, so the
    /// process that read the request can drive it without a claim of its own. True when the
    /// instance is new (a redelivered request finds it there and changes nothing).
    pub async fn start(
        tx: &mut SqlTransaction,
        saga_id: &str,
        now_ms: i64,
        lease: Option<(&str, i64)>,
    ) -> Result<bool, StoreError> {
        let (owner, until) = match lease {
            Some((owner, until)) => (Some(owner), until),
            None => (None, 0),
        };
        let rows = tx
            .rows(
                "INSERT INTO saga_instances \
                 (saga_id, status, step, due_at_ms, created_at_ms, updated_at_ms, lease_owner, lease_until_ms) \
                 VALUES ($1, 'running', 'start', $2, $2, $2, $3, $4) ON CONFLICT (saga_id) DO NOTHING RETURNING saga_id",
                &[saga_id.into(), now_ms.into(), owner.into(), until.into()],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// In the feed consumer's transaction: something happened to a saga — look at it now.
    pub async fn wake_in(tx: &mut SqlTransaction, saga_id: &str, now_ms: i64) -> Result<(), StoreError> {
        tx.run(
            "UPDATE saga_instances SET due_at_ms = $2, wakes = wakes + 1 WHERE saga_id = $1",
            &[saga_id.into(), now_ms.into()],
        )
        .await?;
        Ok(())
    }

    /// Look at a saga now (after an operator resumed it); false if there is no such saga.
    pub async fn wake(&self, saga_id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let touched = self
            .db
            .run(
                "UPDATE saga_instances SET due_at_ms = $2, wakes = wakes + 1 WHERE saga_id = $1",
                &[saga_id.into(), now_ms.into()],
            )
            .await?;
        Ok(touched == 1)
    }

    /// Claims up to `limit` due instances nobody holds, for `lease_ms`.
    pub async fn claim_due(
        &self,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<Claimed>, StoreError> {
        // PostgreSQL: concurrent claimers skip each other's rows; SQLite has one writer anyway.
        let lock = match self.db {
            SqlDatabase::Postgres(_) => "FOR UPDATE SKIP LOCKED",
            SqlDatabase::Sqlite(_) => "",
        };
        let sql = format!(
            "UPDATE saga_instances SET lease_owner = $1, lease_until_ms = $2 \
             WHERE saga_id IN (SELECT saga_id FROM saga_instances \
                               WHERE due_at_ms <= $3 AND lease_until_ms < $3 ORDER BY due_at_ms LIMIT $4 {lock}) \
             AND lease_until_ms < $3 RETURNING saga_id, wakes"
        );
        let args: [Arg; 4] = [owner.into(), (now_ms + lease_ms).into(), now_ms.into(), limit.into()];
        let rows = self.db.rows(&sql, &args).await?;
        rows.iter().map(|row| Ok(Claimed { saga_id: row.text("saga_id")?, wakes: row.int("wakes")? })).collect()
    }

    /// Extends `owner`'s leases on `saga_ids` to `until_ms`, in one statement per few hundred
    /// instances (a driver's heartbeat); the ids whose lease it still held.
    pub async fn renew(&self, owner: &str, saga_ids: &[String], until_ms: i64) -> Result<Vec<String>, StoreError> {
        let mut renewed = Vec::with_capacity(saga_ids.len());
        for chunk in saga_ids.chunks(RENEW_CHUNK) {
            let placeholders: Vec<String> = (3..chunk.len() + 3).map(|n| format!("${n}")).collect();
            let sql = format!(
                "UPDATE saga_instances SET lease_until_ms = $1 WHERE lease_owner = $2 AND saga_id IN ({}) \
                 RETURNING saga_id",
                placeholders.join(", ")
            );
            let mut args: Vec<Arg> = vec![until_ms.into(), owner.into()];
            args.extend(chunk.iter().map(|id| Arg::from(id.as_str())));
            for row in self.db.rows(&sql, &args).await? {
                renewed.push(row.text("saga_id")?);
            }
        }
        Ok(renewed)
    }

    /// Gives the instance back with where it stands and when to look again; a wake-up that came
    /// during the drive (wakes moved past `claimed.wakes`) keeps it due now.
    pub async fn release(
        &self,
        owner: &str,
        claimed: &Claimed,
        release: &Release<'_>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.db
            .run(
                "UPDATE saga_instances SET status = COALESCE($3, status), step = COALESCE($4, step), last_error = $5, \
                 updated_at_ms = $6, due_at_ms = CASE WHEN wakes = $7 THEN $8 ELSE $6 END, \
                 lease_owner = NULL, lease_until_ms = 0 \
                 WHERE saga_id = $1 AND lease_owner = $2",
                &[
                    claimed.saga_id.as_str().into(),
                    owner.into(),
                    release.status.into(),
                    release.step.into(),
                    release.last_error.into(),
                    now_ms.into(),
                    claimed.wakes.into(),
                    release.due_at_ms.into(),
                ],
            )
            .await?;
        Ok(())
    }

    /// The soonest time an instance can be claimed, if any: its due time, or for one being driven,
    /// when its lease ends.
    pub async fn next_due(&self, now_ms: i64) -> Result<Option<i64>, StoreError> {
        let rows = self
            .db
            .rows(
                "SELECT MIN(CASE WHEN lease_until_ms < $1 THEN due_at_ms ELSE lease_until_ms END) AS next_due \
                 FROM saga_instances WHERE due_at_ms IS NOT NULL",
                &[now_ms.into()],
            )
            .await?;
        match rows.first() {
            Some(row) => row.opt_int("next_due"),
            None => Ok(None),
        }
    }

    /// One instance's row.
    pub async fn get(&self, saga_id: &str) -> Result<Option<SagaRow>, StoreError> {
        let sql = format!("SELECT {SAGA_COLUMNS} FROM saga_instances WHERE saga_id = $1");
        self.db.rows(&sql, &[saga_id.into()]).await?.first().map(saga_row).transpose()
    }

    /// How many instances are in each status.
    pub async fn counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = self.db.rows("SELECT status, COUNT(*) AS count FROM saga_instances GROUP BY status", &[]).await?;
        rows.iter().map(|row| Ok((row.text("status")?, row.int("count")?))).collect()
    }
}
