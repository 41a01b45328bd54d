//! The projection runner: one worker per read model, its rows and checkpoint in one transaction.
//!
//! - A worker reads a batch of the feed after its checkpoint (events are upcast on read), applies
//!   each event it wants inside a savepoint, and writes the rows and the new checkpoint in one
//!   transaction; the checkpoint moves by compare-and-set, so a batch is applied once even if two
//!   workers race. Effects are exactly-once although delivery is at-least-once.
//! - An event the model cannot apply is retried, then parked in `projection_dead_letters` with its
//!   error; later events of the same aggregate are parked behind it (their order matters), while
//!   other aggregates go on.
//! - One process at a time runs a model's worker: it holds a lease in `projection_leases`, renewed
//!   every loop; a standby takes over when the lease lapses.
//! - Versions: each model's tables carry a version suffix. A rebuild creates the next version
//!   beside the live one and builds it from the start of the feed; when it has caught up, one
//!   statement makes it live. Queries read whichever version is live, so they never see a
//!   half-built model.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use stay_store::migrate::Migration;
use stay_store::{Arg, EventStore, MigrationSet, Position, RecordedEvent, SqlDatabase, SqlTransaction, StoreError};
use tokio::sync::watch;
use uuid::Uuid;

use crate::model::{ApplyError, ReadModel};

/// The runner's own tables: versions, leases, dead letters.
pub const PROJECTION_MIGRATIONS: MigrationSet = MigrationSet {
    component: "projections",
    sqlite: &[Migration {
        version: 1,
        name: "projection_tables",
        sql: include_str!("../migrations/0001_projections.sql"),
    }],
    postgres: &[Migration {
        version: 1,
        name: "projection_tables",
        sql: include_str!("../migrations/0001_projections.sql"),
    }],
};

/// The checkpoint of version `v` of a model.
pub fn checkpoint_name(name: &str, v: i64) -> String {
    format!("projection:{name}:v{v}")
}

/// A model's versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Versions {
    /// The version queries read.
    pub live: i64,
    /// The version being rebuilt beside it.
    pub building: Option<i64>,
}

/// The live and building versions of `name` (live 1 if the model was never started).
pub async fn versions(db: &SqlDatabase, name: &str) -> Result<Versions, StoreError> {
    let rows =
        db.rows("SELECT live_version, building_version FROM projection_state WHERE name = $1", &[name.into()]).await?;
    match rows.first() {
        Some(row) => Ok(Versions { live: row.int("live_version")?, building: row.opt_int("building_version")? }),
        None => Ok(Versions { live: 1, building: None }),
    }
}

/// Creates a model's state row and first tables, if it has none.
pub async fn initialize(db: &SqlDatabase, model: &dyn ReadModel) -> Result<(), StoreError> {
    let mut tx = db.begin().await?;
    let created = tx
        .run(
            "INSERT INTO projection_state (name, live_version, building_version, updated_at_ms) VALUES ($1, 1, NULL, $2) \
             ON CONFLICT (name) DO NOTHING",
            &[model.name().into(), Utc::now().timestamp_millis().into()],
        )
        .await?;
    if created == 1 {
        tx.batch(&model.create(1)).await?;
    }
    tx.commit().await
}

/// Starts a rebuild of `model` beside its live version; answers the version being built.
pub async fn request_rebuild(db: &SqlDatabase, model: &dyn ReadModel) -> Result<i64, StoreError> {
    initialize(db, model).await?;
    let mut tx = db.begin().await?;
    let rows = tx
        .rows("SELECT live_version, building_version FROM projection_state WHERE name = $1", &[model.name().into()])
        .await?;
    let (live, building) = match rows.first() {
        Some(row) => (row.int("live_version")?, row.opt_int("building_version")?),
        None => (1, None),
    };
    if let Some(building) = building {
        tx.rollback().await?;
        return Ok(building);
    }
    let next = live + 1;
    // Versions before the live one served their last query long ago; the next one may be a leftover.
    for old in (1..live).chain([next]) {
        for table in model.tables(old) {
            tx.batch(&format!("DROP TABLE IF EXISTS {table}")).await?;
        }
    }
    tx.batch(&model.create(next)).await?;
    tx.reset_checkpoint(&checkpoint_name(model.name(), next)).await?;
    tx.run(
        "DELETE FROM projection_dead_letters WHERE projection = $1 AND version = $2",
        &[model.name().into(), next.into()],
    )
    .await?;
    tx.run(
        "UPDATE projection_state SET building_version = $2, updated_at_ms = $3 WHERE name = $1",
        &[model.name().into(), next.into(), Utc::now().timestamp_millis().into()],
    )
    .await?;
    tx.commit().await?;
    Ok(next)
}

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

/// How far a model has got.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ProjectionStatus {
    /// The model.
    pub name: String,
    /// The live version.
    pub version: i64,
    /// The live version's checkpoint.
    pub position: String,
    /// Events in the feed after it (counted up to 10,000).
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
    /// Events it still has to read (counted up to 10,000).
    pub lag_events: u64,
}

/// Events after `after` (up to `cap`) and the age of the first of them.
pub async fn lag(store: &EventStore, after: Position, cap: usize) -> Result<(u64, i64), StoreError> {
    let ahead = store.read_feed(after, cap).await?;
    let age = ahead.first().map_or(0, |e| (Utc::now() - e.recorded_at).num_milliseconds().max(0));
    Ok((ahead.len() as u64, age))
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
        let (lag_events, lag_ms) = lag(store, position, 10_000).await?;
        let rebuild = match versions.building {
            Some(v) => {
                let at = db.checkpoint(&checkpoint_name(name, v)).await?;
                let (behind, _) = lag(store, at, 10_000).await?;
                Some(RebuildStatus { version: v, position: at.to_string(), lag_events: behind })
            }
            None => None,
        };
        let dead_letters = db
            .rows(
                "SELECT position, aggregate_type, aggregate_id, event_type, error FROM projection_dead_letters \
                 WHERE projection = $1 AND version = $2 ORDER BY parked_at_ms, position LIMIT 100",
                &[name.into(), versions.live.into()],
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
            .collect::<Result<_, StoreError>>()?;
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

    async fn run_model(self: Arc<Self>, model: Arc<dyn ReadModel>, mut stop: watch::Receiver<bool>) {
        let name = model.name();
        let mut backoff = Duration::from_millis(100);
        let mut last_gauges = tokio::time::Instant::now();
        while !*stop.borrow() {
            match initialize(&self.db, model.as_ref()).await {
                Ok(()) => break,
                Err(err) => {
                    tracing::warn!(projection = name, error = %err, "cannot set up the projection's tables; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        while !*stop.borrow() {
            let round = self.round(model.as_ref()).await;
            let pause = match round {
                Ok(Round::Progressed) => {
                    backoff = Duration::from_millis(100);
                    None
                }
                Ok(Round::Idle(after)) => {
                    backoff = Duration::from_millis(100);
                    Some(after)
                }
                Ok(Round::Standby) => {
                    tokio::select! {
                        () = tokio::time::sleep(self.config.lease / 5) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
                Err(err) => {
                    tracing::warn!(projection = name, error = %err, "projection batch failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            if last_gauges.elapsed() >= Duration::from_secs(1) {
                last_gauges = tokio::time::Instant::now();
                self.update_gauges(model.as_ref()).await;
            }
            if let Some(after) = pause {
                tokio::select! {
                    _ = self.store.wait_for_events(after, Duration::from_millis(500)) => {}
                    _ = stop.changed() => {}
                }
            }
        }
        // Give the lease up so a standby takes over at once.
        let _ = self
            .db
            .run(
                "DELETE FROM projection_leases WHERE name = $1 AND owner = $2",
                &[name.into(), self.owner.as_str().into()],
            )
            .await;
    }

    async fn update_gauges(&self, model: &dyn ReadModel) {
        let name = model.name();
        let Ok(versions) = versions(&self.db, name).await else { return };
        let Ok(position) = self.db.checkpoint(&checkpoint_name(name, versions.live)).await else { return };
        if let Ok((events, ms)) = lag(&self.store, position, 1_000).await {
            metrics::gauge!("stay_projection_lag_events", "projection" => name).set(events as f64);
            metrics::gauge!("stay_projection_lag_ms", "projection" => name).set(ms as f64);
        }
    }

    /// One round of a model's worker: renew the lease, advance the live version (and the one being
    /// rebuilt), switch when the rebuild has caught up.
    async fn round(&self, model: &dyn ReadModel) -> Result<Round, StoreError> {
        if !self.hold_lease(model.name()).await? {
            return Ok(Round::Standby);
        }
        let versions = versions(&self.db, model.name()).await?;
        let live = self.step(model, versions.live).await?;
        let mut progressed = live.read > 0;
        if let Some(building) = versions.building {
            let built = self.step(model, building).await?;
            progressed |= built.read > 0;
            if built.read == 0 && built.at >= live.at {
                self.switch(model.name(), building).await?;
                progressed = true;
            }
        }
        Ok(if progressed { Round::Progressed } else { Round::Idle(live.at) })
    }

    async fn hold_lease(&self, name: &str) -> Result<bool, StoreError> {
        let now = Utc::now().timestamp_millis();
        let until = now + i64::try_from(self.config.lease.as_millis()).unwrap_or(5_000);
        let held = self
            .db
            .run(
                "INSERT INTO projection_leases (name, owner, until_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until_ms = excluded.until_ms \
                 WHERE projection_leases.owner = excluded.owner OR projection_leases.until_ms < $4",
                &[name.into(), self.owner.as_str().into(), until.into(), now.into()],
            )
            .await?;
        Ok(held == 1)
    }

    async fn switch(&self, name: &str, building: i64) -> Result<(), StoreError> {
        let switched = self
            .db
            .run(
                "UPDATE projection_state SET live_version = $2, building_version = NULL, updated_at_ms = $3 \
                 WHERE name = $1 AND building_version = $2",
                &[name.into(), building.into(), Utc::now().timestamp_millis().into()],
            )
            .await?;
        if switched == 1 {
            tracing::info!(projection = name, version = building, "rebuilt version caught up and is now live");
        }
        Ok(())
    }

    /// Applies the next batch to version `v`; answers how many events it read and the checkpoint after.
    ///
    /// The batch is first applied straight through; only if an event turns out to be poison is the
    /// transaction rolled back and the batch applied again event by event in savepoints, so that
    /// one event can be parked without losing the others. Poison is rare; savepoints cost.
    pub async fn step(&self, model: &dyn ReadModel, v: i64) -> Result<Step, StoreError> {
        let checkpoint = checkpoint_name(model.name(), v);
        let after = self.db.checkpoint(&checkpoint).await?;
        let batch = self.store.read_feed(after, self.config.batch).await?;
        let Some(last) = batch.last().map(|e| e.position) else { return Ok(Step { read: 0, at: after }) };
        let applied = match self.apply_batch(model, v, &batch, &checkpoint, after, last, false).await? {
            Some(applied) => applied,
            None => self.apply_batch(model, v, &batch, &checkpoint, after, last, true).await?.unwrap_or(false),
        };
        if !applied {
            return Ok(Step { read: 0, at: after });
        }
        metrics::counter!("stay_projection_events_total", "projection" => model.name()).increment(batch.len() as u64);
        Ok(Step { read: batch.len(), at: last })
    }

    /// Applies a batch and moves the checkpoint in one transaction. `Ok(None)`: straight through
    /// (`careful` false) met a poison event and rolled back; `Ok(Some(false))`: another worker had
    /// moved the checkpoint.
    #[allow(clippy::too_many_arguments)]
    async fn apply_batch(
        &self,
        model: &dyn ReadModel,
        v: i64,
        batch: &[RecordedEvent],
        checkpoint: &str,
        after: Position,
        last: Position,
        careful: bool,
    ) -> Result<Option<bool>, StoreError> {
        let mut tx = self.db.begin().await?;
        let mut blocked = blocked(&mut tx, model.name(), v).await?;
        for event in batch.iter().filter(|e| model.wants(e)) {
            let key = (event.aggregate_type.clone(), event.aggregate_id.clone());
            if blocked.contains(&key) {
                let why = "held behind an earlier parked event of the same aggregate";
                park(&mut tx, model.name(), v, event, why).await?;
                continue;
            }
            if !careful {
                match model.apply(&mut tx, v, event).await {
                    Ok(()) => continue,
                    Err(ApplyError::Poison(_)) => {
                        tx.rollback().await?;
                        return Ok(None);
                    }
                    Err(ApplyError::Store(err)) => return Err(err),
                }
            }
            if let Err(error) = self.apply(&mut tx, model, v, event).await? {
                tracing::warn!(projection = model.name(), position = %event.position, %error, "event parked");
                metrics::counter!("stay_projection_parked_total", "projection" => model.name()).increment(1);
                park(&mut tx, model.name(), v, event, &error).await?;
                blocked.insert(key);
            }
        }
        match tx.save_checkpoint(checkpoint, after, last).await {
            Ok(()) => {
                tx.commit().await?;
                Ok(Some(true))
            }
            // Another worker applied this batch (a lease changed hands); read on from its checkpoint.
            Err(StoreError::Conflict) => {
                tx.rollback().await?;
                Ok(Some(false))
            }
            Err(err) => Err(err),
        }
    }

    /// Applies one event in a savepoint, retrying a refusal; `Ok(Err(why))` when it must be parked.
    async fn apply(
        &self,
        tx: &mut SqlTransaction,
        model: &dyn ReadModel,
        v: i64,
        event: &RecordedEvent,
    ) -> Result<Result<(), String>, StoreError> {
        let mut last = String::new();
        // No pause between attempts: the transaction holds the write lock (and, on PostgreSQL, the
        // feed's fence) meanwhile.
        for _ in 0..self.config.attempts.max(1) {
            tx.run("SAVEPOINT apply_event", &[]).await?;
            match model.apply(tx, v, event).await {
                Ok(()) => {
                    tx.run("RELEASE SAVEPOINT apply_event", &[]).await?;
                    return Ok(Ok(()));
                }
                Err(ApplyError::Poison(why)) => {
                    tx.run("ROLLBACK TO SAVEPOINT apply_event", &[]).await?;
                    last = why;
                }
                Err(ApplyError::Store(err)) => return Err(err),
            }
        }
        Ok(Err(last))
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

/// What one batch did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// Events read from the feed.
    pub read: usize,
    /// The checkpoint after the batch.
    pub at: Position,
}

async fn blocked(tx: &mut SqlTransaction, name: &str, v: i64) -> Result<HashSet<(String, String)>, StoreError> {
    let rows = tx
        .rows(
            "SELECT DISTINCT aggregate_type, aggregate_id FROM projection_dead_letters WHERE projection = $1 AND version = $2",
            &[name.into(), v.into()],
        )
        .await?;
    rows.iter().map(|row| Ok((row.text("aggregate_type")?, row.text("aggregate_id")?))).collect()
}

async fn park(
    tx: &mut SqlTransaction,
    name: &str,
    v: i64,
    event: &RecordedEvent,
    error: &str,
) -> Result<(), StoreError> {
    let body = serde_json::to_string(event).unwrap_or_default();
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
