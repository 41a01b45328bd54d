//! The projection runner: one worker per read model, its rows and checkpoint in one transaction.
//!
//! - `batch` — a worker reads a batch of the feed after its checkpoint, applies it and moves the
//!   checkpoint by compare-and-set in one transaction, so a batch is applied once even if two
//!   workers race. Effects are exactly-once although delivery is at-least-once.
//! - `dead_letters` — an event the model cannot apply is retried, then parked with its error;
//!   later events of the same aggregate are parked behind it, while other aggregates go on.
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
pub use dead_letters::DeadLetter;
pub use status::{lag, statuses, ProjectionStatus, RebuildStatus};
pub use versions::{checkpoint_name, initialize, request_rebuild, versions, Versions};

/// The runner's own tables: versions, leases, dead letters.
pub const PROJECTION_MIGRATIONS: MigrationSet = MigrationSet {
    component: "projections",
    sqlite: &[Migration {
        version: 1,
        name: "projection_tables",
        sql: include_str!("../../migrations/0001_projections.sql"),
    }],
    postgres: &[Migration {
        version: 1,
        name: "projection_tables",
        sql: include_str!("../../migrations/0001_projections.sql"),
    }],
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
    /// Attempts at an event before it is parked.
    pub attempts: u32,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self { batch: 500, lease: Duration::from_secs(5), attempts: 3 }
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
}

impl Projector {
    /// Workers for `models`, reading `store`'s feed and writing to `db`.
    pub fn new(store: EventStore, db: SqlDatabase, models: Vec<Arc<dyn ReadModel>>, config: RunnerConfig) -> Self {
        Self { store, db, models, owner: format!("projector-{}", Uuid::new_v4()), config }
    }

    /// Runs every model's worker until `stop` turns true.
    pub async fn run(self: Arc<Self>, stop: watch::Receiver<bool>) {
        let mut workers = tokio::task::JoinSet::new();
        for model in self.models.clone() {
            workers.spawn(self.clone().run_model(model, stop.clone()));
        }
        while workers.join_next().await.is_some() {}
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
                tokio::select! {
                    _ = self.store.wait_for_events(after, IDLE_WAIT) => {}
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
        let live = self.step(model, versions.live).await?;
        let mut progressed = live.read > 0;
        if let Some(building) = versions.building {
            let built = self.step(model, building).await?;
            progressed |= built.read > 0;
            if built.read == 0 && built.at >= live.at {
                versions::switch(&self.db, model.name(), building).await?;
                progressed = true;
            }
        }
        Ok(if progressed { Round::Progressed } else { Round::Idle(live.at) })
    }
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
