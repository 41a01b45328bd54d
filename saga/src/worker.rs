//! The saga worker: a feed consumer that starts and wakes instances, and a loop that drives the
//! instances that are due.
//!
//! Routing is explicit: `ReservationRequested` starts an instance (id = the reservation id);
//! `CancellationRequested` wakes it. Both are recorded in the saga's table in the same transaction
//! as the worker's checkpoint, so a redelivered event is harmless and none is lost. Everything
//! else the saga learns from the aggregates and its own stream when it drives the instance.
//!
//! Leases are short (5 s by default) and kept alive by one heartbeat per process, which renews
//! every instance the process is driving in one statement. A step therefore costs no lease write,
//! and when a process dies its instances are free again within one lease. A driver checks locally
//! that its lease still stands (the last successful heartbeat, or its claim, is younger than the
//! lease); should the heartbeat fail for a whole lease, its drives stop at the next step.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use stay_domain::Clock;
use stay_store::{Backoff, EventStore, Position, SqlDatabase, StoreError};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::driver::{DriveError, Driver};
use crate::schedule::{Claimed, Release, Schedule};

/// The checkpoint name of the saga's feed consumer.
pub const CHECKPOINT: &str = "saga";

/// How the feed consumer waits after a failed batch: from about 100 ms, doubling up to 5 s.
const FEED_RETRY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// Runs the saga in this process.
#[derive(Debug)]
pub struct SagaWorker {
    store: EventStore,
    db: SqlDatabase,
    schedule: Schedule,
    driver: Arc<Driver>,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
    /// This process's name on its leases.
    owner: String,
    concurrency: usize,
    lease: Duration,
    /// The instances this process is driving now (it never drives one twice at once), each with
    /// when its lease ends as last written (ms since the epoch).
    driving: Mutex<HashMap<String, i64>>,
}

impl SagaWorker {
    /// A worker reading `store`'s feed and driving instances with `driver`.
    pub fn new(
        store: EventStore,
        schedule: Schedule,
        driver: Arc<Driver>,
        clock: Arc<dyn Clock>,
        concurrency: usize,
        lease: Duration,
    ) -> Self {
        Self {
            store,
            db: schedule.database().clone(),
            schedule,
            driver,
            clock,
            wake: Arc::new(Notify::new()),
            owner: format!("saga-{}", Uuid::new_v4()),
            concurrency: concurrency.max(1),
            lease,
            driving: Mutex::new(HashMap::new()),
        }
    }

    /// A handle that makes the driver look for due instances now (after an operator's resume).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Runs until `stop` turns true; then lets drives in progress finish.
    pub async fn run(self: Arc<Self>, stop: watch::Receiver<bool>) {
        let feed = tokio::spawn(self.clone().consume_feed(stop.clone()));
        let gauges = tokio::spawn(self.clone().count_sagas(stop.clone()));
        let heartbeat = tokio::spawn(self.clone().heartbeat());
        self.clone().drive_due(stop).await;
        let _ = feed.await;
        let _ = gauges.await;
        heartbeat.abort();
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX / 4)
    }

    fn driving(&self) -> MutexGuard<'_, HashMap<String, i64>> {
        self.driving.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Renews the leases of every instance this process drives, four times per lease.
    /// It keeps renewing while the drives in progress finish after a stop; `run` ends it.
    async fn heartbeat(self: Arc<Self>) {
        let every = (self.lease / 4).max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(every).await;
            let ids: Vec<String> = self.driving().keys().cloned().collect();
            if ids.is_empty() {
                continue;
            }
            let until = self.clock.now().timestamp_millis().saturating_add(self.lease_ms());
            match self.schedule.renew(&self.owner, &ids, until).await {
                Ok(renewed) => {
                    let mut driving = self.driving();
                    for id in renewed {
                        if let Some(held_until) = driving.get_mut(&id) {
                            *held_until = until;
                        }
                    }
                }
                Err(err) => tracing::warn!(error = %err, "could not renew the saga leases; retrying"),
            }
        }
    }

    /// Keeps the `stay_sagas{status}` gauge current.
    async fn count_sagas(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        while !*stop.borrow() {
            if let Ok(counts) = self.schedule.counts().await {
                for status in ["running", "completed", "compensated", "parked"] {
                    let count = counts.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
                    metrics::gauge!("stay_sagas", "status" => status).set(count as f64);
                }
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = stop.changed() => {}
            }
        }
    }

    async fn consume_feed(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut waits = FEED_RETRY.waits();
        while !*stop.borrow() {
            match self.consume_batch().await {
                Ok(true) => waits.reset(),
                Ok(false) => {
                    let after = match self.db.checkpoint(CHECKPOINT).await {
                        Ok(position) => position,
                        Err(_) => Position::START,
                    };
                    tokio::select! {
                        _ = self.store.wait_for_events(after, Duration::from_secs(1)) => {}
                        _ = stop.changed() => {}
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "saga feed consumer failed; retrying");
                    // The schedule never gives up; its longest wait stands in should it ever end.
                    let wait = waits.next_wait().unwrap_or(FEED_RETRY.max);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
    }

    /// Reads one batch after the checkpoint and records its triggers; false when there was none.
    async fn consume_batch(&self) -> Result<bool, StoreError> {
        let after = self.db.checkpoint(CHECKPOINT).await?;
        let batch = self.store.read_feed(after, 500).await?;
        let Some(last) = batch.last().map(|e| e.position) else { return Ok(false) };
        let now = self.clock.now().timestamp_millis();
        let mut tx = self.db.begin().await?;
        let mut triggered = false;
        for event in batch.iter().filter(|e| e.aggregate_type == "Reservation") {
            match event.event_type.as_str() {
                "ReservationRequested" => {
                    Schedule::start(&mut tx, &event.aggregate_id, now).await?;
                    triggered = true;
                }
                "CancellationRequested" => {
                    Schedule::wake_in(&mut tx, &event.aggregate_id, now).await?;
                    triggered = true;
                }
                _ => {}
            }
        }
        match tx.save_checkpoint(CHECKPOINT, after, last).await {
            Ok(()) => tx.commit().await?,
            // Another process recorded this batch first; read on from where it got to.
            Err(StoreError::Conflict) => {
                tx.rollback().await?;
                return Ok(true);
            }
            Err(err) => return Err(err),
        }
        if triggered {
            self.wake.notify_one();
        }
        Ok(true)
    }

    async fn drive_due(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let mut drives = JoinSet::new();
        while !*stop.borrow() {
            while drives.try_join_next().is_some() {}
            let free = slots.available_permits();
            let mut claimed = Vec::new();
            let now = self.clock.now().timestamp_millis();
            if free > 0 {
                let limit = i64::try_from(free).unwrap_or(1);
                match self.schedule.claim_due(&self.owner, now, self.lease_ms(), limit).await {
                    Ok(rows) => claimed = rows,
                    Err(err) => tracing::warn!(error = %err, "could not claim due sagas"),
                }
            }
            let claimed_any = !claimed.is_empty();
            let claim_until = now.saturating_add(self.lease_ms());
            for claim in claimed {
                // A lease that ran out under a drive of ours (a stalled heartbeat) and was claimed
                // again: the drive in progress carries on and gives the instance back.
                if self.driving().insert(claim.saga_id.clone(), claim_until).is_some() {
                    continue;
                }
                let Ok(permit) = slots.clone().acquire_owned().await else { break };
                let worker = self.clone();
                drives.spawn(async move {
                    worker.drive_one(&claim).await;
                    worker.driving().remove(&claim.saga_id);
                    drop(permit);
                });
            }
            if claimed_any && slots.available_permits() > 0 {
                continue;
            }
            let pause = self.pause_until_due().await;
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(pause) => {}
                Some(_) = drives.join_next(), if !drives.is_empty() => {}
                _ = stop.changed() => {}
            }
        }
        // Stopping: finish the drives in progress (each ends at its next wait or step boundary).
        while drives.join_next().await.is_some() {}
    }

    /// How long to sleep when nothing is due now: until the soonest due time, at most 250 ms.
    async fn pause_until_due(&self) -> Duration {
        const MAX_PAUSE: Duration = Duration::from_millis(250);
        match self.schedule.next_due(self.clock.now().timestamp_millis()).await {
            Ok(Some(due)) => {
                let wait = due - self.clock.now().timestamp_millis();
                Duration::from_millis(u64::try_from(wait.max(5)).unwrap_or(5)).min(MAX_PAUSE)
            }
            _ => MAX_PAUSE,
        }
    }

    /// Drives one claimed instance and gives it back.
    async fn drive_one(&self, claim: &Claimed) {
        let token = self.owner.as_str();
        // The heartbeat renews the lease; a step only checks, without a write, that it stands.
        let renew = || async {
            let held_until = self.driving().get(&claim.saga_id).copied().unwrap_or(0);
            Ok(self.clock.now().timestamp_millis() < held_until)
        };
        let now = || self.clock.now().timestamp_millis();
        match self.driver.drive(&claim.saga_id, renew).await {
            Ok(settled) => {
                let (_, last_error) = settled.saga.last();
                let release = Release {
                    status: Some(settled.saga.status().as_str()),
                    step: Some(settled.step.as_str()),
                    due_at_ms: settled.due.map(|at| at.timestamp_millis()),
                    last_error,
                };
                if let Err(err) = self.schedule.release(token, claim, &release, now()).await {
                    tracing::warn!(saga_id = %claim.saga_id, error = %err, "could not release a saga; its lease will expire");
                }
            }
            // Not a failure: the other driver carries on, and a record decided here on a version it
            // has moved past is refused.
            Err(DriveError::LeaseLost) => {
                tracing::info!(saga_id = %claim.saga_id, "lost the lease on a saga; another driver has it");
            }
            Err(DriveError::Store(err)) => {
                tracing::warn!(saga_id = %claim.saga_id, error = %err, "driving a saga failed; retrying soon");
                let error = err.to_string();
                let retry =
                    Release { status: None, step: None, due_at_ms: Some(now() + 1_000), last_error: Some(&error) };
                let _ = self.schedule.release(token, claim, &retry, now()).await;
            }
        }
    }
}
