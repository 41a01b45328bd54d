//! Events a model could not apply, parked in `projection_dead_letters` with their error and body.
//!
//! Once an event of an aggregate is parked, that aggregate is blocked for the version: its later
//! events are parked behind it, so they are never applied out of order, while other aggregates go
//! on. Parked events show in the admin list and `stay projections status`.

use std::collections::HashSet;
use std::fmt;

use chrono::Utc;
use serde::Serialize;
use stay_store::{Arg, RecordedEvent, SqlDatabase, SqlTransaction, StoreError};

/// Why an event is parked although it was never tried: an earlier event of its aggregate is.
pub(crate) const HELD_BEHIND: &str = "held behind an earlier parked event of the same aggregate";

/// A parked event, as the admin list shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetter {
    /// Its feed position.
    pub position: String,
    /// Its aggregate.
    pub aggregate_type: String,
    /// Its aggregate's id.
    pub aggregate_id: String,
    /// Its type.
    pub event_type: String,
    /// Why it was parked.
    pub error: String,
}

/// Why an event was parked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The model refused it, as often as it was tried: the model's error.
    Poison(String),
    /// It was not tried: an earlier event of its aggregate is parked.
    HeldBehind,
}

impl Reason {
    /// The reason as the dead letter keeps it.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Reason::Poison(error) => error,
            Reason::HeldBehind => HELD_BEHIND,
        }
    }
}

/// An event a batch parked, to report once the batch has committed (a batch rolled back parked nothing).
#[derive(Debug)]
pub(crate) struct Parked<'a> {
    /// The event.
    pub(crate) event: &'a RecordedEvent,
    /// Why.
    pub(crate) reason: Reason,
}

impl Parked<'_> {
    /// Logs the parked event with what a person would search for, and counts a refused one.
    pub(crate) fn report(&self, projection: &'static str, v: i64) {
        let event = self.event;
        let correlation_id = event.metadata_field("correlation_id");
        match &self.reason {
            Reason::Poison(error) => {
                metrics::counter!("stay_projection_parked_total", "projection" => projection).increment(1);
                tracing::warn!(
                    projection,
                    version = v,
                    position = %event.position,
                    aggregate_type = %event.aggregate_type,
                    aggregate_id = %event.aggregate_id,
                    correlation_id,
                    event_type = %event.event_type,
                    %error,
                    "event parked: the read model cannot apply it"
                );
            }
            Reason::HeldBehind => tracing::info!(
                projection,
                version = v,
                position = %event.position,
                aggregate_type = %event.aggregate_type,
                aggregate_id = %event.aggregate_id,
                correlation_id,
                event_type = %event.event_type,
                "event parked behind an earlier parked event of its aggregate"
            ),
        }
    }
}

/// An aggregate, as `(aggregate_type, aggregate_id)`.
pub(crate) type AggregateKey = (String, String);

/// The aggregate of an event.
pub(crate) fn aggregate_of(event: &RecordedEvent) -> AggregateKey {
    (event.aggregate_type.clone(), event.aggregate_id.clone())
}

/// The aggregates with a parked event in version `v` of `name`: their later events wait behind it.
pub(crate) async fn blocked(tx: &mut SqlTransaction, name: &str, v: i64) -> Result<HashSet<AggregateKey>, StoreError> {
    let rows = tx
        .rows(
            "SELECT DISTINCT aggregate_type, aggregate_id FROM projection_dead_letters WHERE projection = $1 AND version = $2",
            &[name.into(), v.into()],
        )
        .await?;
    rows.iter().map(|row| Ok((row.text("aggregate_type")?, row.text("aggregate_id")?))).collect()
}

/// Parks `event` for version `v` of `name` with the reason it was not applied, inside the batch's
/// transaction; an event parked before stays as it was.
pub(crate) async fn park(
    tx: &mut SqlTransaction,
    name: &str,
    v: i64,
    event: &RecordedEvent,
    error: &str,
) -> Result<(), StoreError> {
    let body = body(event, format_args!("{} {} at {}", event.aggregate_type, event.event_type, event.position))?;
    tx.run(
        "INSERT INTO projection_dead_letters \
           (projection, version, position, aggregate_type, aggregate_id, event_type, error, event, parked_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
        &[
            name.into(),
            v.into(),
            event.position.to_string().into(),
            event.aggregate_type.as_str().into(),
            event.aggregate_id.as_str().into(),
            event.event_type.as_str().into(),
            error.into(),
            body.into(),
            Arg::Int(Utc::now().timestamp_millis()),
        ],
    )
    .await?;
    Ok(())
}

/// The JSON body kept with a dead letter, so a person can see what was parked. A body that cannot
/// be written is an error: a dead letter without its event could be neither retried nor judged.
pub(crate) fn body(event: &impl Serialize, what: fmt::Arguments<'_>) -> Result<String, StoreError> {
    serde_json::to_string(event)
        .map_err(|err| StoreError::Decode(format!("{what} cannot be written as a dead letter's body: {err}")))
}

/// The parked events of version `v` of `name`, oldest first (at most 100).
pub(crate) async fn list(db: &SqlDatabase, name: &str, v: i64) -> Result<Vec<DeadLetter>, StoreError> {
    db.rows(
        "SELECT position, aggregate_type, aggregate_id, event_type, error FROM projection_dead_letters \
         WHERE projection = $1 AND version = $2 ORDER BY parked_at_ms, position LIMIT 100",
        &[name.into(), v.into()],
    )
    .await?
    .iter()
    .map(|row| {
        Ok(DeadLetter {
            position: row.text("position")?,
            aggregate_type: row.text("aggregate_type")?,
            aggregate_id: row.text("aggregate_id")?,
            event_type: row.text("event_type")?,
            error: row.text("error")?,
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use serde::Serializer;
    use serde_json::Value;

    use super::*;
    use crate::runner::testing::{Fixture, Probe, POISON};
    use crate::runner::versions::initialize;
    use crate::runner::RunnerConfig;

    /// A value whose serialisation always fails.
    struct Unwritable;

    impl Serialize for Unwritable {
        fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("this value refuses to be written"))
        }
    }

    async fn bodies(f: &Fixture) -> Vec<(String, Value)> {
        let rows =
            f.db.rows(
                "SELECT position, event FROM projection_dead_letters WHERE projection = 'probe' ORDER BY position",
                &[],
            )
            .await
            .expect("rows");
        rows.iter().map(|row| (row.text("position").expect("position"), row.json("event").expect("event"))).collect()
    }

    #[test]
    fn a_body_that_cannot_be_written_is_an_error_not_an_empty_string() {
        let refused = body(&Unwritable, format_args!("Probe Noted at 7"));

        match refused {
            Err(StoreError::Decode(why)) => {
                assert!(why.contains("Probe Noted at 7") && why.contains("refuses to be written"), "{why}");
            }
            other => panic!("expected a decode error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_poison_event_is_parked_with_its_error_and_body_and_its_aggregates_later_events_wait_behind_it() {
        let f = Fixture::new().await;
        let model = Probe::default();
        initialize(&f.db, &model).await.expect("initialize");
        let a1 = f.note("a", false).await;
        let a2 = f.note("a", true).await;
        let b1 = f.note("b", false).await;
        let a3 = f.note("a", false).await;
        let b2 = f.note("b", false).await;
        let projector = f.projector(RunnerConfig::default());

        let step = projector.step(&model, 1).await.expect("step");

        assert_eq!((step.read, step.at), (5, b2), "the batch went past the poison event");
        assert_eq!(f.rows(1).await, vec![(a1, "a".to_owned()), (b1, "b".to_owned()), (b2, "b".to_owned())]);
        let letters = list(&f.db, "probe", 1).await.expect("list");
        let parked: Vec<(String, &str, &str, &str)> = letters
            .iter()
            .map(|l| (l.position.clone(), l.aggregate_type.as_str(), l.aggregate_id.as_str(), l.error.as_str()))
            .collect();
        assert_eq!(parked, vec![(a2.to_string(), "Probe", "a", POISON), (a3.to_string(), "Probe", "a", HELD_BEHIND)]);
        let bodies = bodies(&f).await;
        assert_eq!(bodies.len(), 2, "{bodies:?}");
        let (position, event) = &bodies[0];
        assert_eq!(position, &a2.to_string());
        assert_eq!((&event["position"], &event["aggregate_id"]), (&Value::from(a2.to_string()), &Value::from("a")));
        assert_eq!(event["payload"]["poison"], Value::Bool(true), "the body is the event as it was read: {event}");
    }

    #[tokio::test]
    async fn a_poison_event_is_tried_as_often_as_configured_before_it_is_parked() {
        let f = Fixture::new().await;
        let model = Probe::default();
        initialize(&f.db, &model).await.expect("initialize");
        f.note("a", true).await;
        let projector = f.projector(RunnerConfig { attempts: 3, ..RunnerConfig::default() });

        projector.step(&model, 1).await.expect("step");

        // Once straight through, then three times on its own in a savepoint.
        assert_eq!(model.poison_attempts(), 4);
        assert_eq!(list(&f.db, "probe", 1).await.expect("list").len(), 1);
    }

    #[tokio::test]
    async fn a_blocked_aggregates_events_in_later_batches_are_parked_too() {
        let f = Fixture::new().await;
        let model = Probe::default();
        initialize(&f.db, &model).await.expect("initialize");
        f.note("a", true).await;
        let projector = f.projector(RunnerConfig::default());
        projector.step(&model, 1).await.expect("step");
        let later = f.note("a", false).await;
        let other = f.note("b", false).await;

        projector.step(&model, 1).await.expect("step");

        assert_eq!(f.rows(1).await, vec![(other, "b".to_owned())]);
        let letters = list(&f.db, "probe", 1).await.expect("list");
        assert_eq!(
            letters.last().map(|l| (l.position.clone(), l.error.as_str())),
            Some((later.to_string(), HELD_BEHIND))
        );
        let mut tx = f.db.begin().await.expect("begin");
        let blocked = blocked(&mut tx, "probe", 1).await.expect("blocked");
        tx.rollback().await.expect("rollback");
        assert_eq!(blocked, HashSet::from([("Probe".to_owned(), "a".to_owned())]));
        assert!(list(&f.db, "probe", 2).await.expect("list").is_empty(), "dead letters belong to one version");
    }
}
