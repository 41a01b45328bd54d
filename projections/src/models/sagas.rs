//! `sagas`: one row per reservation saga — status, step, last change — for the admin overview.
//!
//! Built from the saga's own events (`ReservationSaga` streams), read as JSON by their stable type
//! names so this crate does not depend on the saga's.

use async_trait::async_trait;
use serde_json::Value;
use stay_store::{RecordedEvent, SqlTransaction};

use crate::model::{ApplyError, ReadModel};

/// The aggregate type of the reservation saga's streams: the saga's `Aggregate::TYPE`, which this
/// crate cannot name (role crates do not depend on each other); a test of the binary, which knows
/// both, holds the two equal.
pub const SAGA_TYPE: &str = "ReservationSaga";

/// The saga overview read model.
#[derive(Debug, Default)]
pub struct Sagas;

/// The sagas table of version `v`.
pub fn table(v: i64) -> String {
    format!("sagas_v{v}")
}

#[async_trait]
impl ReadModel for Sagas {
    fn name(&self) -> &'static str {
        "sagas"
    }

    fn create(&self, v: i64) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                saga_id TEXT PRIMARY KEY, status TEXT NOT NULL, step TEXT NOT NULL, outcome TEXT,
                updated_at TEXT NOT NULL, position TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS {t}_status ON {t} (status, saga_id);",
            t = table(v)
        )
    }

    fn tables(&self, v: i64) -> Vec<String> {
        vec![table(v)]
    }

    fn wants(&self, event: &RecordedEvent) -> bool {
        event.aggregate_type == SAGA_TYPE
    }

    async fn apply(&self, tx: &mut SqlTransaction, v: i64, event: &RecordedEvent) -> Result<(), ApplyError> {
        let body = event.payload.get(&event.event_type).cloned().unwrap_or(Value::Null);
        let step = body.get("step").and_then(Value::as_str);
        let (status, step, outcome): (Option<&str>, Option<&str>, Option<String>) = match event.event_type.as_str() {
            "SagaStarted" => (Some("running"), Some("start"), None),
            "SagaParked" => (Some("parked"), step, None),
            "SagaResumed" | "CompensationStarted" => (Some("running"), None, None),
            "SagaCompleted" => {
                let kind = body.pointer("/outcome/kind").and_then(Value::as_str).unwrap_or("");
                let status = if kind == "confirmed" { "completed" } else { "compensated" };
                (Some(status), None, Some(kind.to_owned()))
            }
            _ => (None, step, None),
        };
        let at = event.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        tx.run(
            &format!(
                "INSERT INTO {} (saga_id, status, step, outcome, updated_at, position) \
                 VALUES ($1, COALESCE($2, 'running'), COALESCE($3, 'start'), $4, $5, $6) \
                 ON CONFLICT (saga_id) DO UPDATE SET status = COALESCE($2, {t}.status), step = COALESCE($3, {t}.step), \
                   outcome = COALESCE($4, {t}.outcome), updated_at = $5, position = $6",
                table(v),
                t = table(v)
            ),
            &[
                event.aggregate_id.as_str().into(),
                status.into(),
                step.into(),
                outcome.into(),
                at.into(),
                event.position.to_string().into(),
            ],
        )
        .await?;
        Ok(())
    }
}
