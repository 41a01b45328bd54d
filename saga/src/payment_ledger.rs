//! The payment ledger as Stay knows it: one row per call to the payment provider (a charge, a
//! refund, a void), keyed by the call's idempotency key, with whether it moved money.
//!
//! The driver notes each call before making it (`pending`) and again with its answer, so the
//! ledger never says less than the provider did; `GET /v1/admin/payments` reads it. Only
//! `succeeded` rows moved money. The table lives beside the schedule's, in the database the
//! saga's migrations ([`crate::schedule::SAGA_MIGRATIONS`]) set up.

use stay_store::{Row, SqlDatabase, StoreError};

use crate::provider::{LedgerKind, LedgerStatus};

const LEDGER_COLUMNS: &str =
    "entry_id, entry_key, payment_id, reservation_id, kind, amount_minor, currency, status, provider_ref";

fn ledger_row(row: &Row) -> Result<LedgerRow, StoreError> {
    Ok(LedgerRow {
        entry_id: row.int("entry_id")?,
        entry_key: row.text("entry_key")?,
        payment_id: row.text("payment_id")?,
        reservation_id: row.text("reservation_id")?,
        kind: row.text("kind")?,
        amount_minor: row.int("amount_minor")?,
        currency: row.text("currency")?,
        status: row.text("status")?,
        provider_ref: row.opt_text("provider_ref")?,
    })
}

/// One provider call as Stay knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerRow {
    /// Cursor order.
    pub entry_id: i64,
    /// `charge:<payment>`, `refund:<refund>`, `void:<payment>`.
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

/// The `saga_payment_ledger` table in the SQL database beside the log.
#[derive(Clone, Debug)]
pub struct PaymentLedger {
    db: SqlDatabase,
}

impl PaymentLedger {
    /// The ledger in `db` (migrated with [`crate::schedule::SAGA_MIGRATIONS`]).
    pub fn new(db: SqlDatabase) -> Self {
        Self { db }
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
        self.db
            .run(
                "INSERT INTO saga_payment_ledger \
                   (entry_key, payment_id, reservation_id, kind, amount_minor, currency, status, provider_ref, updated_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (entry_key) DO UPDATE SET amount_minor = excluded.amount_minor, status = excluded.status, \
                   provider_ref = COALESCE(excluded.provider_ref, saga_payment_ledger.provider_ref), \
                   updated_at_ms = excluded.updated_at_ms",
                &[
                    key.into(),
                    payment_id.into(),
                    reservation_id.into(),
                    ledger_kind(kind).into(),
                    amount_minor.into(),
                    currency.into(),
                    ledger_status(status).into(),
                    provider_ref.into(),
                    now_ms.into(),
                ],
            )
            .await?;
        Ok(())
    }

    /// Ledger entries after `cursor`, optionally of one reservation, at most `limit`.
    pub async fn payments(
        &self,
        reservation_id: Option<&str>,
        cursor: i64,
        limit: i64,
    ) -> Result<Vec<LedgerRow>, StoreError> {
        let rows = match reservation_id {
            Some(id) => {
                let sql = format!(
                    "SELECT {LEDGER_COLUMNS} FROM saga_payment_ledger WHERE reservation_id = $1 AND entry_id > $2 \
                     ORDER BY entry_id LIMIT $3"
                );
                self.db.rows(&sql, &[id.into(), cursor.into(), limit.into()]).await?
            }
            None => {
                let sql = format!(
                    "SELECT {LEDGER_COLUMNS} FROM saga_payment_ledger WHERE entry_id > $1 ORDER BY entry_id LIMIT $2"
                );
                self.db.rows(&sql, &[cursor.into(), limit.into()]).await?
            }
        };
        rows.iter().map(ledger_row).collect()
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
