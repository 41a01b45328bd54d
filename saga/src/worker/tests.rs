//! The worker on a temporary SQLite store: new instances are claimed as the feed consumer starts
//! them while drive slots are free, and the drive loop drives what it is handed.

use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, TimeDelta};
use stay_domain::{DomainServices, RoomId};
use stay_store::{Executor, ExecutorConfig, Executors, SystemClock};
use tempfile::TempDir;
use tokio::sync::watch;

use super::*;
use crate::driver::{Driver, SagaConfig};
use crate::instance::SagaInstance;
use crate::provider::simulator::{cards, Simulator};
use crate::testing;

struct World {
    _drives: tokio::sync::MutexGuard<'static, ()>,
    _dir: TempDir,
    executors: Arc<Executors>,
    worker: Arc<SagaWorker>,
    room_id: RoomId,
}

impl World {
    /// A worker with `slots` drive slots over a fresh store with one room.
    async fn new(slots: usize) -> Self {
        let drives = testing::DRIVES.lock().await;
        let (dir, store, db) = testing::fresh_store().await;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let executors = Arc::new(Executors::new(&store, clock.clone(), ExecutorConfig::default()));
        let services = Arc::new(DomainServices::new(clock.clone()));
        let sagas = Arc::new(Executor::<SagaInstance>::new(store.clone(), services, clock.clone()));
        let schedule = Schedule::new(db);
        let provider = Arc::new(Simulator::new());
        let driver =
            Driver::new(executors.clone(), sagas, provider, schedule.clone(), clock.clone(), SagaConfig::default());
        let worker = SagaWorker::new(store, schedule, Arc::new(driver), clock, slots, Duration::from_secs(5));

        let room_id = testing::register_room(&executors).await;
        Self { _drives: drives, _dir: dir, executors, worker: Arc::new(worker), room_id }
    }

    /// A guest asks for the `nth` week of 2030 (distinct weeks never collide).
    async fn request(&self, nth: i64) -> String {
        let check_in = NaiveDate::from_ymd_opt(2030, 1, 1).unwrap() + TimeDelta::weeks(nth);
        testing::request(&self.executors, self.room_id, check_in, cards::VISA).await.to_string()
    }

    /// Each instance's lease owner, by id.
    async fn owners(&self) -> HashMap<String, Option<String>> {
        let rows = self.worker.db.rows("SELECT saga_id, lease_owner FROM saga_instances", &[]).await.unwrap();
        rows.iter().map(|row| (row.text("saga_id").unwrap(), row.opt_text("lease_owner").unwrap())).collect()
    }
}

#[tokio::test]
async fn new_instances_are_claimed_as_they_start_while_a_drive_slot_is_free() {
    let world = World::new(2).await;
    let ids = [world.request(0).await, world.request(1).await, world.request(2).await];
    let (_stop, running) = watch::channel(false);

    assert!(world.worker.consume_batch(&running).await.unwrap());

    let mut handed = world.worker.handed.lock().unwrap().take().unwrap();
    let mut claimed = Vec::new();
    let mut slots = Vec::new();
    while let Ok((claim, slot)) = handed.try_recv() {
        assert_eq!(claim.wakes, 0);
        claimed.push(claim.saga_id);
        slots.push(slot);
    }
    assert_eq!(claimed, ids[..2], "two slots: the first two are handed to the drive loop");
    let owners = world.owners().await;
    assert_eq!(owners.len(), 3);
    for id in &ids[..2] {
        assert_eq!(owners[id].as_deref(), Some(world.worker.owner.as_str()), "{id} is leased to this process");
        assert!(world.worker.driving().contains_key(id), "the heartbeat renews {id}");
    }
    assert_eq!(owners[&ids[2]], None, "no slot left: the third waits for a claim, due now");
    assert_eq!(world.worker.slots.available_permits(), 0, "each hand-off holds its slot");
    drop(slots);
    assert_eq!(world.worker.slots.available_permits(), 2);
}

#[tokio::test]
async fn a_stopping_consumer_starts_instances_without_claiming_them() {
    let world = World::new(2).await;
    let id = world.request(0).await;
    let (_stop, stopping) = watch::channel(true);

    assert!(world.worker.consume_batch(&stopping).await.unwrap());

    assert_eq!(world.owners().await[&id], None);
    assert_eq!(world.worker.slots.available_permits(), 2);
}

#[tokio::test]
async fn handed_off_instances_are_driven_to_the_end() {
    let world = World::new(4).await;
    let (stop, running) = watch::channel(false);
    let run = tokio::spawn(world.worker.clone().run(running));
    let ids = [world.request(0).await, world.request(1).await, world.request(2).await];

    let schedule = world.worker.schedule.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut statuses = Vec::new();
        for id in &ids {
            statuses.push(schedule.get(id).await.unwrap().map(|row| row.status));
        }
        if statuses.iter().all(|status| status.as_deref() == Some("completed")) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not all completed: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), run).await.unwrap().unwrap();
    assert!(world.worker.driving().is_empty());
    assert_eq!(world.worker.slots.available_permits(), 4);
}
