//! The notifications model's rows: a recipient's messages, newest first.

use stay_store::{Row, SqlDatabase, StoreError};

use crate::models::notifications;

/// A message as the notifications model holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotificationRow {
    /// The message (one per recipient per event).
    pub notification_id: String,
    /// What it is about (`reservation_confirmed`, …).
    pub kind: String,
    /// The reservation it is about, if any.
    pub reservation_id: Option<String>,
    /// The room it is about, if any.
    pub room_id: Option<String>,
    /// The text.
    pub message: String,
    /// When (RFC 3339).
    pub created_at: String,
}

impl NotificationRow {
    fn read(row: &Row) -> Result<Self, StoreError> {
        Ok(Self {
            notification_id: row.text("notification_id")?,
            kind: row.text("kind")?,
            reservation_id: row.opt_text("reservation_id")?,
            room_id: row.opt_text("room_id")?,
            message: row.text("message")?,
            created_at: row.text("created_at")?,
        })
    }
}

/// `recipient`'s newest messages in version `v`, at most `limit`.
pub async fn of_recipient(
    db: &SqlDatabase,
    v: i64,
    recipient: &str,
    limit: i64,
) -> Result<Vec<NotificationRow>, StoreError> {
    let sql = format!(
        "SELECT notification_id, kind, reservation_id, room_id, message, created_at FROM {} \
         WHERE recipient = $1 ORDER BY position_major DESC, position_minor DESC, kind, notification_id LIMIT $2",
        notifications::table(v)
    );
    db.rows(&sql, &[recipient.into(), limit.into()]).await?.iter().map(NotificationRow::read).collect()
}
