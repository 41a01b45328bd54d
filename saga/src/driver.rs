//! Driving one saga instance: decide, act, record — until it has to wait.
//!
//! Each action is one command to an aggregate or one provider call, and each is safe to repeat:
//! the aggregates treat a repeated saga command as a no-op, the provider honours its idempotency
//! keys, and every command carries a deterministic `command_id`. So when a driver dies between
//! acting and recording, the next one repeats the action and records the same outcome.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use stay_domain::{
    Clock, PaymentCommand, PaymentId, PaymentStatus, PositiveMoney, RefundId, RejectionReason, ReservationCommand,
    ReservationError, ReservationStatus, RoomCommand, RoomError, RoomEvent,
};
use stay_store::{CommandContext, ExecuteError, Executor, Executors, StoreError};

use crate::instance::{
    Action, CompensationReason, Deadline, SagaCommand, SagaError, SagaEvent, SagaInstance, Step, StepOutcome,
};
use crate::payment_ledger::PaymentLedger;
use crate::provider::{
    ChargeOutcome, ChargeRequest, LedgerKind, LedgerStatus, PaymentProvider, ProviderError, RefundOutcome,
    RefundRequest, VoidOutcome, VoidRequest,
};
use crate::schedule::Schedule;

/// How the saga paces itself.
#[derive(Clone, Debug)]
pub struct SagaConfig {
    /// How long a charge may go unanswered before the reservation is rejected and the charge voided.
    pub payment_deadline: Duration,
    /// Failures in a row after which a step (other than the charge, which has its deadline) is parked.
    pub max_step_failures: u32,
    /// First retry delay; doubles per failure, with jitter.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// How long a driver holds an instance without renewing.
    pub lease: Duration,
    /// Instances driven at once per process.
    pub concurrency: usize,
}

impl Default for SagaConfig {
    fn default() -> Self {
        Self {
            payment_deadline: Duration::from_secs(60),
            max_step_failures: 10,
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
            lease: Duration::from_secs(60),
            concurrency: 64,
        }
    }
}

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
    pub async fn drive<F, Fut>(&self, saga_id: &str, mut renew: F) -> Result<Settled, DriveError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool, StoreError>>,
    {
        for _ in 0..MAX_ACTIONS_PER_DRIVE {
            let (saga, _) = self.sagas.load(saga_id).await?;
            let (reservation, _) = self.executors.reservations.load(saga_id).await?;
            let cancel_requested = reservation.status() == Some(ReservationStatus::Cancelling);
            let now = self.clock.now();
            let action = saga.next_action(now, cancel_requested);
            let due = match &action {
                Action::Idle => None,
                Action::WaitUntil(at) => Some(*at),
                _ => {
                    if !renew().await? {
                        return Err(DriveError::LeaseLost);
                    }
                    let started = Instant::now();
                    let step = saga.step(now, cancel_requested);
                    let events = self.perform(saga_id, &saga, action, now).await;
                    metrics::histogram!("stay_saga_step_duration_seconds", "step" => step.as_str())
                        .record(started.elapsed().as_secs_f64());
                    self.record(saga_id, &saga, events).await?;
                    continue;
                }
            };
            let step = saga.step(now, cancel_requested);
            return Ok(Settled { saga, due, step });
        }
        let (saga, _) = self.sagas.load(saga_id).await?;
        let now = self.clock.now();
        Ok(Settled { step: saga.step(now, false), saga, due: Some(now) })
    }

    async fn record(&self, saga_id: &str, saga: &SagaInstance, events: Vec<SagaEvent>) -> Result<(), DriveError> {
        if events.is_empty() {
            return Ok(());
        }
        let context = CommandContext::new("saga")
            .with_command_id(format!("saga:{saga_id}:{}", saga.version()))
            .correlated_to(saga_id);
        let command = SagaCommand::Record { version: saga.version(), events };
        match self.sagas.execute(saga_id, command, &context).await {
            Ok(_) | Err(ExecuteError::Rejected(SagaError::Stale { .. })) => Ok(()),
            Err(ExecuteError::Rejected(other)) => {
                tracing::error!(saga_id, error = %other, "the saga refused its own record");
                Ok(())
            }
            Err(ExecuteError::Conflict { .. }) => Ok(()),
            Err(ExecuteError::Store(err)) => Err(err.into()),
        }
    }

    /// Performs `action` and says what came of it, as events to record.
    async fn perform(&self, saga_id: &str, saga: &SagaInstance, action: Action, now: DateTime<Utc>) -> Vec<SagaEvent> {
        let step = saga.step(now, false);
        let result = match action {
            Action::Start => self.start(saga_id).await,
            Action::Hold => self.hold(saga, now).await,
            Action::RequestCharge => self.request_charge(saga, now).await,
            Action::Charge => return self.charge(saga, now).await,
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
        result.unwrap_or_else(|error| self.failed(saga, step, error, now))
    }

    /// A step failed: retry after a backoff, or park after too many failures in a row. While the
    /// provider's circuit is open the step waits for it, without counting towards parking.
    fn failed(&self, saga: &SagaInstance, step: Step, error: StepError, now: DateTime<Utc>) -> Vec<SagaEvent> {
        let error = match error {
            StepError::Wait { error, retry_in } => {
                let retry_at = now + chrono::Duration::from_std(retry_in).unwrap_or(chrono::Duration::seconds(1));
                return vec![SagaEvent::StepFailed { step, error, attempt: saga.failures(), retry_at: Some(retry_at) }];
            }
            StepError::Failed(error) => error,
        };
        let attempt = saga.failures() + 1;
        metrics::counter!("stay_saga_retries_total", "step" => step.as_str()).increment(1);
        tracing::warn!(step = step.as_str(), attempt, %error, "saga step failed");
        if attempt >= self.config.max_step_failures {
            return vec![
                SagaEvent::StepFailed { step, error: error.clone(), attempt, retry_at: None },
                SagaEvent::SagaParked { step, error },
            ];
        }
        let retry_at = now + self.backoff(attempt);
        vec![SagaEvent::StepFailed { step, error, attempt, retry_at: Some(retry_at) }]
    }

    fn backoff(&self, attempt: u32) -> chrono::Duration {
        let base = self.config.retry_base.as_millis() as u64;
        let cap = self.config.retry_max.as_millis() as u64;
        let ceiling = base.saturating_mul(1u64 << attempt.min(20)).min(cap).max(1);
        let ms = rand::thread_rng().gen_range(ceiling / 2..=ceiling);
        chrono::Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX))
    }

    fn context(&self, saga: &SagaInstance, saga_id: &str, step: &str) -> CommandContext {
        CommandContext::new("saga")
            .with_command_id(format!("saga:{saga_id}:{step}"))
            .correlated_to(saga_id)
            .caused_by(format!("ReservationSaga:{saga_id}@{}", saga.version()))
    }

    async fn start(&self, saga_id: &str) -> Result<Vec<SagaEvent>, StepError> {
        let (reservation, _) = self.executors.reservations.load(saga_id).await.map_err(|e| e.to_string())?;
        let details = reservation.details().ok_or("the reservation does not exist")?;
        Ok(vec![SagaEvent::SagaStarted {
            reservation_id: details.reservation_id,
            room_id: details.room_id,
            guest_id: details.guest_id.clone(),
            stay: details.stay,
            guests: details.guests,
            card_token: details.card_token.clone(),
        }])
    }

    async fn hold(&self, saga: &SagaInstance, started_at: DateTime<Utc>) -> Result<Vec<SagaEvent>, StepError> {
        let facts = saga.facts().ok_or("not started")?;
        let room_id = facts.room_id.to_string();
        let command = RoomCommand::HoldNights {
            reservation_id: facts.reservation_id,
            guest_id: facts.guest_id.clone(),
            stay: facts.stay,
            guests: facts.guests,
        };
        let context = self.context(saga, &facts.reservation_id.to_string(), "hold");
        let refused = |reason: RejectionReason| {
            let outcome = StepOutcome::HoldRefused { reason: reason.clone() };
            vec![
                SagaEvent::StepSucceeded { step: Step::Hold, outcome, started_at },
                SagaEvent::CompensationStarted { reason: CompensationReason::Rejected { reason } },
            ]
        };
        match self.executors.rooms.execute(&room_id, command, &context).await {
            Ok(committed) => {
                let held = committed.events.iter().find_map(|e| match &e.event {
                    RoomEvent::NightsHeld { price, .. } => Some(*price),
                    _ => None,
                });
                // Held by an earlier attempt: the room's calendar still has the price.
                let price = match held {
                    Some(price) => price,
                    None => {
                        let (room, _) = self.executors.rooms.load(&room_id).await.map_err(|e| e.to_string())?;
                        room.calendar()
                            .entry(facts.reservation_id)
                            .map(|entry| entry.price)
                            .ok_or("the hold vanished")?
                    }
                };
                Ok(vec![SagaEvent::StepSucceeded {
                    step: Step::Hold,
                    outcome: StepOutcome::Held { price },
                    started_at,
                }])
            }
            Err(ExecuteError::Rejected(err)) => match err {
                RoomError::DatesUnavailable => Ok(refused(RejectionReason::DatesUnavailable)),
                RoomError::RoomNotFound | RoomError::RoomDelisted => Ok(refused(RejectionReason::RoomUnavailable)),
                RoomError::TooManyGuests { .. } => Ok(refused(RejectionReason::TooManyGuests)),
                RoomError::StayInPast { .. } => Ok(refused(RejectionReason::StayInPast)),
                other => Ok(refused(RejectionReason::Other { detail: other.to_string() })),
            },
            Err(other) => Err(StepError::Failed(other.to_string())),
        }
    }

    async fn request_charge(&self, saga: &SagaInstance, now: DateTime<Utc>) -> Result<Vec<SagaEvent>, StepError> {
        let facts = saga.facts().ok_or("not started")?;
        let price = saga.price().ok_or("no price")?;
        let amount = PositiveMoney::new(price).map_err(|e| e.to_string())?;
        let payment_id = PaymentId::for_reservation(facts.reservation_id);
        let command = PaymentCommand::RequestCharge {
            payment_id,
            reservation_id: facts.reservation_id,
            amount,
            card_token: facts.card_token.clone(),
        };
        let context = self.context(saga, &facts.reservation_id.to_string(), "request_charge");
        self.executors.payments.execute(&payment_id.to_string(), command, &context).await.map_err(|e| e.to_string())?;
        let deadline = chrono::Duration::from_std(self.config.payment_deadline).unwrap_or(chrono::Duration::MAX);
        Ok(vec![
            SagaEvent::StepRequested { step: Step::Charge },
            SagaEvent::DeadlineSet { deadline: Deadline::Payment, at: now + deadline },
        ])
    }

    /// The payment aggregate's own word on the charge, when it already has one (recorded by an
    /// earlier attempt that died before the saga recorded it).
    async fn known_outcome(&self, saga: &SagaInstance) -> Result<Option<StepOutcome>, StepError> {
        let facts = saga.facts().ok_or("not started")?;
        let payment_id = PaymentId::for_reservation(facts.reservation_id).to_string();
        let (payment, _) = self.executors.payments.load(&payment_id).await.map_err(|e| e.to_string())?;
        let Some(details) = payment.details() else { return Ok(None) };
        Ok(match details.status {
            PaymentStatus::Approved | PaymentStatus::Refunded => {
                Some(StepOutcome::ChargeApproved { provider_ref: details.provider_ref.clone().unwrap_or_default() })
            }
            PaymentStatus::Declined => Some(StepOutcome::ChargeDeclined { reason: "declined".into() }),
            PaymentStatus::Pending | PaymentStatus::Failed | PaymentStatus::Voided => None,
        })
    }

    async fn charge(&self, saga: &SagaInstance, started_at: DateTime<Utc>) -> Vec<SagaEvent> {
        match self.try_charge(saga, started_at).await {
            Ok(events) => events,
            Err(StepError::Wait { error, retry_in }) => {
                let retry_at =
                    started_at + chrono::Duration::from_std(retry_in).unwrap_or(chrono::Duration::seconds(1));
                vec![SagaEvent::StepFailed {
                    step: Step::Charge,
                    error,
                    attempt: saga.failures(),
                    retry_at: Some(retry_at),
                }]
            }
            Err(StepError::Failed(error)) => {
                // The charge never parks: its deadline ends it.
                let attempt = saga.failures() + 1;
                metrics::counter!("stay_saga_retries_total", "step" => "charge").increment(1);
                let retry_at = started_at + self.backoff(attempt);
                vec![SagaEvent::StepFailed { step: Step::Charge, error, attempt, retry_at: Some(retry_at) }]
            }
        }
    }

    async fn try_charge(&self, saga: &SagaInstance, started_at: DateTime<Utc>) -> Result<Vec<SagaEvent>, StepError> {
        let facts = saga.facts().ok_or("not started")?;
        let declined = |reason: String| {
            vec![
                SagaEvent::StepSucceeded {
                    step: Step::Charge,
                    outcome: StepOutcome::ChargeDeclined { reason },
                    started_at,
                },
                SagaEvent::CompensationStarted {
                    reason: CompensationReason::Rejected { reason: RejectionReason::PaymentDeclined },
                },
            ]
        };
        let price = saga.price().ok_or("no price")?;
        let reservation_id = facts.reservation_id;
        let payment_id = PaymentId::for_reservation(reservation_id);
        let key = format!("charge:{payment_id}");
        match self.known_outcome(saga).await? {
            Some(StepOutcome::ChargeDeclined { reason }) => {
                self.ledger(&key, saga, LedgerKind::Charge, price, LedgerStatus::Failed, None).await?;
                return Ok(declined(reason));
            }
            Some(outcome) => {
                self.note_known_charge(saga, &outcome).await?;
                return Ok(vec![SagaEvent::StepSucceeded { step: Step::Charge, outcome, started_at }]);
            }
            None => {}
        }
        self.ledger(&key, saga, LedgerKind::Charge, price, LedgerStatus::Pending, None).await?;
        let request = ChargeRequest {
            payment_id,
            reservation_id,
            amount: price,
            card_token: facts.card_token.as_str().to_owned(),
        };
        let outcome = self.provider.charge(&request).await.map_err(StepError::from_provider)?;
        let context = self.context(saga, &reservation_id.to_string(), "record_charge");
        let payment = payment_id.to_string();
        match outcome {
            ChargeOutcome::Approved { provider_ref } => {
                let command = PaymentCommand::RecordApproval { provider_ref: provider_ref.clone() };
                self.executors.payments.execute(&payment, command, &context).await.map_err(|e| e.to_string())?;
                self.ledger(&key, saga, LedgerKind::Charge, price, LedgerStatus::Succeeded, Some(&provider_ref))
                    .await?;
                let outcome = StepOutcome::ChargeApproved { provider_ref };
                Ok(vec![SagaEvent::StepSucceeded { step: Step::Charge, outcome, started_at }])
            }
            ChargeOutcome::Declined { reason } => {
                let command = PaymentCommand::RecordDecline { reason: reason.clone() };
                self.executors.payments.execute(&payment, command, &context).await.map_err(|e| e.to_string())?;
                self.ledger(&key, saga, LedgerKind::Charge, price, LedgerStatus::Failed, None).await?;
                Ok(declined(reason))
            }
        }
    }

    async fn fire_deadline(&self, saga: &SagaInstance) -> Result<Vec<SagaEvent>, StepError> {
        let facts = saga.facts().ok_or("not started")?;
        let payment_id = PaymentId::for_reservation(facts.reservation_id).to_string();
        let command =
            PaymentCommand::RecordFailure { reason: "no answer from the provider before the deadline".into() };
        let context = self.context(saga, &facts.reservation_id.to_string(), "record_failure");
        match self.executors.payments.execute(&payment_id, command, &context).await {
            // The charge was answered after all (by an attempt that died before recording it): the
            // compensation's void step learns of it from the Payment and refunds instead.
            Err(ExecuteError::Rejected(_)) | Ok(_) => {}
            Err(other) => return Err(StepError::Failed(other.to_string())),
        }
        Ok(vec![
            SagaEvent::DeadlineFired { deadline: Deadline::Payment },
            SagaEvent::CompensationStarted {
                reason: CompensationReason::Rejected { reason: RejectionReason::PaymentUnavailable },
            },
        ])
    }

    async fn confirm(&self, saga: &SagaInstance, started_at: DateTime<Utc>) -> Result<Vec<SagaEvent>, StepError> {
        let facts = saga.facts().ok_or("not started")?;
        let price = saga.price().ok_or("no price")?;
        let id = facts.reservation_id.to_string();
        let booking = RoomCommand::ConfirmBooking { reservation_id: facts.reservation_id };
        let context = self.context(saga, &id, "confirm_booking");
        self.executors.rooms.execute(&facts.room_id.to_string(), booking, &context).await.map_err(|e| e.to_string())?;
        let confirm = ReservationCommand::Confirm {
            total_price: price,
            payment_id: PaymentId::for_reservation(facts.reservation_id),
        };
        let context = self.context(saga, &id, "confirm");
        match self.executors.reservations.execute(&id, confirm, &context).await {
            Ok(_) => {
                Ok(vec![SagaEvent::StepSucceeded { step: Step::Confirm, outcome: StepOutcome::Confirmed, started_at }])
            }
            Err(ExecuteError::Rejected(ReservationError::WrongStatus {
                status: ReservationStatus::Cancelling | ReservationStatus::Cancelled,
            })) => Ok(vec![
                SagaEvent::StepSucceeded {
                    step: Step::Confirm,
                    outcome: StepOutcome::CancelledBeforeConfirm,
                    started_at,
                },
                SagaEvent::CompensationStarted { reason: CompensationReason::Cancelled },
            ]),
            Err(other) => Err(StepError::Failed(other.to_string())),
        }
    }

    async fn void(&self, saga: &SagaInstance, started_at: DateTime<Utc>) -> Result<Vec<SagaEvent>, StepError> {
        let facts = saga.facts().ok_or("not started")?;
        // An answer recorded on the payment but not in the saga settles what is to be undone.
        if let Some(outcome) = self.known_outcome(saga).await? {
            self.note_known_charge(saga, &outcome).await?;
            return Ok(vec![SagaEvent::StepSucceeded { step: Step::Charge, outcome, started_at }]);
        }
        let price = saga.price().ok_or("no price")?;
        let reservation_id = facts.reservation_id;
        let payment_id = PaymentId::for_reservation(reservation_id);
        let key = format!("void:{payment_id}");
        self.ledger(&key, saga, LedgerKind::Void, price, LedgerStatus::Pending, None).await?;
        let outcome =
            self.provider.void(&VoidRequest { payment_id, reservation_id }).await.map_err(StepError::from_provider)?;
        let reason = "the charge's outcome was unknown when the reservation was undone".to_owned();
        let context = self.context(saga, &reservation_id.to_string(), "void");
        match self
            .executors
            .payments
            .execute(&payment_id.to_string(), PaymentCommand::VoidCharge { reason }, &context)
            .await
        {
            Ok(_) | Err(ExecuteError::Rejected(stay_domain::PaymentError::PaymentNotFound)) => {}
            Err(other) => return Err(StepError::Failed(other.to_string())),
        }
        let charge_key = format!("charge:{payment_id}");
        let amount = match outcome {
            VoidOutcome::Voided { amount, provider_ref } => {
                self.ledger(&charge_key, saga, LedgerKind::Charge, price, LedgerStatus::Succeeded, None).await?;
                self.ledger(&key, saga, LedgerKind::Void, amount, LedgerStatus::Succeeded, Some(&provider_ref)).await?;
                Some(amount)
            }
            VoidOutcome::NothingToVoid => {
                self.ledger(&charge_key, saga, LedgerKind::Charge, price, LedgerStatus::Failed, None).await?;
                let zero = stay_domain::Money::zero(price.currency());
                self.ledger(&key, saga, LedgerKind::Void, zero, LedgerStatus::Failed, None).await?;
                None
            }
        };
        Ok(vec![SagaEvent::StepSucceeded { step: Step::Void, outcome: StepOutcome::Voided { amount }, started_at }])
    }

    async fn refund(&self, saga: &SagaInstance, started_at: DateTime<Utc>) -> Result<Vec<SagaEvent>, StepError> {
        let facts = saga.facts().ok_or("not started")?;
        let price = saga.price().ok_or("no price")?;
        let reservation_id = facts.reservation_id;
        let payment_id = PaymentId::for_reservation(reservation_id);
        let refund_id = RefundId::for_cancellation(reservation_id);
        let key = format!("refund:{refund_id}");
        self.ledger(&key, saga, LedgerKind::Refund, price, LedgerStatus::Pending, None).await?;
        let request = RefundRequest { refund_id, payment_id, reservation_id, amount: price };
        match self.provider.refund(&request).await.map_err(StepError::from_provider)? {
            RefundOutcome::Refunded { provider_ref } => {
                let amount = PositiveMoney::new(price).map_err(|e| e.to_string())?;
                let context = self.context(saga, &reservation_id.to_string(), "refund");
                let command = PaymentCommand::Refund { refund_id, amount };
                self.executors
                    .payments
                    .execute(&payment_id.to_string(), command, &context)
                    .await
                    .map_err(|e| e.to_string())?;
                self.ledger(&key, saga, LedgerKind::Refund, price, LedgerStatus::Succeeded, Some(&provider_ref))
                    .await?;
                Ok(vec![SagaEvent::StepSucceeded {
                    step: Step::Refund,
                    outcome: StepOutcome::Refunded { amount: price },
                    started_at,
                }])
            }
            RefundOutcome::Refused { reason } => {
                self.ledger(&key, saga, LedgerKind::Refund, price, LedgerStatus::Failed, None).await?;
                Err(StepError::Failed(format!("the provider refused the refund: {reason}")))
            }
        }
    }

    async fn release(&self, saga: &SagaInstance, started_at: DateTime<Utc>) -> Result<Vec<SagaEvent>, StepError> {
        let facts = saga.facts().ok_or("not started")?;
        let command = RoomCommand::ReleaseNights { reservation_id: facts.reservation_id };
        let context = self.context(saga, &facts.reservation_id.to_string(), "release");
        match self.executors.rooms.execute(&facts.room_id.to_string(), command, &context).await {
            // A room that does not exist holds nothing.
            Ok(_) | Err(ExecuteError::Rejected(RoomError::RoomNotFound)) => {}
            Err(other) => return Err(StepError::Failed(other.to_string())),
        }
        Ok(vec![SagaEvent::StepSucceeded { step: Step::Release, outcome: StepOutcome::Released, started_at }])
    }

    async fn reject(
        &self,
        saga: &SagaInstance,
        reason: RejectionReason,
        started_at: DateTime<Utc>,
    ) -> Result<Vec<SagaEvent>, StepError> {
        let facts = saga.facts().ok_or("not started")?;
        let id = facts.reservation_id.to_string();
        let context = self.context(saga, &id, "reject");
        match self.executors.reservations.execute(&id, ReservationCommand::Reject { reason }, &context).await {
            Ok(_) => {
                Ok(vec![SagaEvent::StepSucceeded { step: Step::Reject, outcome: StepOutcome::Rejected, started_at }])
            }
            // The guest cancelled while the saga was undoing: finish as a cancellation.
            Err(ExecuteError::Rejected(ReservationError::WrongStatus {
                status: ReservationStatus::Cancelling | ReservationStatus::Cancelled,
            })) => Ok(vec![SagaEvent::CompensationStarted { reason: CompensationReason::Cancelled }]),
            Err(other) => Err(StepError::Failed(other.to_string())),
        }
    }

    async fn complete_cancellation(
        &self,
        saga: &SagaInstance,
        started_at: DateTime<Utc>,
    ) -> Result<Vec<SagaEvent>, StepError> {
        let facts = saga.facts().ok_or("not started")?;
        let id = facts.reservation_id.to_string();
        let context = self.context(saga, &id, "complete_cancellation");
        self.executors
            .reservations
            .execute(&id, ReservationCommand::CompleteCancellation, &context)
            .await
            .map_err(|e| e.to_string())?;
        let outcome = StepOutcome::CancellationCompleted;
        Ok(vec![SagaEvent::StepSucceeded { step: Step::CompleteCancellation, outcome, started_at }])
    }

    /// Brings the ledger's charge row up to what the Payment recorded (a driver may have died
    /// between recording the provider's answer on the Payment and in the ledger).
    async fn note_known_charge(&self, saga: &SagaInstance, outcome: &StepOutcome) -> Result<(), StepError> {
        let (Some(facts), Some(price)) = (saga.facts(), saga.price()) else { return Ok(()) };
        let key = format!("charge:{}", PaymentId::for_reservation(facts.reservation_id));
        match outcome {
            StepOutcome::ChargeApproved { provider_ref } => {
                let provider_ref = Some(provider_ref.as_str()).filter(|r| !r.is_empty());
                self.ledger(&key, saga, LedgerKind::Charge, price, LedgerStatus::Succeeded, provider_ref).await
            }
            StepOutcome::ChargeDeclined { .. } => {
                self.ledger(&key, saga, LedgerKind::Charge, price, LedgerStatus::Failed, None).await
            }
            _ => Ok(()),
        }
    }

    /// Notes a provider call in the ledger. A failure fails the step, whose retry (every step is
    /// idempotent) writes the row again, so the ledger never stays behind the Payment.
    async fn ledger(
        &self,
        key: &str,
        saga: &SagaInstance,
        kind: LedgerKind,
        amount: stay_domain::Money,
        status: LedgerStatus,
        provider_ref: Option<&str>,
    ) -> Result<(), StepError> {
        let Some(facts) = saga.facts() else { return Ok(()) };
        let payment_id = PaymentId::for_reservation(facts.reservation_id).to_string();
        let now = self.clock.now().timestamp_millis();
        let noted = self
            .ledger
            .record_payment(
                key,
                &payment_id,
                &facts.reservation_id.to_string(),
                kind,
                amount.amount_minor(),
                amount.currency().as_str(),
                status,
                provider_ref,
                now,
            )
            .await;
        noted.map_err(|err| StepError::Failed(format!("could not note a provider call in the ledger: {err}")))
    }
}

/// Why a step did not complete.
#[derive(Debug)]
enum StepError {
    /// It failed; it is retried after a backoff and parked after too many failures.
    Failed(String),
    /// It could not be tried: the provider's circuit is open for `retry_in`.
    Wait {
        /// Why.
        error: String,
        /// How long until a call may go through.
        retry_in: Duration,
    },
}

impl StepError {
    fn from_provider(err: ProviderError) -> Self {
        match err {
            ProviderError::CircuitOpen { retry_in_ms } => {
                StepError::Wait { error: err.to_string(), retry_in: Duration::from_millis(retry_in_ms.max(50)) }
            }
            other => StepError::Failed(other.to_string()),
        }
    }
}

impl From<String> for StepError {
    fn from(error: String) -> Self {
        StepError::Failed(error)
    }
}

impl From<&str> for StepError {
    fn from(error: &str) -> Self {
        StepError::Failed(error.to_owned())
    }
}
