//! The projection runner: one worker per read model, its rows and checkpoint in one transaction.
//!
//! - `batch` — a worker reads a batch of the feed after its checkpoint, applies it and moves the
//!   checkpoint by compare-and-set in one transaction, so a batch is applied once even if two
//!   workers race. Effects are exactly-once although delivery is at-least-once.
//! - `dead_letters` — an event the model cannot apply is kept with its error and retried with
//!   backoff, then parked; later events of the same aggregate are held behind it, while other
//!   aggregates go on. An operator retries or skips a parked event; the worker carries it out.
//! - `lease` — one process at a time runs a model's worker; a standby takes over when the lease
//!   lapses.
//! - `versions` — a rebuild builds the next version beside the live one and switches when it has
//!   caught up, so queries never see a half-built model.
//! - `status` — how far each model has got, and its lag behind the head of the feed.
//!
//! This file holds the worker loop that ties them together.

mod batch;
mod dead_letters;
mod lease;
#[cfg(test)]
mod log_recorder;
mod status;
#[cfg(test)]
mod testing;
mod versions;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use stay_store::backoff::Waits;
use stay_store::migrate::Migration;
use stay_store::{Backoff, EventStore, MigrationSet, Position, SqlDatabase, StoreError};
use tokio::sync::watch;
use uuid::Uuid;

use crate::model::ReadModel;
use lease::Lease;

pub use batch::Step;
pub use dead_letters::{
    all as dead_letters, request as request_dead_letter, settled, skipped_count, Action, DeadLetter, RequestError,
    Requested, Settled,
};
pub use status::{lag, statuses, ProjectionStatus, RebuildStatus};
pub use versions::{checkpoint_name, checkpoint_prefix, initialize, not_set_up, request_rebuild, versions, Versions};

/// The runner's own tables: versions, leases, dead letters.
pub const PROJECTION_MIGRATIONS: MigrationSet = MigrationSet {
    component: "projections",
    sqlite: &[
        Migration { version: 1, name: "projection_tables", sql: include_str!("../../migrations/0001_projections.sql") },
        Migration {
            version: 2,
            name: "dead_letter_retries",
            sql: include_str!("../../migrations/0002_dead_letter_retries.sql"),
        },
    ],
    postgres: &[
        Migration { version: 1, name: "projection_tables", sql: include_str!("../../migrations/0001_projections.sql") },
        Migration {
            version: 2,
            name: "dead_letter_retries",
            sql: include_str!("../../migrations/0002_dead_letter_retries.sql"),
        },
    ],
};

/// How long a worker waits after a failed set-up or batch: from 100 ms, doubling to 5 s, never
/// giving up (a database that is down now is usually back soon).
const RETRY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// How often a worker sets its lag gauges.
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);

/// How long an idle worker waits for new events before it looks again (and renews its lease).
const IDLE_WAIT: Duration = Duration::from_millis(500);

/// How the runner paces itself.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// Events read per batch.
    pub batch: usize,
    /// How long a lease lasts without renewal.
    pub lease: Duration,
    /// Attempts at a refused event before it is parked (the first, then retries with backoff).
    pub attempts: u32,
    /// The waits between attempts at a refused event, by failure count.
    pub poison_backoff: Backoff,
}

/// The waits between attempts at a refused event: from about 500 ms, doubling to 30 s.
pub const POISON_BACKOFF: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));

impl Default for RunnerConfig {
    fn default() -> Self {
        Self { batch: 500, lease: Duration::from_secs(5), attempts: 4, poison_backoff: POISON_BACKOFF }
    }
}

/// Tells readers in this process when a model's worker here has committed (a batch, a rebuild's
/// switch, a released dead letter), so that they read its progress then rather than poll for it.
/// Cheap to clone; one counter per model, moved on every commit.
#[derive(Clone, Debug, Default)]
pub struct Committed {
    by_model: Arc<HashMap<&'static str, watch::Sender<u64>>>,
}

impl Committed {
    /// A signal for each of `models`.
    fn new(models: &[Arc<dyn ReadModel>]) -> Self {
        let by_model = models.iter().map(|m| (m.name(), watch::channel(0).0)).collect();
        Self { by_model: Arc::new(by_model) }
    }

    /// Changes whenever `model`'s worker in this process commits; `None` for a model it does not run.
    pub fn subscribe(&self, model: &str) -> Option<watch::Receiver<u64>> {
        self.by_model.get(model).map(watch::Sender::subscribe)
    }

    /// Notes a commit of `model`'s worker.
    fn bump(&self, model: &str) {
        if let Some(sender) = self.by_model.get(model) {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

/// Runs the workers of a set of read models in this process.
#[derive(Debug)]
pub struct Projector {
    store: EventStore,
    db: SqlDatabase,
    models: Vec<Arc<dyn ReadModel>>,
    owner: String,
    config: RunnerConfig,
    committed: Committed,
}

impl Projector {
    /// Workers for `models`, reading `store`'s feed and writing to `db`.
    pub fn new(store: EventStore, db: SqlDatabase, models: Vec<Arc<dyn ReadModel>>, config: RunnerConfig) -> Self {
        let committed = Committed::new(&models);
        Self { store, db, models, owner: format!("projector-{}", Uuid::new_v4()), config, committed }
    }

    /// The signal this projector moves whenever one of its workers commits.
    pub fn committed(&self) -> Committed {
        self.committed.clone()
    }

    /// Runs every model's worker until `stop` turns true.
    pub async fn run(self: Arc<Self>, stop: watch::Receiver<bool>) {
        let mut workers = tokio::task::JoinSet::new();
        for model in self.models.clone() {
            workers.spawn(self.clone().run_model(model, stop.clone()));
        }
        while workers.join_next().await.is_some() {}
    }

    /// What each model's worker in this process is doing, for `/readyz`: whether this process
    /// holds the model's lease (another holds it: this one stands by), its checkpoint, and how far
    /// behind the feed's head it is. Leases and checkpoints are read in full; the lags are counted
    /// at once, each up to 100,000 events, and those not counted within `lag_within` (counting may
    /// read events, on EventStoreDB) are left out, so a far-behind model never slows the answer.
    pub async fn report(&self, lag_within: Duration) -> Result<Vec<WorkerReport>, StoreError> {
        let holders = lease::holders(&self.db).await?;
        let now = chrono::Utc::now().timestamp_millis();
        let mut reports = Vec::with_capacity(self.models.len());
        let mut counts = tokio::task::JoinSet::new();
        let started = tokio::time::Instant::now();
        for (at, model) in self.models.iter().enumerate() {
            let name = model.name();
            let lease = match holders.iter().find(|(held, _, until)| held == name && *until >= now) {
                Some((_, owner, _)) if *owner == self.owner => LeaseState::Held,
                Some(_) => LeaseState::Standby,
                None => LeaseState::Free,
            };
            let live = versions(&self.db, name).await?.live;
            let position = self.db.checkpoint(&checkpoint_name(name, live)).await?;
            let store = self.store.clone();
            counts.spawn(async move { (at, lag(&store, position, REPORT_LAG_CAP).await) });
            reports.push(WorkerReport { name, lease, position: position.to_string(), lag_events: None, lag_ms: None });
        }
        let deadline = tokio::time::sleep_until(started + lag_within);
        tokio::pin!(deadline);
        while started.elapsed() < lag_within {
            tokio::select! {
                biased;
                () = &mut deadline => break,
                counted = counts.join_next() => match counted {
                    Some(Ok((at, Ok((events, ms))))) => {
                        reports[at].lag_events = Some(events);
                        reports[at].lag_ms = Some(ms);
                    }
                    Some(_) => {}
                    None => break,
                },
            }
        }
        Ok(reports)
    }

    /// This projector's claim on `model`'s lease.
    fn lease(&self, model: &dyn ReadModel) -> Lease {
        Lease::new(model.name(), &self.owner, self.config.lease)
    }

    async fn run_model(self: Arc<Self>, model: Arc<dyn ReadModel>, mut stop: watch::Receiver<bool>) {
        let name = model.name();
        // One run of waits from the first failure until a round succeeds.
        let mut retry = RETRY.waits();
        let mut last_gauges = tokio::time::Instant::now();
        while !*stop.borrow() {
            match initialize(&self.db, model.as_ref()).await {
                Ok(()) => break,
                Err(err) => {
                    tracing::warn!(projection = name, error = %err, "cannot set up the projection's tables; retrying");
                    pause(next_wait(&mut retry), &mut stop).await;
                }
            }
        }
        let mut lease = self.lease(model.as_ref());
        while !*stop.borrow() {
            let round = self.round(model.as_ref(), &mut lease).await;
            let pause_for_events = match round {
                Ok(Round::Progressed) => {
                    retry.reset();
                    None
                }
                Ok(Round::Idle(after)) => {
                    retry.reset();
                    Some(after)
                }
                Ok(Round::Standby) => {
                    // A standby reports the model's lag too (the checkpoint is shared), so a gauge it
                    // set while it held the lease does not stay behind, stale, after a take-over.
                    if last_gauges.elapsed() >= GAUGE_INTERVAL {
                        last_gauges = tokio::time::Instant::now();
                        status::publish_lag(&self.store, &self.db, name).await;
                    }
                    pause(self.config.lease / 5, &mut stop).await;
                    continue;
                }
                Err(err) => {
                    tracing::warn!(projection = name, error = %err, "projection batch failed; retrying");
                    pause(next_wait(&mut retry), &mut stop).await;
                    continue;
                }
            };
            if last_gauges.elapsed() >= GAUGE_INTERVAL {
                last_gauges = tokio::time::Instant::now();
                status::publish_lag(&self.store, &self.db, name).await;
            }
            if let Some(after) = pause_for_events {
                // No longer than until the next dead letter is due.
                let wait = match dead_letters::next_due(&self.db, name, live_version(&self.db, name).await).await {
                    Ok(Some(due)) => (due - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO).min(IDLE_WAIT),
                    _ => IDLE_WAIT,
                };
                tokio::select! {
                    _ = self.store.wait_for_events(after, wait) => {}
                    _ = stop.changed() => {}
                }
            }
        }
        if let Err(err) = lease.give_up(&self.db).await {
            tracing::warn!(projection = name, error = %err, "cannot hand the lease back; a standby takes over when it lapses");
        }
    }

    /// One round of a model's worker: renew the lease, advance the live version (and the one being
    /// rebuilt), switch when the rebuild has caught up.
    async fn round(&self, model: &dyn ReadModel, lease: &mut Lease) -> Result<Round, StoreError> {
        if !lease.hold(&self.db).await? {
            return Ok(Round::Standby);
        }
        let versions = versions(&self.db, model.name()).await?;
        let released = self.settle_due(model, versions.live).await?;
        let live = self.step(model, versions.live).await?;
        if released || live.read > 0 {
            // Readers waiting for the live version look now, not after the rebuild's batch.
            self.committed.bump(model.name());
        }
        let mut progressed = released || live.read > 0;
        if let Some(building) = versions.building {
            progressed |= self.settle_due(model, building).await?;
            let built = self.step(model, building).await?;
            progressed |= built.read > 0;
            if built.read == 0 && built.at >= live.at && versions::switch(&self.db, model.name(), building).await? {
                self.committed.bump(model.name());
                progressed = true;
            }
        }
        Ok(if progressed { Round::Progressed } else { Round::Idle(live.at) })
    }
}

/// How many events behind a [`WorkerReport`] counts, at most.
const REPORT_LAG_CAP: u64 = 100_000;

/// One model's worker in this process, as [`Projector::report`] finds it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WorkerReport {
    /// The model.
    pub name: &'static str,
    /// Whether this process runs the model's worker.
    pub lease: LeaseState,
    /// The live version's checkpoint.
    pub position: String,
    /// Events in the feed after it (counted up to 100,000); `None` when not counted in time.
    pub lag_events: Option<u64>,
    /// Age of the oldest of them in milliseconds (0 when caught up); `None` when not counted in time.
    pub lag_ms: Option<i64>,
}

/// Who runs a model's worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    /// This process: it holds the lease.
    Held,
    /// Another process holds the lease; this one takes over if it lapses.
    Standby,
    /// Nobody holds it now (between rounds, or every holder stopped); the next round takes it.
    Free,
}

/// What one round did.
enum Round {
    /// Events were applied (or a version switched): go again at once.
    Progressed,
    /// Caught up at this checkpoint: wait for new events.
    Idle(Position),
    /// Another process holds the lease.
    Standby,
}

/// The live version of `name` (1 when it cannot be read: only a wait depends on it).
async fn live_version(db: &SqlDatabase, name: &str) -> i64 {
    versions(db, name).await.map_or(1, |v| v.live)
}

/// The next wait of a run of failures.
fn next_wait(retry: &mut Waits) -> Duration {
    // RETRY sets no limit, so there is always a next wait.
    retry.next_wait().unwrap_or(RETRY.max)
}

/// Waits `wait`, or less if `stop` changes meanwhile.
async fn pause(wait: Duration, stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        () = tokio::time::sleep(wait) => {}
        _ = stop.changed() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::testing::{Fixture, Probe};

    #[tokio::test]
    async fn a_round_that_commits_moves_the_models_signal_and_an_idle_one_does_not() {
        let f = Fixture::new().await;
        let model = Arc::new(Probe::default());
        let projector = f.projector_of(model.clone(), RunnerConfig::default());
        let mut signal = projector.committed().subscribe("probe").expect("a signal for probe");
        assert!(projector.committed().subscribe("other").is_none(), "only the projector's models");
        initialize(&f.db, model.as_ref()).await.expect("initialize");
        let mut lease = projector.lease(model.as_ref());
        f.note("a", false).await;

        projector.round(model.as_ref(), &mut lease).await.expect("round");
        assert!(signal.has_changed().expect("alive"), "the batch's commit is signalled");
        signal.borrow_and_update();

        projector.round(model.as_ref(), &mut lease).await.expect("round");
        assert!(!signal.has_changed().expect("alive"), "nothing committed, nothing signalled");
    }

    #[tokio::test]
    async fn a_report_names_the_leases_and_leaves_out_a_lag_not_counted_in_time() {
        let f = Fixture::new().await;
        let model = Arc::new(Probe::default());
        let projector = f.projector_of(model.clone(), RunnerConfig::default());
        let standby = f.projector_of(model.clone(), RunnerConfig::default());
        initialize(&f.db, model.as_ref()).await.expect("initialize");
        for id in ["a", "b", "c"] {
            f.note(id, false).await;
        }

        let free = projector.report(Duration::from_secs(5)).await.expect("report");
        assert_eq!((free[0].name, free[0].lease), ("probe", LeaseState::Free));
        assert_eq!((free[0].lag_events, free[0].position.as_str()), (Some(3), "0"), "counted in time");

        let mut lease = projector.lease(model.as_ref());
        assert!(lease.hold(&f.db).await.expect("hold"));
        assert_eq!(projector.report(Duration::from_secs(5)).await.expect("report")[0].lease, LeaseState::Held);
        assert_eq!(standby.report(Duration::from_secs(5)).await.expect("report")[0].lease, LeaseState::Standby);

        // With no time to count, the report still answers, with the lease and checkpoint.
        let uncounted = projector.report(Duration::ZERO).await.expect("report");
        assert_eq!((uncounted[0].lease, uncounted[0].lag_events, uncounted[0].lag_ms), (LeaseState::Held, None, None));
    }
}
