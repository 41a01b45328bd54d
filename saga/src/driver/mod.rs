//! Driving one saga instance: decide, act, record — until it has to wait.
//!
//! Each action is one command to an aggregate or one provider call (the `steps` module holds them),
//! and each is safe to repeat: the aggregates treat a repeated saga command as a no-op, the
//! provider honours its idempotency keys, and every command carries a deterministic `command_id`.
//! So when a driver dies between acting and recording, the next one repeats the action and
//! records the same outcome. A step that fails says why ([`StepError`]); what follows is decided
//! by [`decide`] and recorded, so every retry, wait and park is on the saga's timeline.
//!
//! The events of several steps are recorded together, in one commit on the saga's stream, before
//! the drive calls the payment provider and when it stops (see [`Driver::drive`]).
//!
//! Each step runs in a `saga_step` span carrying the saga id (the reservation id, which is also
//! the correlation id of every command the saga sends), the action and step, and the saga's
//! version the step was decided on (counting the events of earlier steps not yet recorded). Each
//! record runs in a `saga_record` span with the version it was decided on, how many events it
//! carries and the feed position of the last.

mod config;
mod decision;
mod error;
mod steps;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use stay_domain::{Clock, Reservation, ReservationStatus};
use stay_store::{CommandContext, ExecuteError, Executor, Executors, StoreError};
use tracing::Instrument;

pub use config::SagaConfig;
pub use decision::{decide, Decision};
pub use error::StepError;

use crate::instance::{Action, SagaCommand, SagaError, SagaEvent, SagaInstance, Step};
use crate::payment_ledger::PaymentLedger;
use crate::provider::PaymentProvider;
use crate::schedule::Schedule;

/// Why a drive stopped early.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    /// The store failed while reading or recording the saga.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another driver took the instance (our lease expired).
    #[error("the lease on the saga was lost")]
    LeaseLost,
}

/// Where a drive left an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settled {
    /// The instance.
    pub saga: SagaInstance,
    /// When to look again (`None`: only when woken).
    pub due: Option<DateTime<Utc>>,
    /// The step it is at.
    pub step: Step,
}

/// Drives saga instances.
#[derive(Debug)]
pub struct Driver {
    executors: Arc<Executors>,
    sagas: Arc<Executor<SagaInstance>>,
    provider: Arc<dyn PaymentProvider>,
    ledger: PaymentLedger,
    clock: Arc<dyn Clock>,
    config: SagaConfig,
}

/// The most actions in one drive before the instance is given back (and taken again when due).
const MAX_ACTIONS_PER_DRIVE: usize = 64;

/// Whether what the drive has done so far must be on record before `action`: before a call to the
/// payment provider, and before the drive stops to wait.
fn records_first(action: &Action) -> bool {
    matches!(action, Action::Charge | Action::Void | Action::Refund | Action::WaitUntil(_) | Action::Idle)
}

/// A drive's view of its saga: the state last recorded, and the events its steps have added since.
#[derive(Debug)]
struct Unrecorded {
    /// The saga's version in the store, which the next record is decided on.
    recorded_version: u64,
    /// The events not yet recorded.
    events: Vec<SagaEvent>,
    /// The recorded state with those events applied: what the next action is decided on.
    state: SagaInstance,
    /// The event the next record's events follow from (`Type:id@sequence`), its causation id:
    /// the saga's own last recorded event, or the reservation's event that woke the drive.
    cause: String,
}

/// How an event is named in a causation id: `Type:id@sequence`.
fn event_name(aggregate_type: &str, id: &str, sequence: u64) -> String {
    format!("{aggregate_type}:{id}@{sequence}")
}

impl Unrecorded {
    fn at(recorded: SagaInstance, saga_id: &str) -> Self {
        let cause = event_name(SagaInstance::TYPE, saga_id, recorded.version());
        Self { recorded_version: recorded.version(), events: Vec::new(), state: recorded, cause }
    }

    fn any(&self) -> bool {
        !self.events.is_empty()
    }

    fn push(&mut self, events: Vec<SagaEvent>) {
        for event in &events {
            self.state.apply(event.clone());
        }
        self.events.extend(events);
    }

    fn recorded(&mut self, saga_id: &str) {
        self.recorded_version = self.state.version();
        self.events.clear();
        self.cause = event_name(SagaInstance::TYPE, saga_id, self.recorded_version);
    }
}

impl Driver {
    /// A driver over the aggregates' executors, the saga's own, the provider and the schedule (whose
    /// database also holds the payment ledger the driver writes).
    pub fn new(
        executors: Arc<Executors>,
        sagas: Arc<Executor<SagaInstance>>,
        provider: Arc<dyn PaymentProvider>,
        schedule: Schedule,
        clock: Arc<dyn Clock>,
        config: SagaConfig,
    ) -> Self {
        let ledger = PaymentLedger::new(schedule.database().clone());
        Self { executors, sagas, provider, ledger, clock, config }
    }

    /// The saga executor (for operators' resumes).
    pub fn sagas(&self) -> &Executor<SagaInstance> {
        &self.sagas
    }

    /// Drives `saga_id` until it has to wait; `renew` keeps the lease (false: lost).
    ///
    /// What the steps of one drive come to is recorded together, in as few commits as the saga's
    /// promises allow: before anything goes to the payment provider (so the charge's request and
    /// its deadline are on record before money can move) and when the drive stops. A crash in
    /// between loses only records of steps that every repeat tolerates, and the next driver does
    /// them again from the last record.
    pub async fn drive<F, Fut>(&self, saga_id: &str, mut renew: F) -> Result<Settled, DriveError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool, StoreError>>,
    {
        let mut unrecorded = Unrecorded::at(self.sagas.load(saga_id).await?.0, saga_id);
        for round in 0..MAX_ACTIONS_PER_DRIVE {
            // The first look reads the store. Later ones in the same drive take the reservation this
            // process's own steps left in the executor's cache: a write decided on a state that fell
            // behind is refused (the append's expected version), and a cancellation from another
            // process wakes the saga for a drive of its own.
            let (reservation, reservation_version) = match round {
                0 => self.executors.reservations.load(saga_id).await?,
                _ => match self.executors.reservations.cached(saga_id).await {
                    Some(cached) => cached,
                    None => self.executors.reservations.load(saga_id).await?,
                },
            };
            let cancel_requested = reservation.status() == Some(ReservationStatus::Cancelling);
            let now = self.clock.now();
            let saga = &unrecorded.state;
            // A saga not yet started, or one the reservation's cancellation turns, follows from
            // the reservation's newest event rather than from its own.
            if !unrecorded.any()
                && (unrecorded.recorded_version == 0
                    || (cancel_requested && saga.next_action(now, true) != saga.next_action(now, false)))
            {
                unrecorded.cause = event_name(Reservation::TYPE, saga_id, reservation_version);
            }
            let action = saga.next_action(now, cancel_requested);
            let step = saga.step(now, cancel_requested);
            if unrecorded.any() && records_first(&action) && !self.record(saga_id, &mut unrecorded).await? {
                // Another driver moved the saga; decide again on what it recorded.
                continue;
            }
            let due = match &action {
                Action::Idle => None,
                Action::WaitUntil(at) => Some(*at),
                _ => {
                    if !renew().await? {
                        return Err(DriveError::LeaseLost);
                    }
                    let events = self.step(saga_id, &unrecorded.state, action, step, now).await;
                    unrecorded.push(events);
                    continue;
                }
            };
            return Ok(Settled { saga: unrecorded.state, due, step });
        }
        self.record(saga_id, &mut unrecorded).await?;
        let (saga, _) = self.sagas.load(saga_id).await?;
        let now = self.clock.now();
        Ok(Settled { step: saga.step(now, false), saga, due: Some(now) })
    }

    /// Performs one action in the step's span, and says what came of it.
    async fn step(
        &self,
        saga_id: &str,
        saga: &SagaInstance,
        action: Action,
        step: Step,
        now: DateTime<Utc>,
    ) -> Vec<SagaEvent> {
        let span = tracing::info_span!(
            "saga_step",
            saga_id,
            correlation_id = saga_id,
            action = action.as_str(),
            step = step.as_str(),
            version = saga.version(),
        );
        let work = async {
            let started = Instant::now();
            let events = self.perform(saga_id, saga, action, step, now).await;
            metrics::histogram!("stay_saga_step_duration_seconds", "step" => step.as_str())
                .record(started.elapsed().as_secs_f64());
            events
        };
        work.instrument(span).await
    }

    /// Records the steps' events on the saga as decided at the version it was loaded at, in the
    /// `saga_record` span. True when they were recorded (or there were none); false when another
    /// driver moved the saga first, and `unrecorded` then starts again from what the store holds.
    async fn record(&self, saga_id: &str, unrecorded: &mut Unrecorded) -> Result<bool, DriveError> {
        if !unrecorded.any() {
            return Ok(true);
        }
        let version = unrecorded.recorded_version;
        let span = tracing::info_span!(
            "saga_record",
            saga_id,
            correlation_id = saga_id,
            version,
            events = unrecorded.events.len(),
            position = tracing::field::Empty,
        );
        let work = async {
            let context = CommandContext::new("saga")
                .with_command_id(format!("saga:{saga_id}:{version}"))
                .correlated_to(saga_id)
                .caused_by(unrecorded.cause.clone());
            let command = SagaCommand::Record { version, events: unrecorded.events.clone() };
            match self.sagas.execute(saga_id, command, &context).await {
                Ok(committed) => {
                    if let Some(position) = committed.last_position() {
                        span.record("position", tracing::field::display(position));
                    }
                    for event in &unrecorded.events {
                        match event {
                            SagaEvent::SagaCompleted { outcome } => tracing::info!(?outcome, "saga completed"),
                            SagaEvent::SagaParked { step, error } => {
                                tracing::warn!(step = step.as_str(), %error, "saga parked; an operator must retry or skip the step");
                            }
                            _ => {}
                        }
                    }
                    unrecorded.recorded(saga_id);
                    return Ok(true);
                }
                Err(ExecuteError::Rejected(SagaError::Stale { .. }) | ExecuteError::Conflict { .. }) => {
                    tracing::debug!("the saga moved while the steps ran; looking again");
                }
                Err(ExecuteError::Rejected(other)) => {
                    tracing::error!(error = %other, "the saga refused its own record");
                }
                Err(ExecuteError::Store(err)) => return Err(err.into()),
            }
            *unrecorded = Unrecorded::at(self.sagas.load(saga_id).await?.0, saga_id);
            Ok(false)
        };
        work.instrument(span.clone()).await
    }

    /// Performs `action` and says what came of it, as events to record.
    async fn perform(
        &self,
        saga_id: &str,
        saga: &SagaInstance,
        action: Action,
        step: Step,
        now: DateTime<Utc>,
    ) -> Vec<SagaEvent> {
        let calling_for_charge = action == Action::Charge;
        let result = match action {
            Action::Start => self.start(saga_id).await,
            Action::Hold => self.hold(saga, now).await,
            Action::RequestCharge => self.request_charge(saga, now).await,
            Action::Charge => self.charge(saga, now).await,
            Action::Confirm => self.confirm(saga, now).await,
            Action::FireDeadline => self.fire_deadline(saga).await,
            Action::Compensate(reason) => Ok(vec![SagaEvent::CompensationStarted { reason }]),
            Action::Void => self.void(saga, now).await,
            Action::Refund => self.refund(saga, now).await,
            Action::Release => self.release(saga, now).await,
            Action::Reject(reason) => self.reject(saga, reason, now).await,
            Action::CompleteCancellation => self.complete_cancellation(saga, now).await,
            Action::Complete(outcome) => Ok(vec![SagaEvent::SagaCompleted { outcome }]),
            Action::WaitUntil(_) | Action::Idle => Ok(Vec::new()),
        };
        // The retry is timed from the failure, not from when the step began: a call that failed
        // after the payment deadline leaves no retry due before it, so the deadline fires next.
        result.unwrap_or_else(|error| self.failed(saga, step, calling_for_charge, &error, self.clock.now()))
    }

    /// A step failed: what [`decide`] makes of it, as events to record.
    fn failed(
        &self,
        saga: &SagaInstance,
        step: Step,
        calling_for_charge: bool,
        error: &StepError,
        now: DateTime<Utc>,
    ) -> Vec<SagaEvent> {
        let failures = saga.failures();
        let decision = decide(step, error, failures, &self.config, now, calling_for_charge);
        let attempt = if decision.counts() { failures.saturating_add(1) } else { failures };
        if decision.counts() {
            metrics::counter!("stay_saga_retries_total", "step" => step.as_str()).increment(1);
        }
        let text = error.to_string();
        match decision {
            Decision::Wait { until } => {
                tracing::debug!(%error, %until, "saga step waits for the payment provider");
                vec![SagaEvent::StepFailed { step, error: text, attempt, retry_at: Some(until) }]
            }
            Decision::RetryAt(at) => {
                tracing::warn!(attempt, %error, retry_at = %at, "saga step failed; retrying");
                vec![SagaEvent::StepFailed { step, error: text, attempt, retry_at: Some(at) }]
            }
            // Logged once the park is recorded.
            Decision::Park => {
                vec![
                    SagaEvent::StepFailed { step, error: text.clone(), attempt, retry_at: None },
                    SagaEvent::SagaParked { step, error: text },
                ]
            }
        }
    }
}
