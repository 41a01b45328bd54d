//! `correlations`: which events each correlation (a reservation, or any one command) caused, so
//! the audit route finds them through an index instead of reading the log.
//!
//! One row per event: its place (aggregate, sequence, position), its type and time, and the
//! metadata that links it into a causation tree (`correlation_id`, `causation_id`, `command_id`,
//! `actor`). Payloads stay in the log; a reader who wants one reads the aggregate's stream.
//! Every event of every aggregate is wanted, so the model works the same on every backend
//! (EventStoreDB included), and a batch is written as one multi-row insert per few hundred events.

use async_trait::async_trait;
use chrono::SecondsFormat;
use stay_store::{Arg, RecordedEvent, SqlTransaction};

use crate::model::{ApplyError, ReadModel};

/// Rows per statement (12 parameters each: well below both databases' limits).
const ROWS_PER_INSERT: usize = 200;

/// The columns a row fills, in the order [`row`] gives them.
const COLUMNS: [&str; 12] = [
    "aggregate_type",
    "aggregate_id",
    "sequence",
    "correlation_id",
    "causation_id",
    "command_id",
    "actor",
    "event_type",
    "recorded_at",
    "position",
    "position_major",
    "position_minor",
];

/// The correlations read model.
#[derive(Debug, Default)]
pub struct Correlations;

/// The correlations table of version `v`.
pub fn table(v: i64) -> String {
    format!("correlations_v{v}")
}

/// The values of an event's row, or `None` for an event that names no correlation (it belongs to
/// none, so no correlation can list it).
fn row(event: &RecordedEvent) -> Option<Vec<Arg>> {
    let correlation_id = event.metadata_field("correlation_id")?;
    let text = |key: &str| Arg::from(event.metadata_field(key));
    Some(vec![
        event.aggregate_type.as_str().into(),
        event.aggregate_id.as_str().into(),
        i64::try_from(event.sequence).unwrap_or(i64::MAX).into(),
        correlation_id.into(),
        text("causation_id"),
        text("command_id"),
        text("actor"),
        event.event_type.as_str().into(),
        event.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true).into(),
        event.position.to_string().into(),
        i64::try_from(event.position.major()).unwrap_or(i64::MAX).into(),
        i64::try_from(event.position.minor()).unwrap_or(i64::MAX).into(),
    ])
}

async fn insert(tx: &mut SqlTransaction, v: i64, rows: &[Vec<Arg>]) -> Result<(), ApplyError> {
    let width = COLUMNS.len();
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let values: Vec<String> = (0..chunk.len())
            .map(|r| {
                let params: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
                format!("({})", params.join(", "))
            })
            .collect();
        // A replayed event (after a crash between rows and checkpoint) is already there.
        let sql = format!(
            "INSERT INTO {} ({}) VALUES {} ON CONFLICT (aggregate_type, aggregate_id, sequence) DO NOTHING",
            table(v),
            COLUMNS.join(", "),
            values.join(", ")
        );
        let args: Vec<Arg> = chunk.iter().flatten().cloned().collect();
        tx.run(&sql, &args).await?;
    }
    Ok(())
}

#[async_trait]
impl ReadModel for Correlations {
    fn name(&self) -> &'static str {
        "correlations"
    }

    fn create(&self, v: i64) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                position TEXT NOT NULL UNIQUE,
                aggregate_type TEXT NOT NULL, aggregate_id TEXT NOT NULL, sequence BIGINT NOT NULL,
                correlation_id TEXT NOT NULL, causation_id TEXT, command_id TEXT, actor TEXT,
                event_type TEXT NOT NULL, recorded_at TEXT NOT NULL,
                position_major BIGINT NOT NULL, position_minor BIGINT NOT NULL,
                PRIMARY KEY (aggregate_type, aggregate_id, sequence));
             CREATE INDEX IF NOT EXISTS {t}_by_correlation ON {t} (correlation_id, position_major, position_minor);",
            t = table(v)
        )
    }

    fn tables(&self, v: i64) -> Vec<String> {
        vec![table(v)]
    }

    fn wants(&self, event: &RecordedEvent) -> bool {
        event.metadata_field("correlation_id").is_some()
    }

    async fn apply(&self, tx: &mut SqlTransaction, v: i64, event: &RecordedEvent) -> Result<(), ApplyError> {
        match row(event) {
            Some(values) => insert(tx, v, &[values]).await,
            None => Ok(()),
        }
    }

    async fn apply_batch(&self, tx: &mut SqlTransaction, v: i64, events: &[&RecordedEvent]) -> Result<(), ApplyError> {
        let rows: Vec<Vec<Arg>> = events.iter().filter_map(|event| row(event)).collect();
        insert(tx, v, &rows).await
    }
}
