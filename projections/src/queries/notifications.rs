//! The notifications model's rows: a recipient's messages, newest first.

use stay_store::{Position, Row, SqlDatabase, StoreError};

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

/// A message's id and the feed position of the event that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotificationMark {
    /// The message.
    pub notification_id: String,
    /// The position of the event it was made for.
    pub position: Position,
}

/// `recipient`'s messages in version `v` made for events after `after`, oldest first, at most
/// `limit`, in one statement that the model's `(recipient, position)` index answers: what is new
/// for them since a position (the live signals of `GET /v1/me/live`).
pub async fn marks_after(
    db: &SqlDatabase,
    v: i64,
    recipient: &str,
    after: Position,
    limit: i64,
) -> Result<Vec<NotificationMark>, StoreError> {
    let sql = format!(
        "SELECT notification_id, position_major, position_minor FROM {} \
         WHERE recipient = $1 AND (position_major > $2 OR (position_major = $2 AND position_minor > $3)) \
         ORDER BY position_major, position_minor, notification_id LIMIT $4",
        notifications::table(v)
    );
    let part = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    let stored = |value: i64| {
        u64::try_from(value)
            .map_err(|_| StoreError::Decode(format!("a notification's position part is negative: {value}")))
    };
    db.rows(&sql, &[recipient.into(), part(after.major()).into(), part(after.minor()).into(), limit.into()])
        .await?
        .iter()
        .map(|row| {
            Ok(NotificationMark {
                notification_id: row.text("notification_id")?,
                position: Position::new(stored(row.int("position_major")?)?, stored(row.int("position_minor")?)?),
            })
        })
        .collect()
}
