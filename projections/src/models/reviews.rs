//! `reviews`: each room's reviews with the host's reply.

use async_trait::async_trait;
use stay_domain::{Review, ReviewEvent};
use stay_store::{RecordedEvent, SqlTransaction};

use crate::model::{decode, ApplyError, ReadModel};

/// The reviews read model.
#[derive(Debug, Default)]
pub struct Reviews;

/// The reviews table of version `v`.
pub fn table(v: i64) -> String {
    format!("reviews_v{v}")
}

#[async_trait]
impl ReadModel for Reviews {
    fn name(&self) -> &'static str {
        "reviews"
    }

    fn create(&self, v: i64) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                review_id TEXT PRIMARY KEY, room_id TEXT NOT NULL, reservation_id TEXT NOT NULL, guest_id TEXT NOT NULL,
                rating BIGINT NOT NULL, comment TEXT NOT NULL, reply TEXT, created_at TEXT NOT NULL,
                position_major BIGINT NOT NULL, position_minor BIGINT NOT NULL);
             CREATE INDEX IF NOT EXISTS {t}_room ON {t} (room_id, position_major, position_minor);",
            t = table(v)
        )
    }

    fn tables(&self, v: i64) -> Vec<String> {
        vec![table(v)]
    }

    fn wants(&self, event: &RecordedEvent) -> bool {
        event.aggregate_type == "Review"
    }

    async fn apply(&self, tx: &mut SqlTransaction, v: i64, event: &RecordedEvent) -> Result<(), ApplyError> {
        match decode::<Review>(event)? {
            ReviewEvent::ReviewPosted { review_id, room_id, reservation_id, guest_id, rating, comment } => {
                tx.run(
                    &format!(
                        "INSERT INTO {} (review_id, room_id, reservation_id, guest_id, rating, comment, created_at, \
                           position_major, position_minor) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                         ON CONFLICT (review_id) DO NOTHING",
                        table(v)
                    ),
                    &[
                        review_id.to_string().into(),
                        room_id.to_string().into(),
                        reservation_id.to_string().into(),
                        guest_id.as_str().into(),
                        i64::from(rating.get()).into(),
                        comment.as_str().into(),
                        event.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true).into(),
                        i64::try_from(event.position.major()).unwrap_or(i64::MAX).into(),
                        i64::try_from(event.position.minor()).unwrap_or(i64::MAX).into(),
                    ],
                )
                .await?;
            }
            ReviewEvent::ReplyPosted { review_id, comment, .. } => {
                tx.run(
                    &format!("UPDATE {} SET reply = $2 WHERE review_id = $1", table(v)),
                    &[review_id.to_string().into(), comment.as_str().into()],
                )
                .await?;
            }
        }
        Ok(())
    }
}
