//! The correlations model's rows: every event one correlation caused, in feed order.

use stay_store::{Row, SqlDatabase, StoreError};

use crate::models::correlations;

/// An event as the correlations model holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorrelatedEvent {
    /// Its aggregate's type.
    pub aggregate_type: String,
    /// Its aggregate's id.
    pub aggregate_id: String,
    /// Its sequence in the aggregate's stream.
    pub sequence: i64,
    /// Its feed position.
    pub position: String,
    /// Its stable type name.
    pub event_type: String,
    /// When it was recorded (RFC 3339).
    pub recorded_at: String,
    /// What caused the command that wrote it (a request, or another event as `Type:id@sequence`).
    pub causation_id: Option<String>,
    /// The command that wrote it.
    pub command_id: Option<String>,
    /// Who sent that command.
    pub actor: Option<String>,
}

impl CorrelatedEvent {
    fn read(row: &Row) -> Result<Self, StoreError> {
        Ok(Self {
            aggregate_type: row.text("aggregate_type")?,
            aggregate_id: row.text("aggregate_id")?,
            sequence: row.int("sequence")?,
            position: row.text("position")?,
            event_type: row.text("event_type")?,
            recorded_at: row.text("recorded_at")?,
            causation_id: row.opt_text("causation_id")?,
            command_id: row.opt_text("command_id")?,
            actor: row.opt_text("actor")?,
        })
    }
}

/// The events correlated to `correlation_id` in version `v`, in feed order (empty: none).
pub async fn of_correlation(
    db: &SqlDatabase,
    v: i64,
    correlation_id: &str,
) -> Result<Vec<CorrelatedEvent>, StoreError> {
    let sql = format!(
        "SELECT aggregate_type, aggregate_id, sequence, position, event_type, recorded_at, causation_id, \
           command_id, actor FROM {} WHERE correlation_id = $1 ORDER BY position_major, position_minor",
        correlations::table(v)
    );
    db.rows(&sql, &[correlation_id.into()]).await?.iter().map(CorrelatedEvent::read).collect()
}
