//! The reviews model's rows: a room's reviews, oldest first.

use stay_store::{Row, SqlDatabase, StoreError};

use crate::models::reviews;

/// A review as the reviews model holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewRow {
    /// The review.
    pub review_id: String,
    /// The stay it reviews.
    pub reservation_id: String,
    /// Who wrote it.
    pub guest_id: String,
    /// 1 to 5.
    pub rating: i64,
    /// What the guest said.
    pub comment: String,
    /// The host's reply, once given.
    pub reply: Option<String>,
    /// When it was posted (RFC 3339).
    pub created_at: String,
}

impl ReviewRow {
    fn read(row: &Row) -> Result<Self, StoreError> {
        Ok(Self {
            review_id: row.text("review_id")?,
            reservation_id: row.text("reservation_id")?,
            guest_id: row.text("guest_id")?,
            rating: row.int("rating")?,
            comment: row.text("comment")?,
            reply: row.opt_text("reply")?,
            created_at: row.text("created_at")?,
        })
    }
}

/// A room's reviews in version `v`, oldest first.
pub async fn of_room(db: &SqlDatabase, v: i64, room_id: &str) -> Result<Vec<ReviewRow>, StoreError> {
    let sql = format!(
        "SELECT review_id, reservation_id, guest_id, rating, comment, reply, created_at FROM {} \
         WHERE room_id = $1 ORDER BY position_major, position_minor",
        reviews::table(v)
    );
    db.rows(&sql, &[room_id.into()]).await?.iter().map(ReviewRow::read).collect()
}
