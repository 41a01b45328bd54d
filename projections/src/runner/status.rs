//! How far each model has got: its position, its lag behind the head of the feed, a rebuild's
//! progress and its parked events, for the admin list, `stay projections status` and the lag gauges.
//!
//! Lag is read from positions ([`EventStore::distance_after`]): a count the store answers from
//! its positions or index, and the time of the first event not yet applied. No event is read
//! whole or decoded, so a status costs the same however far behind a model is, and an event no
//! model can decode does not stop anyone seeing how far behind they are.

use std::sync::Arc;

use chrono::Utc;
use stay_store::{EventStore, Position, SqlDatabase, StoreError};

use super::dead_letters::{self, DeadLetter};
use super::versions::{checkpoint_name, versions};
use crate::model::ReadModel;

/// How many events behind a status counts, at most (exact on SQLite below it; PostgreSQL counts
/// index entries, EventStoreDB reads `$all`, so the cap bounds their work).
const STATUS_LAG_CAP: u64 = 1_000_000;

/// How many events behind the lag gauges count, at most (they are set every second).
const GAUGE_LAG_CAP: u64 = 100_000;

/// How far a model has got.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ProjectionStatus {
    /// The model.
    pub name: String,
    /// The live version.
    pub version: i64,
    /// The live version's checkpoint.
    pub position: String,
    /// Events in the feed after it (counted up to 1,000,000).
    pub lag_events: u64,
    /// Age of the oldest event not yet applied, in milliseconds (0 when caught up).
    pub lag_ms: i64,
    /// `running`, `catching_up` or `rebuilding`.
    pub status: String,
    /// The version being rebuilt and how far it has got, if one is.
    pub rebuild: Option<RebuildStatus>,
    /// Parked events of the live version.
    pub dead_letters: Vec<DeadLetter>,
}

/// A rebuild's progress.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RebuildStatus {
    /// The version being built.
    pub version: i64,
    /// Its checkpoint.
    pub position: String,
    /// Events it still has to read (counted up to 1,000,000).
    pub lag_events: u64,
}

/// Events after `after` (up to `cap`) and the age of the first of them in milliseconds (how long
/// the oldest event not yet applied has waited; 0 when there is none), from positions alone.
pub async fn lag(store: &EventStore, after: Position, cap: u64) -> Result<(u64, i64), StoreError> {
    let distance = store.distance_after(after, cap).await?;
    let age = distance.first_recorded_at.map_or(0, |at| (Utc::now() - at).num_milliseconds().max(0));
    Ok((distance.events, age))
}

/// The status of each model.
pub async fn statuses(
    store: &EventStore,
    db: &SqlDatabase,
    models: &[Arc<dyn ReadModel>],
) -> Result<Vec<ProjectionStatus>, StoreError> {
    let mut all = Vec::new();
    for model in models {
        let name = model.name();
        let versions = versions(db, name).await?;
        let position = db.checkpoint(&checkpoint_name(name, versions.live)).await?;
        let (lag_events, lag_ms) = lag(store, position, STATUS_LAG_CAP).await?;
        let rebuild = match versions.building {
            Some(v) => {
                let at = db.checkpoint(&checkpoint_name(name, v)).await?;
                let (behind, _) = lag(store, at, STATUS_LAG_CAP).await?;
                Some(RebuildStatus { version: v, position: at.to_string(), lag_events: behind })
            }
            None => None,
        };
        let dead_letters = dead_letters::list(db, name, versions.live).await?;
        let status = if rebuild.is_some() {
            "rebuilding"
        } else if lag_events > 0 {
            "catching_up"
        } else {
            "running"
        };
        all.push(ProjectionStatus {
            name: name.to_owned(),
            version: versions.live,
            position: position.to_string(),
            lag_events,
            lag_ms,
            status: status.to_owned(),
            rebuild,
            dead_letters,
        });
    }
    Ok(all)
}

/// Sets the lag gauges of `name`'s live version. A gauge that cannot be read this time keeps its
/// last value; the worker sets it again a second later.
pub(crate) async fn publish_lag(store: &EventStore, db: &SqlDatabase, name: &'static str) {
    let Ok(versions) = versions(db, name).await else { return };
    let Ok(position) = db.checkpoint(&checkpoint_name(name, versions.live)).await else { return };
    if let Ok((events, ms)) = lag(store, position, GAUGE_LAG_CAP).await {
        metrics::gauge!("stay_projection_lag_events", "projection" => name).set(events as f64);
        metrics::gauge!("stay_projection_lag_ms", "projection" => name).set(ms as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::testing::{Fixture, Probe};
    use crate::runner::versions::{initialize, request_rebuild};
    use crate::runner::RunnerConfig;

    fn models() -> Vec<Arc<dyn ReadModel>> {
        vec![Arc::new(Probe::default())]
    }

    async fn status(f: &Fixture) -> ProjectionStatus {
        let mut all = statuses(&f.store, &f.db, &models()).await.expect("statuses");
        assert_eq!(all.len(), 1, "{all:?}");
        all.remove(0)
    }

    #[tokio::test]
    async fn lag_counts_the_events_after_the_checkpoint_up_to_a_cap() {
        let f = Fixture::new().await;
        let first = f.note("a", false).await;
        f.note("b", false).await;
        f.note("c", false).await;

        assert_eq!(lag(&f.store, Position::START, 100).await.expect("lag").0, 3);
        assert_eq!(lag(&f.store, first, 100).await.expect("lag").0, 2);
        assert_eq!(lag(&f.store, Position::START, 2).await.expect("lag").0, 2, "capped");
        let head = f.store.head().await.expect("head");
        assert_eq!(lag(&f.store, head, 100).await.expect("lag"), (0, 0), "caught up: no events, no age");
    }

    #[tokio::test]
    async fn a_status_reads_positions_only_so_an_event_no_one_can_decode_does_not_stop_it() {
        let f = Fixture::new().await;
        initialize(&f.db, &Probe::default()).await.expect("initialize");
        let first = f.note("a", false).await;
        // A row whose payload and metadata are not JSON: reading it whole fails.
        f.db.run(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, \
             metadata, recorded_at) VALUES ('Probe', 'garbled', 1, 'Noted', '1', 'not json {', 'nor this', $1)",
            &[(Utc::now() - chrono::Duration::minutes(5)).to_rfc3339().into()],
        )
        .await
        .expect("a raw row");
        f.note("b", false).await;
        assert!(f.store.read_feed(first, 10).await.is_err(), "the feed cannot read the garbled row whole");

        assert_eq!(lag(&f.store, first, 100).await.expect("lag").0, 2);
        let now = status(&f).await;
        assert_eq!((now.lag_events, now.status.as_str()), (3, "catching_up"), "{now:?}");
    }

    #[tokio::test]
    async fn a_status_counts_what_the_live_version_has_still_to_apply() {
        let f = Fixture::new().await;
        let model = Probe::default();
        initialize(&f.db, &model).await.expect("initialize");
        for room in ["a", "b", "c", "d"] {
            f.note(room, false).await;
        }

        let before = status(&f).await;
        assert_eq!(
            (before.name.as_str(), before.version, before.position.as_str(), before.lag_events, before.status.as_str()),
            ("probe", 1, "0", 4, "catching_up"),
            "{before:?}"
        );
        assert!(before.lag_ms >= 0 && before.rebuild.is_none() && before.dead_letters.is_empty(), "{before:?}");

        let projector = f.projector(RunnerConfig { batch: 3, ..RunnerConfig::default() });
        let step = projector.step(&model, 1).await.expect("step");
        let halfway = status(&f).await;
        assert_eq!((halfway.position, halfway.lag_events), (step.at.to_string(), 1));

        projector.step(&model, 1).await.expect("step");
        let after = status(&f).await;
        assert_eq!((after.lag_events, after.lag_ms, after.status.as_str()), (0, 0, "running"), "{after:?}");
    }

    #[tokio::test]
    async fn a_status_shows_a_rebuild_and_how_far_it_has_got() {
        let f = Fixture::new().await;
        let model = Probe::default();
        initialize(&f.db, &model).await.expect("initialize");
        f.note("a", false).await;
        f.note("b", false).await;
        let projector = f.projector(RunnerConfig { batch: 1, ..RunnerConfig::default() });
        projector.step(&model, 1).await.expect("step");
        projector.step(&model, 1).await.expect("step");
        request_rebuild(&f.db, &model).await.expect("rebuild");
        let step = projector.step(&model, 2).await.expect("step");

        let now = status(&f).await;

        assert_eq!((now.version, now.lag_events, now.status.as_str()), (1, 0, "rebuilding"), "{now:?}");
        assert_eq!(now.rebuild, Some(RebuildStatus { version: 2, position: step.at.to_string(), lag_events: 1 }));
    }
}
