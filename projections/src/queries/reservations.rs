//! The reservations model's rows: one reservation, a guest's reservations.

use serde_json::Value;
use stay_store::{Row, SqlDatabase, StoreError};

use crate::models::reservations;

const COLUMNS: &str = "reservation_id, room_id, guest_id, host_id, check_in, check_out, guests, status, reason, \
    total_minor, currency, payment_status, charged_minor, refunded_minor, payment_currency, updated_at, position";

/// A reservation as the reservations model holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct ReservationRow {
    /// The reservation.
    pub reservation_id: String,
    /// Its room.
    pub room_id: String,
    /// Its guest.
    pub guest_id: String,
    /// Its room's host.
    pub host_id: String,
    /// First night (`YYYY-MM-DD`).
    pub check_in: String,
    /// Day of departure.
    pub check_out: String,
    /// Guests.
    pub guests: i64,
    /// `pending`, `confirmed`, `rejected`, `cancelling`, `cancelled`.
    pub status: String,
    /// Why it was rejected, as the event said it.
    pub reason: Option<Value>,
    /// Its price once confirmed, in minor units of `currency`.
    pub total_minor: Option<i64>,
    /// The currency of its price.
    pub currency: Option<String>,
    /// Where its payment stands (`none` before a charge is asked for).
    pub payment_status: String,
    /// Money charged, in minor units.
    pub charged_minor: Option<i64>,
    /// Money refunded, in minor units.
    pub refunded_minor: Option<i64>,
    /// The currency of the payment.
    pub payment_currency: Option<String>,
    /// When an event last touched it (RFC 3339).
    pub updated_at: String,
    /// The feed position of that event.
    pub position: String,
}

impl ReservationRow {
    fn read(row: &Row) -> Result<Self, StoreError> {
        let reason = match row.opt_text("reason")? {
            Some(text) => {
                Some(serde_json::from_str(&text).map_err(|err| StoreError::Decode(format!("column `reason`: {err}")))?)
            }
            None => None,
        };
        Ok(Self {
            reservation_id: row.text("reservation_id")?,
            room_id: row.text("room_id")?,
            guest_id: row.text("guest_id")?,
            host_id: row.text("host_id")?,
            check_in: row.text("check_in")?,
            check_out: row.text("check_out")?,
            guests: row.int("guests")?,
            status: row.text("status")?,
            reason,
            total_minor: row.opt_int("total_minor")?,
            currency: row.opt_text("currency")?,
            payment_status: row.text("payment_status")?,
            charged_minor: row.opt_int("charged_minor")?,
            refunded_minor: row.opt_int("refunded_minor")?,
            payment_currency: row.opt_text("payment_currency")?,
            updated_at: row.text("updated_at")?,
            position: row.text("position")?,
        })
    }

    /// The currency payment amounts are in: the payment's own, else the reservation's price's.
    pub fn money_currency(&self) -> Option<&str> {
        self.payment_currency.as_deref().or(self.currency.as_deref())
    }
}

/// One reservation of version `v`, if it exists.
pub async fn reservation(db: &SqlDatabase, v: i64, reservation_id: &str) -> Result<Option<ReservationRow>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM {} WHERE reservation_id = $1", reservations::table(v));
    db.rows(&sql, &[reservation_id.into()]).await?.first().map(ReservationRow::read).transpose()
}

/// `guest_id`'s newest reservations in version `v`, at most `limit`.
pub async fn of_guest(db: &SqlDatabase, v: i64, guest_id: &str, limit: i64) -> Result<Vec<ReservationRow>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM {} WHERE guest_id = $1 \
         ORDER BY created_position_major DESC, created_position_minor DESC LIMIT $2",
        reservations::table(v)
    );
    db.rows(&sql, &[guest_id.into(), limit.into()]).await?.iter().map(ReservationRow::read).collect()
}
