//! A guest's reservations one page at a time, newest first, for `GET /v1/me/reservations`.
//!
//! The page is found by its keys in the reservations model (`guest_id` and the position of the
//! event that created each reservation, which its index covers), then each row is read through the
//! model's own typed query. The cursor is the creation position of the page's last reservation, so
//! paging never repeats or skips a reservation, even while new ones arrive at the top.
//!
//! The key query belongs beside `of_guest` in `stay_projections::queries::reservations`; it is
//! here until that crate, being reworked on another branch, can take it.

use futures::{StreamExt, TryStreamExt};
use stay_projections::models::reservations::table;
use stay_projections::queries::reservations::{self, ReservationRow};
use stay_store::{Position, SqlDatabase, StoreError};

/// The rows of one page are read this many at a time.
const READS_AT_ONCE: usize = 8;

/// One page of a guest's reservations and the cursor of the next, if there may be one.
#[derive(Debug)]
pub struct GuestPage {
    /// The reservations, newest first.
    pub rows: Vec<ReservationRow>,
    /// Where the next page starts: the creation position of the last row of a full page.
    pub next: Option<Position>,
}

/// At most `limit` of `guest_id`'s reservations in version `v`, created before `before` (or the
/// newest, without it), newest first.
pub async fn page(
    db: &SqlDatabase,
    v: i64,
    guest_id: &str,
    before: Option<Position>,
    limit: i64,
) -> Result<GuestPage, StoreError> {
    let t = table(v);
    let keys = match before {
        None => {
            let sql = format!(
                "SELECT reservation_id, created_position_major, created_position_minor FROM {t} WHERE guest_id = $1 \
                 ORDER BY created_position_major DESC, created_position_minor DESC LIMIT $2"
            );
            db.rows(&sql, &[guest_id.into(), limit.into()]).await?
        }
        Some(before) => {
            let sql = format!(
                "SELECT reservation_id, created_position_major, created_position_minor FROM {t} WHERE guest_id = $1 \
                 AND (created_position_major < $2 OR (created_position_major = $2 AND created_position_minor < $3)) \
                 ORDER BY created_position_major DESC, created_position_minor DESC LIMIT $4"
            );
            let (major, minor) = (stored(before.major()), stored(before.minor()));
            db.rows(&sql, &[guest_id.into(), major.into(), minor.into(), limit.into()]).await?
        }
    };
    let mut ids = Vec::with_capacity(keys.len());
    let mut last = None;
    for key in &keys {
        ids.push(key.text("reservation_id")?);
        let major = position_part(key.int("created_position_major")?)?;
        let minor = position_part(key.int("created_position_minor")?)?;
        last = Some(Position::new(major, minor));
    }
    let rows: Vec<ReservationRow> = futures::stream::iter(ids)
        .map(|id| async move {
            reservations::reservation(db, v, &id)
                .await?
                .ok_or_else(|| StoreError::Decode(format!("reservation {id} left version {v} while it was read")))
        })
        .buffered(READS_AT_ONCE)
        .try_collect()
        .await?;
    let full = i64::try_from(rows.len()).unwrap_or(i64::MAX) >= limit;
    Ok(GuestPage { rows, next: last.filter(|_| full) })
}

/// A position part as the model stores it (a signed 64-bit integer).
fn stored(part: u64) -> i64 {
    i64::try_from(part).unwrap_or(i64::MAX)
}

/// A stored position part back as a position's.
fn position_part(stored: i64) -> Result<u64, StoreError> {
    u64::try_from(stored).map_err(|_| StoreError::Decode(format!("a creation position part is negative: {stored}")))
}
