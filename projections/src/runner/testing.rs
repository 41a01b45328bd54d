//! What the runner's tests share: an event store on a SQLite file in a temporary directory, and
//! `Probe`, a read model that writes one row per event and refuses the events it is told to.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use chrono::Utc;
use serde_json::json;
use stay_store::{
    Append, CommandContext, EventStore, NewEvent, Position, RecordedEvent, SqlDatabase, SqlTransaction, StoreError,
    StoreOptions, StoreUrl,
};
use tempfile::TempDir;

use super::{Projector, RunnerConfig, PROJECTION_MIGRATIONS};
use crate::model::{ApplyError, ReadModel};

/// The error `Probe` gives for a poison event.
pub(crate) const POISON: &str = "the probe cannot apply a poison event";

/// A read model with one table, `probe_v{v}`: a row (position, aggregate id) per `Probe` event.
/// An event whose payload says `"poison": true` is poison; an aggregate named by `fail_at` meets a
/// database error. It notes the aggregates of every batch handed to it at once, when it was asked
/// to apply a poison event, and the events it applied in order. Once `cure`d it applies poison too.
#[derive(Debug, Default)]
pub(crate) struct Probe {
    poison_attempts: AtomicUsize,
    poison_times: Mutex<Vec<Instant>>,
    cured: AtomicBool,
    applied: Mutex<Vec<Position>>,
    fail_at: Mutex<Option<String>>,
    batches: Mutex<Vec<Vec<String>>>,
}

impl Probe {
    /// How often it was asked to apply a poison event.
    pub(crate) fn poison_attempts(&self) -> usize {
        self.poison_attempts.load(Ordering::SeqCst)
    }

    /// When it was asked to apply a poison event.
    pub(crate) fn poison_times(&self) -> Vec<Instant> {
        self.poison_times.lock().expect("the probe's lock").clone()
    }

    /// From now on, poison events apply like any other (the cause is fixed).
    pub(crate) fn cure(&self) {
        self.cured.store(true, Ordering::SeqCst);
    }

    /// The positions of the events it applied, in the order it applied them (rolled back or not).
    pub(crate) fn applied(&self) -> Vec<Position> {
        self.applied.lock().expect("the probe's lock").clone()
    }

    /// From now on, events of aggregate `id` meet a database error.
    pub(crate) fn fail_at(&self, id: &str) {
        *self.fail_at.lock().expect("the probe's lock") = Some(id.to_owned());
    }

    /// The aggregate ids of each batch handed to `apply_batch` so far, and forgets them.
    pub(crate) fn take_batches(&self) -> Vec<Vec<String>> {
        std::mem::take(&mut *self.batches.lock().expect("the probe's lock"))
    }
}

#[async_trait]
impl ReadModel for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }

    fn create(&self, v: i64) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS probe_v{v} (major BIGINT NOT NULL, position TEXT NOT NULL, aggregate_id TEXT NOT NULL)"
        )
    }

    fn tables(&self, v: i64) -> Vec<String> {
        vec![format!("probe_v{v}")]
    }

    fn wants(&self, event: &RecordedEvent) -> bool {
        event.aggregate_type == "Probe"
    }

    async fn apply(&self, tx: &mut SqlTransaction, v: i64, event: &RecordedEvent) -> Result<(), ApplyError> {
        if event.payload["poison"] == json!(true) && !self.cured.load(Ordering::SeqCst) {
            self.poison_attempts.fetch_add(1, Ordering::SeqCst);
            self.poison_times.lock().expect("the probe's lock").push(Instant::now());
            return Err(ApplyError::Poison(POISON.to_owned()));
        }
        if self.fail_at.lock().expect("the probe's lock").as_deref() == Some(event.aggregate_id.as_str()) {
            let down = std::io::Error::other("the probe's database is down");
            return Err(ApplyError::Store(StoreError::database(down)));
        }
        let major = i64::try_from(event.position.major()).expect("a small position");
        tx.run(
            &format!("INSERT INTO probe_v{v} (major, position, aggregate_id) VALUES ($1, $2, $3)"),
            &[major.into(), event.position.to_string().into(), event.aggregate_id.as_str().into()],
        )
        .await?;
        self.applied.lock().expect("the probe's lock").push(event.position);
        Ok(())
    }

    async fn apply_batch(&self, tx: &mut SqlTransaction, v: i64, events: &[&RecordedEvent]) -> Result<(), ApplyError> {
        let ids = events.iter().map(|event| event.aggregate_id.clone()).collect();
        self.batches.lock().expect("the probe's lock").push(ids);
        for event in events {
            self.apply(tx, v, event).await?;
        }
        Ok(())
    }
}

/// An event store and its SQL database, migrated, in a directory removed when the fixture drops.
#[derive(Debug)]
pub(crate) struct Fixture {
    pub(crate) store: EventStore,
    pub(crate) db: SqlDatabase,
    /// Each aggregate's last sequence, to append after it.
    sequences: Mutex<HashMap<String, u64>>,
    _dir: TempDir,
}

impl Fixture {
    /// A fresh store with the runner's tables.
    pub(crate) async fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = StoreUrl::Sqlite(dir.path().join("stay.db"));
        let store = EventStore::open(&url, StoreOptions::default()).await.expect("open the store");
        store.migrate().await.expect("migrate the store");
        let db = store.sql_database().expect("a SQL database beside the log");
        db.migrate(&PROJECTION_MIGRATIONS).await.expect("migrate the runner's tables");
        Self { store, db, sequences: Mutex::new(HashMap::new()), _dir: dir }
    }

    /// Appends a `Probe` event to aggregate `id` (poison if `poison`); answers its position.
    pub(crate) async fn note(&self, id: &str, poison: bool) -> Position {
        self.append("Probe", id, json!({"poison": poison})).await
    }

    /// Appends a `Noted` event with `payload` to aggregate `id` of `aggregate_type`; answers its
    /// position.
    pub(crate) async fn append(&self, aggregate_type: &str, id: &str, payload: serde_json::Value) -> Position {
        let expected_version = {
            let mut sequences = self.sequences.lock().expect("the sequences' lock");
            let sequence = sequences.entry(format!("{aggregate_type}/{id}")).or_insert(0);
            *sequence += 1;
            *sequence - 1
        };
        let append = Append {
            aggregate_type: aggregate_type.into(),
            aggregate_id: id.into(),
            expected_version,
            events: vec![NewEvent { event_type: "Noted".into(), event_version: "1".into(), payload }],
            metadata: CommandContext::new("test").correlated_to(format!("correlation-{id}")).metadata(Utc::now()),
        };
        let positions = self.store.append(append).await.expect("append");
        *positions.first().expect("one position")
    }

    /// A projector of its own (its own lease owner) over this store, running a `Probe`.
    pub(crate) fn projector(&self, config: RunnerConfig) -> Projector {
        Projector::new(self.store.clone(), self.db.clone(), vec![Arc::new(Probe::default())], config)
    }

    /// A projector of its own over this store, running `model`.
    pub(crate) fn projector_of(&self, model: Arc<Probe>, config: RunnerConfig) -> Projector {
        Projector::new(self.store.clone(), self.db.clone(), vec![model], config)
    }

    /// The rows of `probe_v{v}`, in feed order.
    pub(crate) async fn rows(&self, v: i64) -> Vec<(Position, String)> {
        let rows = self
            .db
            .rows(&format!("SELECT position, aggregate_id FROM probe_v{v} ORDER BY major"), &[])
            .await
            .expect("rows");
        rows.iter()
            .map(|row| {
                let position = row.text("position").expect("position").parse().expect("a position");
                (position, row.text("aggregate_id").expect("aggregate_id"))
            })
            .collect()
    }

    /// Whether the table `name` exists.
    pub(crate) async fn table_exists(&self, name: &str) -> bool {
        let rows = self
            .db
            .rows("SELECT name FROM sqlite_master WHERE type = 'table' AND name = $1", &[name.into()])
            .await
            .expect("sqlite_master");
        !rows.is_empty()
    }
}
