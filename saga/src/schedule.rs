//! The saga's own tables: which instances need driving (with a lease per instance), and the
//! payment ledger as Stay knows it.
//!
//! An instance's *history* is its event stream; this table only says when to look at it next and
//! who is looking. Two processes sharing PostgreSQL never drive one instance at once: a driver
//! claims due rows with a lease (`FOR UPDATE SKIP LOCKED`), renews it between steps, and gives it
//! back with the next time to look. A wake-up that arrives while an instance is being driven (a
//! cancellation) bumps `wakes`, so the driver's "nothing to do" cannot overwrite it.

use stay_store::migrate::Migration;
use stay_store::sql::for_sqlite as sqlite;
use stay_store::{MigrationSet, SqlDatabase, SqlTransaction, StoreError};

use crate::provider::{LedgerKind, LedgerStatus};

/// The saga's tables.
pub const SAGA_MIGRATIONS: MigrationSet = MigrationSet {
    component: "saga",
    sqlite: &[Migration { version: 1, name: "saga_tables", sql: include_str!("../migrations/sqlite/0001_saga.sql") }],
    postgres: &[Migration {
        version: 1,
        name: "saga_tables",
        sql: include_str!("../migrations/postgres/0001_saga.sql"),
    }],
};

/// Runs one statement on either database; answers the rows it touched.
macro_rules! execute {
    ($db:expr, $sql:expr $(, $bind:expr)* $(,)?) => {
        match $db {
            SqlDatabase::Sqlite(pool) => {
                sqlx::query(&sqlite($sql))$(.bind($bind))*.execute(pool).await?.rows_affected()
            }
            SqlDatabase::Postgres(pool) => sqlx::query($sql)$(.bind($bind))*.execute(pool).await?.rows_affected(),
        }
    };
}

/// Fetches rows of type `$row` on either database.
macro_rules! fetch_all {
    ($db:expr, $row:ty, $sql:expr $(, $bind:expr)* $(,)?) => {
        match $db {
            SqlDatabase::Sqlite(pool) => {
                sqlx::query_as::<_, $row>(&sqlite($sql))$(.bind($bind))*.fetch_all(pool).await?
            }
            SqlDatabase::Postgres(pool) => sqlx::query_as::<_, $row>($sql)$(.bind($bind))*.fetch_all(pool).await?,
        }
    };
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
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
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

/// One provider call as Stay knows it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct LedgerRow {
    /// Cursor order.
    pub entry_id: i64,
    /// charge:<payment>, refund:<refund>, void:<payment>.
    pub entry_key: String,
    /// The charge.
    pub payment_id: String,
    /// The reservation.
    pub reservation_id: String,
    /// charge, refund, void.
    pub kind: String,
    /// Minor units.
    pub amount_minor: i64,
    /// ISO 4217.
    pub currency: String,
    /// succeeded, failed, pending.
    pub status: String,
    /// The provider's reference.
    pub provider_ref: Option<String>,
}

/// The saga's tables in the SQL database beside the log.
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
    pub async fn start(tx: &mut SqlTransaction, saga_id: &str, now_ms: i64) -> Result<(), StoreError> {
        const SQL: &str =
            "INSERT INTO saga_instances (saga_id, status, step, due_at_ms, created_at_ms, updated_at_ms) \
                           VALUES ($1, 'running', 'start', $2, $2, $2) ON CONFLICT (saga_id) DO NOTHING";
        match tx {
            SqlTransaction::Sqlite(tx) => {
                sqlx::query(&sqlite(SQL)).bind(saga_id).bind(now_ms).execute(&mut **tx).await?;
            }
            SqlTransaction::Postgres(tx) => {
                sqlx::query(SQL).bind(saga_id).bind(now_ms).execute(&mut **tx).await?;
            }
        }
        Ok(())
    }

    /// In the feed consumer's transaction (or alone): something happened to a saga — look at it now.
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
        let touched = execute!(
            &self.db,
            "UPDATE saga_instances SET due_at_ms = $2, wakes = wakes + 1 WHERE saga_id = $1",
            saga_id,
            now_ms
        );
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
        let until = now_ms + lease_ms;
        let rows: Vec<(String, i64)> = match &self.db {
            SqlDatabase::Sqlite(pool) => {
                sqlx::query_as(&sqlite(
                    "UPDATE saga_instances SET lease_owner = $1, lease_until_ms = $2 \
                     WHERE saga_id IN (SELECT saga_id FROM saga_instances \
                                       WHERE due_at_ms <= $3 AND lease_until_ms < $3 ORDER BY due_at_ms LIMIT $4) \
                     AND lease_until_ms < $3 RETURNING saga_id, wakes",
                ))
                .bind(owner)
                .bind(until)
                .bind(now_ms)
                .bind(limit)
                .fetch_all(pool)
                .await?
            }
            SqlDatabase::Postgres(pool) => {
                sqlx::query_as(
                    "UPDATE saga_instances SET lease_owner = $1, lease_until_ms = $2 \
                     WHERE saga_id IN (SELECT saga_id FROM saga_instances \
                                       WHERE due_at_ms <= $3 AND lease_until_ms < $3 ORDER BY due_at_ms LIMIT $4 \
                                       FOR UPDATE SKIP LOCKED) \
                     AND lease_until_ms < $3 RETURNING saga_id, wakes",
                )
                .bind(owner)
                .bind(until)
                .bind(now_ms)
                .bind(limit)
                .fetch_all(pool)
                .await?
            }
        };
        Ok(rows.into_iter().map(|(saga_id, wakes)| Claimed { saga_id, wakes }).collect())
    }

    /// Extends `owner`'s lease; false when it was lost (expired and taken by another driver).
    pub async fn renew(&self, owner: &str, saga_id: &str, until_ms: i64) -> Result<bool, StoreError> {
        let touched = execute!(
            &self.db,
            "UPDATE saga_instances SET lease_until_ms = $3 WHERE saga_id = $1 AND lease_owner = $2",
            saga_id,
            owner,
            until_ms
        );
        Ok(touched == 1)
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
        execute!(
            &self.db,
            "UPDATE saga_instances SET status = COALESCE($3, status), step = COALESCE($4, step), last_error = $5, \
             updated_at_ms = $6, \
             due_at_ms = CASE WHEN wakes = $7 THEN $8 ELSE $6 END, lease_owner = NULL, lease_until_ms = 0 \
             WHERE saga_id = $1 AND lease_owner = $2",
            &claimed.saga_id,
            owner,
            release.status,
            release.step,
            release.last_error,
            now_ms,
            claimed.wakes,
            release.due_at_ms,
        );
        Ok(())
    }

    /// The soonest time an instance can be claimed, if any: its due time, or for one being driven,
    /// when its lease ends.
    pub async fn next_due(&self, now_ms: i64) -> Result<Option<i64>, StoreError> {
        let rows = fetch_all!(
            &self.db,
            (Option<i64>,),
            "SELECT MIN(CASE WHEN lease_until_ms < $1 THEN due_at_ms ELSE lease_until_ms END) \
             FROM saga_instances WHERE due_at_ms IS NOT NULL",
            now_ms
        );
        Ok(rows.first().and_then(|row| row.0))
    }

    /// Instances with `status` (or all), newest first, at most `limit`.
    pub async fn list(&self, status: Option<&str>, limit: i64) -> Result<Vec<SagaRow>, StoreError> {
        Ok(match status {
            Some(status) => fetch_all!(
                &self.db,
                SagaRow,
                "SELECT saga_id, status, step, updated_at_ms, last_error, due_at_ms FROM saga_instances \
                 WHERE status = $1 ORDER BY updated_at_ms DESC, saga_id LIMIT $2",
                status,
                limit
            ),
            None => fetch_all!(
                &self.db,
                SagaRow,
                "SELECT saga_id, status, step, updated_at_ms, last_error, due_at_ms FROM saga_instances \
                 ORDER BY updated_at_ms DESC, saga_id LIMIT $1",
                limit
            ),
        })
    }

    /// One instance's row.
    pub async fn get(&self, saga_id: &str) -> Result<Option<SagaRow>, StoreError> {
        let rows = fetch_all!(
            &self.db,
            SagaRow,
            "SELECT saga_id, status, step, updated_at_ms, last_error, due_at_ms FROM saga_instances WHERE saga_id = $1",
            saga_id
        );
        Ok(rows.into_iter().next())
    }

    /// How many instances are in each status.
    pub async fn counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(fetch_all!(&self.db, (String, i64), "SELECT status, COUNT(*) FROM saga_instances GROUP BY status"))
    }

    /// Records (or updates) a provider call in the ledger.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_payment(
        &self,
        key: &str,
        payment_id: &str,
        reservation_id: &str,
        kind: LedgerKind,
        amount_minor: i64,
        currency: &str,
        status: LedgerStatus,
        provider_ref: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        execute!(
            &self.db,
            "INSERT INTO saga_payment_ledger \
               (entry_key, payment_id, reservation_id, kind, amount_minor, currency, status, provider_ref, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (entry_key) DO UPDATE SET amount_minor = excluded.amount_minor, status = excluded.status, \
               provider_ref = COALESCE(excluded.provider_ref, saga_payment_ledger.provider_ref), \
               updated_at_ms = excluded.updated_at_ms",
            key,
            payment_id,
            reservation_id,
            ledger_kind(kind),
            amount_minor,
            currency,
            ledger_status(status),
            provider_ref,
            now_ms,
        );
        Ok(())
    }

    /// Ledger entries after `cursor`, optionally of one reservation, at most `limit`.
    pub async fn payments(
        &self,
        reservation_id: Option<&str>,
        cursor: i64,
        limit: i64,
    ) -> Result<Vec<LedgerRow>, StoreError> {
        const COLUMNS: &str =
            "entry_id, entry_key, payment_id, reservation_id, kind, amount_minor, currency, status, provider_ref";
        Ok(match reservation_id {
            Some(id) => fetch_all!(
                &self.db,
                LedgerRow,
                &format!(
                    "SELECT {COLUMNS} FROM saga_payment_ledger WHERE reservation_id = $1 AND entry_id > $2 \
                     ORDER BY entry_id LIMIT $3"
                ),
                id,
                cursor,
                limit
            ),
            None => fetch_all!(
                &self.db,
                LedgerRow,
                &format!("SELECT {COLUMNS} FROM saga_payment_ledger WHERE entry_id > $1 ORDER BY entry_id LIMIT $2"),
                cursor,
                limit
            ),
        })
    }
}

fn ledger_kind(kind: LedgerKind) -> &'static str {
    match kind {
        LedgerKind::Charge => "charge",
        LedgerKind::Refund => "refund",
        LedgerKind::Void => "void",
    }
}

fn ledger_status(status: LedgerStatus) -> &'static str {
    match status {
        LedgerStatus::Succeeded => "succeeded",
        LedgerStatus::Failed => "failed",
        LedgerStatus::Pending => "pending",
    }
}
