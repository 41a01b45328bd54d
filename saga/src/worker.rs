//! The saga worker: a feed consumer that starts and wakes instances, and a loop that drives the
//! instances that are due.
//!
//! Routing is explicit: `ReservationRequested` starts an instance (id = the reservation id);
//! `CancellationRequested` wakes it. Both are recorded in the saga's table in the same transaction
//! as the worker's checkpoint, so a redelivered event is harmless and none is lost. Everything
//! else the saga learns from the aggregates and its own stream when it drives the instance.
//!
//! A new instance is claimed in that same transaction when this process has a free drive slot, and
//! handed straight to the drive loop: a new reservation's saga starts without a claim of its own
//! and without waiting for the loop to look.
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
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::driver::{DriveError, Driver};
use crate::schedule::{Claimed, Release, Schedule};

#[cfg(test)]
mod tests;

/// An instance the feed consumer claimed as it started it, with the drive slot it took for it.
type Handoff = (Claimed, OwnedSemaphorePermit);

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
    lease: Duration,
    /// The instances this process is driving now (it never drives one twice at once), each with
    /// when its lease ends as last written (ms since the epoch).
    driving: Mutex<HashMap<String, i64>>,
    /// Drive slots: at most `concurrency` instances driven at once.
    slots: Arc<Semaphore>,
    /// New instances the feed consumer claimed, on their way to the drive loop.
    handoff: mpsc::UnboundedSender<Handoff>,
    handed: Mutex<Option<mpsc::UnboundedReceiver<Handoff>>>,
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
        let concurrency = concurrency.max(1);
        let (handoff, handed) = mpsc::unbounded_channel();
        Self {
            store,
            db: schedule.database().clone(),
            schedule,
            driver,
            clock,
            wake: Arc::new(Notify::new()),
            owner: format!("saga-{}", Uuid::new_v4()),
            lease,
            driving: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(concurrency)),
            handoff,
            handed: Mutex::new(Some(handed)),
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
        let handed = self.handed.lock().unwrap_or_else(PoisonError::into_inner).take();
        let mut handed = match handed {
            Some(handed) => handed,
            // Run twice: the first run's loop has the hand-offs; this one claims for itself.
            None => mpsc::unbounded_channel().1,
        };
        self.clone().drive_due(stop, &mut handed).await;
        let _ = feed.await;
        let _ = gauges.await;
        // Instances claimed by the consumer but not driven before the stop go back, due now.
        handed.close();
        while let Ok((claim, _permit)) = handed.try_recv() {
            self.give_back(&claim).await;
        }
        heartbeat.abort();
    }

    /// Gives an instance back undriven, due now.
    async fn give_back(&self, claim: &Claimed) {
        let now = self.clock.now().timestamp_millis();
        let release = Release { status: None, step: None, due_at_ms: Some(now), last_error: None };
        if let Err(err) = self.schedule.release(&self.owner, claim, &release, now).await {
            tracing::warn!(saga_id = %claim.saga_id, error = %err, "could not give a saga back; its lease will expire");
        }
        self.driving().remove(&claim.saga_id);
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
            match self.consume_batch(&stop).await {
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
    /// New instances are claimed for this process while it has free drive slots (not once it is
    /// stopping) and handed to the drive loop once the batch is committed.
    async fn consume_batch(&self, stop: &watch::Receiver<bool>) -> Result<bool, StoreError> {
        let after = self.db.checkpoint(CHECKPOINT).await?;
        let batch = self.store.read_feed(after, 500).await?;
        let Some(last) = batch.last().map(|e| e.position) else { return Ok(false) };
        let now = self.clock.now().timestamp_millis();
        let claim_until = now.saturating_add(self.lease_ms());
        let mut tx = self.db.begin().await?;
        let mut triggered = false;
        let mut handoffs = Vec::new();
        for event in batch.iter().filter(|e| e.aggregate_type == "Reservation") {
            match event.event_type.as_str() {
                "ReservationRequested" => {
                    let slot = match *stop.borrow() {
                        true => None,
                        false => self.slots.clone().try_acquire_owned().ok(),
                    };
                    let lease = slot.as_ref().map(|_| (self.owner.as_str(), claim_until));
                    let new = Schedule::start(&mut tx, &event.aggregate_id, now, lease).await?;
                    match slot {
                        Some(slot) if new => {
                            handoffs.push((Claimed { saga_id: event.aggregate_id.clone(), wakes: 0 }, slot));
                        }
                        _ => triggered = true,
                    }
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
        for (claim, slot) in handoffs {
            self.driving().insert(claim.saga_id.clone(), claim_until);
            if let Err(mpsc::error::SendError((claim, _slot))) = self.handoff.send((claim, slot)) {
                // The drive loop has ended (a stop): give the instance back.
                self.give_back(&claim).await;
            }
        }
        if triggered {
            self.wake.notify_one();
        }
        Ok(true)
    }

    async fn drive_due(
        self: Arc<Self>,
        mut stop: watch::Receiver<bool>,
        handed: &mut mpsc::UnboundedReceiver<Handoff>,
    ) {
        let slots = self.slots.clone();
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
                match slots.clone().try_acquire_owned() {
                    Ok(slot) => self.spawn_drive(&mut drives, claim, slot),
                    // The feed consumer took the slot for a new instance since the claim.
                    Err(_) => self.give_back(&claim).await,
                }
            }
            if claimed_any && slots.available_permits() > 0 {
                continue;
            }
            let pause = self.pause_until_due().await;
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(pause) => {}
                Some(_) = drives.join_next(), if !drives.is_empty() => {}
                Some((claim, slot)) = handed.recv() => self.spawn_drive(&mut drives, claim, slot),
                _ = stop.changed() => {}
            }
        }
        // Stopping: finish the drives in progress (each ends at its next wait or step boundary).
        while drives.join_next().await.is_some() {}
    }

    /// Drives `claim` in a task of `drives`, holding `slot` until it is done.
    fn spawn_drive(self: &Arc<Self>, drives: &mut JoinSet<()>, claim: Claimed, slot: OwnedSemaphorePermit) {
        let worker = self.clone();
        drives.spawn(async move {
            worker.drive_one(&claim).await;
            worker.driving().remove(&claim.saga_id);
            drop(slot);
        });
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
