//! roomview's rows as a batch reads and writes them: the rows it touches read with a few
//! `WHERE … IN (…)` queries, the rows it changed written with a few multi-row upserts
//! (`INSERT … ON CONFLICT … DO UPDATE`, which both SQLite and PostgreSQL take).
//!
//! Statement sizes come from a small fixed set (powers of two), so that the few statement texts a
//! batch uses stay in each connection's prepared-statement cache instead of one text per size.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use stay_store::{Arg, Row, SqlTransaction, StoreError};

use super::fold::{BookedStays, ReservationRecord, RoomRecord};
use super::{reservations_table, table};

/// The most bind parameters one statement takes. Far below what either database allows (SQLite
/// 32 766, PostgreSQL 65 535): sqlx binds each SQLite parameter by looking up its name, which
/// SQLite finds by a scan, so binding costs the square of a statement's parameters. A rebuild's
/// profile had 5% of its time there with 32 rooms (640 parameters) a statement; at this width
/// that cost is small beside a statement's round trip.
const MAX_PARAMS: usize = 256;

/// The columns of a room's row, in the order `room_args` binds them.
const ROOM_COLUMNS: [&str; 20] = [
    "room_id",
    "host_id",
    "name",
    "description",
    "address",
    "price_minor",
    "currency",
    "capacity",
    "listed",
    "pending",
    "confirmed",
    "cancelled",
    "rejected",
    "booked",
    "charged_minor",
    "refunded_minor",
    "review_count",
    "rating_sum",
    "updated_at",
    "position",
];

/// The columns of a reservation's row, in the order `write_reservations` binds them.
const RESERVATION_COLUMNS: [&str; 3] = ["reservation_id", "room_id", "status"];

/// Each room named in `ids` with its row of version `v`, or `None` where it has none.
pub(super) async fn read_rooms(
    tx: &mut SqlTransaction,
    v: i64,
    ids: BTreeSet<&str>,
) -> Result<Vec<(String, Option<RoomRecord>)>, StoreError> {
    let select = format!("SELECT {} FROM {} WHERE room_id IN", ROOM_COLUMNS.join(", "), table(v));
    let mut found = HashMap::new();
    for row in read_by_id(tx, &select, &ids).await? {
        found.insert(row.text("room_id")?, room_record(&row)?);
    }
    Ok(ids.into_iter().map(|id| (id.to_owned(), found.remove(id))).collect())
}

/// Each reservation named in `ids` with its row of version `v`, or `None` where it has none.
pub(super) async fn read_reservations(
    tx: &mut SqlTransaction,
    v: i64,
    ids: BTreeSet<&str>,
) -> Result<Vec<(String, Option<ReservationRecord>)>, StoreError> {
    let select =
        format!("SELECT {} FROM {} WHERE reservation_id IN", RESERVATION_COLUMNS.join(", "), reservations_table(v));
    let mut found = HashMap::new();
    for row in read_by_id(tx, &select, &ids).await? {
        let record = ReservationRecord { room_id: row.text("room_id")?, status: row.text("status")? };
        found.insert(row.text("reservation_id")?, record);
    }
    Ok(ids.into_iter().map(|id| (id.to_owned(), found.remove(id))).collect())
}

/// Writes the rooms' rows to version `v`: inserts the new, replaces the changed.
pub(super) async fn write_rooms<'a>(
    tx: &mut SqlTransaction,
    v: i64,
    rooms: impl Iterator<Item = (&'a str, &'a RoomRecord)>,
) -> Result<(), StoreError> {
    let rows = rooms.map(|(id, room)| room_args(id, room)).collect::<Result<Vec<_>, _>>()?;
    upsert(tx, &table(v), &ROOM_COLUMNS, rows).await
}

/// Writes the reservations' rows to version `v`: inserts the new, replaces the changed.
pub(super) async fn write_reservations<'a>(
    tx: &mut SqlTransaction,
    v: i64,
    reservations: impl Iterator<Item = (&'a str, &'a ReservationRecord)>,
) -> Result<(), StoreError> {
    let rows = reservations
        .map(|(id, reservation)| {
            vec![id.into(), reservation.room_id.as_str().into(), reservation.status.as_str().into()]
        })
        .collect();
    upsert(tx, &reservations_table(v), &RESERVATION_COLUMNS, rows).await
}

/// A room's row as read.
fn room_record(row: &Row) -> Result<RoomRecord, StoreError> {
    Ok(RoomRecord {
        host_id: row.text("host_id")?,
        name: row.text("name")?,
        description: row.text("description")?,
        address: row.text("address")?,
        price_minor: row.int("price_minor")?,
        currency: row.text("currency")?,
        capacity: row.int("capacity")?,
        listed: row.int("listed")?,
        pending: row.int("pending")?,
        confirmed: row.int("confirmed")?,
        cancelled: row.int("cancelled")?,
        rejected: row.int("rejected")?,
        booked: BookedStays::stored(row.text("booked")?),
        charged_minor: row.int("charged_minor")?,
        refunded_minor: row.int("refunded_minor")?,
        review_count: row.int("review_count")?,
        rating_sum: row.int("rating_sum")?,
        updated_at: row.text("updated_at")?,
        position: row.text("position")?,
    })
}

/// A room's row as arguments, in the order of `ROOM_COLUMNS`.
fn room_args(room_id: &str, room: &RoomRecord) -> Result<Vec<Arg>, StoreError> {
    Ok(vec![
        room_id.into(),
        room.host_id.as_str().into(),
        room.name.as_str().into(),
        room.description.as_str().into(),
        room.address.as_str().into(),
        room.price_minor.into(),
        room.currency.as_str().into(),
        room.capacity.into(),
        room.listed.into(),
        room.pending.into(),
        room.confirmed.into(),
        room.cancelled.into(),
        room.rejected.into(),
        room.booked.json()?.into(),
        room.charged_minor.into(),
        room.refunded_minor.into(),
        room.review_count.into(),
        room.rating_sum.into(),
        room.updated_at.as_str().into(),
        room.position.as_str().into(),
    ])
}

/// The rows `select` (`SELECT … WHERE key IN`) finds for `ids`. Each query takes up to a power
/// of two of ids, the last id repeated to fill it (a repeat in `IN` changes nothing).
async fn read_by_id(tx: &mut SqlTransaction, select: &str, ids: &BTreeSet<&str>) -> Result<Vec<Row>, StoreError> {
    let ids: Vec<&str> = ids.iter().copied().collect();
    let most = widest(1);
    let mut rows = Vec::new();
    for chunk in ids.chunks(most) {
        let Some(last) = chunk.last() else { continue };
        let width = chunk.len().next_power_of_two();
        let args: Vec<Arg> = chunk.iter().chain(std::iter::repeat(last)).take(width).map(|id| (*id).into()).collect();
        let sql = format!("{select} ({})", placeholders(1, width));
        rows.extend(tx.rows(&sql, &args).await?);
    }
    Ok(rows)
}

/// Inserts `rows` (each the values of `columns`, the first being the key) into `table`, or
/// replaces the rows with the same key.
async fn upsert(tx: &mut SqlTransaction, table: &str, columns: &[&str], rows: Vec<Vec<Arg>>) -> Result<(), StoreError> {
    let Some((key, others)) = columns.split_first() else { return Ok(()) };
    let updates: Vec<String> = others.iter().map(|column| format!("{column} = excluded.{column}")).collect();
    let head = format!("INSERT INTO {table} ({}) VALUES", columns.join(", "));
    let tail = format!("ON CONFLICT ({key}) DO UPDATE SET {}", updates.join(", "));
    let mut rows = rows.into_iter();
    for size in statement_sizes(rows.len(), columns.len()) {
        let values = (0..size)
            .map(|row| format!("({})", placeholders(row * columns.len() + 1, columns.len())))
            .collect::<Vec<_>>()
            .join(", ");
        let args: Vec<Arg> = rows.by_ref().take(size).flatten().collect();
        tx.run(&format!("{head} {values} {tail}"), &args).await?;
    }
    Ok(())
}

/// The most rows of `width` parameters one statement takes: a power of two within `MAX_PARAMS`.
fn widest(width: usize) -> usize {
    let fit = (MAX_PARAMS / width.max(1)).max(1);
    // The largest power of two not above `fit`.
    1 << (usize::BITS - 1 - fit.leading_zeros())
}

/// How many rows each statement writes, for `rows` rows of `width` parameters: as many of the
/// widest as fit, then the rest by its binary digits, so every size is a power of two.
fn statement_sizes(rows: usize, width: usize) -> Vec<usize> {
    let most = widest(width);
    let rest = rows % most;
    let mut sizes = vec![most; rows / most];
    sizes.extend((0..usize::BITS).rev().map(|bit| 1 << bit).filter(|size| rest & size != 0));
    sizes
}

/// `$first, $first+1, …`, `count` of them.
fn placeholders(first: usize, count: usize) -> String {
    let mut text = String::with_capacity(count * 6);
    for n in first..first + count {
        let comma = if n > first { ", " } else { "" };
        // Writing to a String cannot fail.
        let _ = write!(text, "{comma}${n}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_take_powers_of_two_of_rows_within_the_parameter_limit() {
        assert_eq!(widest(20), 8, "8 rooms of 20 columns are 160 parameters");
        assert_eq!(widest(3), 64);
        assert_eq!(widest(1), 256);
        assert_eq!(widest(2000), 1, "a row wider than the limit still goes, alone");
        assert_eq!(statement_sizes(0, 20), Vec::<usize>::new());
        assert_eq!(statement_sizes(1, 20), vec![1]);
        assert_eq!(statement_sizes(35, 20), vec![8, 8, 8, 8, 2, 1]);
        assert_eq!(statement_sizes(128, 3), vec![64, 64]);
        for rows in 0..600 {
            let sizes = statement_sizes(rows, 20);
            assert_eq!(sizes.iter().sum::<usize>(), rows, "every row written once");
            assert!(sizes.iter().all(|size| size.is_power_of_two() && size * 20 <= MAX_PARAMS), "{sizes:?}");
        }
    }

    #[test]
    fn placeholders_are_numbered_from_the_first() {
        assert_eq!(placeholders(1, 3), "$1, $2, $3");
        assert_eq!(placeholders(21, 2), "$21, $22");
    }
}
