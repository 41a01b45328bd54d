//! The reservations model's rows: one reservation, a guest's reservations.

use serde_json::Value;
use stay_store::{Position, Row, SqlDatabase, StoreError};

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

/// One page of a guest's (or a host's) reservations, newest first.
#[derive(Clone, Debug, PartialEq)]
pub struct ReservationPage {
    /// The reservations.
    pub rows: Vec<ReservationRow>,
    /// Where the next page starts (the creation position of a full page's last reservation).
    pub next: Option<Position>,
}

/// Whose reservations a page lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Party {
    /// The ones a guest made; the model's `(guest_id, created position)` index answers the page.
    Guest,
    /// The ones made for a host's rooms; the model's `host_id` index finds them, then they are
    /// sorted by creation position (a host's reservations are as many as their rooms were booked,
    /// not the whole table).
    Host,
}

impl Party {
    fn column(self) -> &'static str {
        match self {
            Party::Guest => "guest_id",
            Party::Host => "host_id",
        }
    }
}

/// At most `limit` of `user_id`'s reservations (as `party`) in version `v`, newest first, created
/// before `before` (or the newest, without it), in one statement. The cursor is the creation
/// position of the page's last reservation, so paging never repeats or skips one, even while new
/// ones arrive at the top.
pub async fn of_party(
    db: &SqlDatabase,
    v: i64,
    party: Party,
    user_id: &str,
    before: Option<Position>,
    limit: i64,
) -> Result<ReservationPage, StoreError> {
    let t = reservations::table(v);
    let who = party.column();
    let columns = format!("{COLUMNS}, created_position_major, created_position_minor");
    let order = "ORDER BY created_position_major DESC, created_position_minor DESC";
    let rows = match before {
        None => {
            let sql = format!("SELECT {columns} FROM {t} WHERE {who} = $1 {order} LIMIT $2");
            db.rows(&sql, &[user_id.into(), limit.into()]).await?
        }
        Some(before) => {
            let sql = format!(
                "SELECT {columns} FROM {t} WHERE {who} = $1 AND (created_position_major < $2 \
                 OR (created_position_major = $2 AND created_position_minor < $3)) {order} LIMIT $4"
            );
            let (major, minor) = (stored(before.major()), stored(before.minor()));
            db.rows(&sql, &[user_id.into(), major.into(), minor.into(), limit.into()]).await?
        }
    };
    let next = match rows.last() {
        Some(last) if i64::try_from(rows.len()).unwrap_or(i64::MAX) >= limit => Some(Position::new(
            position_part(last.int("created_position_major")?)?,
            position_part(last.int("created_position_minor")?)?,
        )),
        _ => None,
    };
    let rows = rows.iter().map(ReservationRow::read).collect::<Result<_, _>>()?;
    Ok(ReservationPage { rows, next })
}

/// A position part as the model stores it (a signed 64-bit integer).
fn stored(part: u64) -> i64 {
    i64::try_from(part).unwrap_or(i64::MAX)
}

/// A stored position part back as a position's.
fn position_part(stored: i64) -> Result<u64, StoreError> {
    u64::try_from(stored).map_err(|_| StoreError::Decode(format!("a creation position part is negative: {stored}")))
}
