//! roomview's rows: one room, a page of rooms, whether a room exists.

use stay_store::{Arg, Row, SqlDatabase, StoreError};

use crate::models::roomview::{self, Booked};

const COLUMNS: &str = "room_id, host_id, name, description, address, price_minor, currency, capacity, listed, \
    pending, confirmed, cancelled, rejected, booked, charged_minor, refunded_minor, review_count, rating_sum, \
    updated_at, position";

/// One room as roomview holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomRow {
    /// The room.
    pub room_id: String,
    /// Its host.
    pub host_id: String,
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Its address.
    pub address: String,
    /// The nightly price, in minor units of `currency`.
    pub price_minor: i64,
    /// The currency of every amount of the room.
    pub currency: String,
    /// Guests it sleeps.
    pub capacity: i64,
    /// Whether it is on the market.
    pub listed: bool,
    /// Reservations waiting for the saga.
    pub pending: i64,
    /// Confirmed reservations.
    pub confirmed: i64,
    /// Cancelled reservations.
    pub cancelled: i64,
    /// Rejected reservations.
    pub rejected: i64,
    /// Booked stays, past ones included.
    pub booked: Vec<Booked>,
    /// Money charged for its reservations, in minor units.
    pub charged_minor: i64,
    /// Money refunded, in minor units.
    pub refunded_minor: i64,
    /// Reviews.
    pub review_count: i64,
    /// The sum of their ratings.
    pub rating_sum: i64,
    /// When an event last touched it (RFC 3339).
    pub updated_at: String,
    /// The feed position of that event.
    pub position: String,
}

impl RoomRow {
    fn read(row: &Row) -> Result<Self, StoreError> {
        let listed = match row.int("listed")? {
            0 => false,
            1 => true,
            other => return Err(StoreError::Decode(format!("column `listed`: {other} is neither 0 nor 1"))),
        };
        Ok(Self {
            room_id: row.text("room_id")?,
            host_id: row.text("host_id")?,
            name: row.text("name")?,
            description: row.text("description")?,
            address: row.text("address")?,
            price_minor: row.int("price_minor")?,
            currency: row.text("currency")?,
            capacity: row.int("capacity")?,
            listed,
            pending: row.int("pending")?,
            confirmed: row.int("confirmed")?,
            cancelled: row.int("cancelled")?,
            rejected: row.int("rejected")?,
            booked: row.json("booked")?,
            charged_minor: row.int("charged_minor")?,
            refunded_minor: row.int("refunded_minor")?,
            review_count: row.int("review_count")?,
            rating_sum: row.int("rating_sum")?,
            updated_at: row.text("updated_at")?,
            position: row.text("position")?,
        })
    }
}

/// Which rooms a page holds.
#[derive(Clone, Debug, Default)]
pub struct RoomPage<'a> {
    /// Only this host's rooms.
    pub host_id: Option<&'a str>,
    /// Rooms after this id (the previous page's last), in id order.
    pub after: &'a str,
    /// At most this many.
    pub limit: i64,
}

/// One room of version `v`, if it exists.
pub async fn room(db: &SqlDatabase, v: i64, room_id: &str) -> Result<Option<RoomRow>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM {} WHERE room_id = $1", roomview::table(v));
    db.rows(&sql, &[room_id.into()]).await?.first().map(RoomRow::read).transpose()
}

/// A page of rooms of version `v`, in id order.
pub async fn rooms(db: &SqlDatabase, v: i64, page: &RoomPage<'_>) -> Result<Vec<RoomRow>, StoreError> {
    let table = roomview::table(v);
    let rows = match page.host_id {
        Some(host) => {
            let sql =
                format!("SELECT {COLUMNS} FROM {table} WHERE host_id = $1 AND room_id > $2 ORDER BY room_id LIMIT $3");
            db.rows(&sql, &[host.into(), page.after.into(), page.limit.into()]).await?
        }
        None => {
            let sql = format!("SELECT {COLUMNS} FROM {table} WHERE room_id > $1 ORDER BY room_id LIMIT $2");
            db.rows(&sql, &[page.after.into(), page.limit.into()]).await?
        }
    };
    rows.iter().map(RoomRow::read).collect()
}

/// Whether version `v` knows the room.
pub async fn exists(db: &SqlDatabase, v: i64, room_id: &str) -> Result<bool, StoreError> {
    let sql = format!("SELECT 1 AS found FROM {} WHERE room_id = $1", roomview::table(v));
    let id: Arg = room_id.into();
    Ok(!db.rows(&sql, std::slice::from_ref(&id)).await?.is_empty())
}
