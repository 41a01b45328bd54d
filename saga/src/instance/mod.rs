//! One reservation's saga: its events, the state they fold into, and the decision of what to do next.
//!
//! The instance is an event-sourced aggregate (`ReservationSaga`, id = the reservation id) stored in
//! the same log as the aggregates it drives, so its timeline, audit and replay come from the log.
//! Its routing is explicit: [`SagaInstance::next_action`] looks at what has happened (and at whether
//! the guest has asked to cancel) and names the one thing to do next. The driver performs it and
//! records what came of it; a crash between the two repeats the action, which every step tolerates.
//! Like the domain's aggregates, it takes time from the clock in its [`DomainServices`].

mod events;

#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use stay_domain::{
    CardToken, DomainServices, GuestCount, Money, RejectionReason, ReservationId, RoomId, StayDates, UserId,
};

pub use events::{
    CompensationReason, Deadline, Outcome, ResumeAction, SagaEvent, Step, StepOutcome, SAGA_EVENT_VERSION,
};

/// The reservation a saga carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// The reservation.
    pub reservation_id: ReservationId,
    /// Its room.
    pub room_id: RoomId,
    /// Its guest.
    pub guest_id: UserId,
    /// Its nights.
    pub stay: StayDates,
    /// Its guests.
    pub guests: GuestCount,
    /// The card to charge.
    pub card_token: CardToken,
}

/// Where the charge stands, as far as the saga knows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChargeState {
    /// Not asked for.
    #[default]
    NotRequested,
    /// Asked for; no answer yet (it may have gone through).
    Requested,
    /// The money was taken.
    Approved,
    /// The card was declined; no money moved.
    Declined,
    /// Voided: whatever was taken went back.
    Voided,
}

/// The saga's status, as the admin list shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaStatus {
    /// Working (or waiting for a retry or a deadline).
    Running,
    /// Ended with the reservation confirmed.
    Completed,
    /// Ended with everything undone (rejected or cancelled).
    Compensated,
    /// Waiting for an operator.
    Parked,
}

impl SagaStatus {
    /// The status's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            SagaStatus::Running => "running",
            SagaStatus::Completed => "completed",
            SagaStatus::Compensated => "compensated",
            SagaStatus::Parked => "parked",
        }
    }
}

/// The one thing to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Read the reservation and record the start.
    Start,
    /// Hold the nights.
    Hold,
    /// Ask the payment aggregate for a charge and set the payment deadline.
    RequestCharge,
    /// Call the provider.
    Charge,
    /// Confirm the booking and the reservation.
    Confirm,
    /// The payment deadline passed without an answer.
    FireDeadline,
    /// Begin undoing.
    Compensate(CompensationReason),
    /// Void the unknown charge.
    Void,
    /// Refund the approved charge.
    Refund,
    /// Free the nights.
    Release,
    /// Reject the reservation.
    Reject(RejectionReason),
    /// Mark the reservation cancelled.
    CompleteCancellation,
    /// Record the final state.
    Complete(Outcome),
    /// Nothing until this time (a retry, or the deadline).
    WaitUntil(DateTime<Utc>),
    /// Nothing until something happens outside (a cancellation, an operator).
    Idle,
}

impl Action {
    /// The action's name, for spans and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Hold => "hold",
            Action::RequestCharge => "request_charge",
            Action::Charge => "charge",
            Action::Confirm => "confirm",
            Action::FireDeadline => "fire_deadline",
            Action::Compensate(_) => "compensate",
            Action::Void => "void",
            Action::Refund => "refund",
            Action::Release => "release",
            Action::Reject(_) => "reject",
            Action::CompleteCancellation => "complete_cancellation",
            Action::Complete(_) => "complete",
            Action::WaitUntil(_) => "wait",
            Action::Idle => "idle",
        }
    }
}

/// What the saga is asked to record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SagaCommand {
    /// Record what came of an action, decided on the state at `version`.
    Record {
        /// The version the driver decided on; a different one means someone else moved the saga.
        version: u64,
        /// What happened.
        events: Vec<SagaEvent>,
    },
    /// An operator resumes a parked saga.
    Resume {
        /// Retry or skip.
        action: ResumeAction,
        /// Who.
        by: String,
    },
}

/// Why the saga refused to record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SagaError {
    /// The saga moved since the driver looked; it must look again.
    #[error("the saga is at version {actual}, not {expected}")]
    Stale {
        /// The version the driver decided on.
        expected: u64,
        /// The saga's version.
        actual: u64,
    },
    /// Only a parked saga can be resumed.
    #[error("the saga is {status}, not parked")]
    NotParked {
        /// Its status.
        status: &'static str,
    },
    /// No saga has this id.
    #[error("no such saga")]
    NotFound,
}

impl SagaError {
    /// A stable code for API answers.
    pub fn code(&self) -> &'static str {
        match self {
            SagaError::Stale { .. } => "saga_moved",
            SagaError::NotParked { .. } => "saga_not_parked",
            SagaError::NotFound => "saga_not_found",
        }
    }
}

/// A saga instance's state: everything its events say.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaInstance {
    version: u64,
    facts: Option<Facts>,
    price: Option<Money>,
    /// Whether the room is known to hold no nights for this reservation (a hold may have committed
    /// even if the saga did not record it, so only a recorded release or refusal sets it).
    released: bool,
    charge: ChargeState,
    charge_attempts: u32,
    payment_deadline: Option<DateTime<Utc>>,
    deadline_fired: bool,
    confirmed: bool,
    refunded: bool,
    rejected: bool,
    cancellation_completed: bool,
    compensation: Option<CompensationReason>,
    outcome: Option<Outcome>,
    failures: u32,
    retry_at: Option<DateTime<Utc>>,
    last_step: Option<Step>,
    last_error: Option<String>,
    parked: Option<Step>,
}

impl SagaInstance {
    /// How many events it has.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The reservation, once started.
    pub fn facts(&self) -> Option<&Facts> {
        self.facts.as_ref()
    }

    /// The price the room answered, once held.
    pub fn price(&self) -> Option<Money> {
        self.price
    }

    /// Where the charge stands.
    pub fn charge(&self) -> &ChargeState {
        &self.charge
    }

    /// How many provider calls for the charge failed.
    pub fn charge_attempts(&self) -> u32 {
        self.charge_attempts
    }

    /// The payment deadline, once set.
    pub fn payment_deadline(&self) -> Option<DateTime<Utc>> {
        self.payment_deadline
    }

    /// Failures in a row of the current step.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The last step recorded, and the last error.
    pub fn last(&self) -> (Option<Step>, Option<&str>) {
        (self.last_step, self.last_error.as_deref())
    }

    /// How it ended, if it has.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// Its status for the admin list.
    pub fn status(&self) -> SagaStatus {
        if self.parked.is_some() {
            return SagaStatus::Parked;
        }
        match (&self.outcome, &self.compensation) {
            (Some(Outcome::Confirmed), None) => SagaStatus::Completed,
            (Some(Outcome::Rejected { .. } | Outcome::Cancelled), _) => SagaStatus::Compensated,
            _ => SagaStatus::Running,
        }
    }

    /// The step the saga is at (or was at when it ended or parked), for the admin list.
    pub fn step(&self, now: DateTime<Utc>, cancel_requested: bool) -> Step {
        if let Some(step) = self.parked {
            return step;
        }
        match self.next_action(now, cancel_requested) {
            Action::Start => Step::Start,
            Action::Hold => Step::Hold,
            Action::RequestCharge | Action::Charge | Action::FireDeadline => Step::Charge,
            Action::Confirm => Step::Confirm,
            Action::Void => Step::Void,
            Action::Refund => Step::Refund,
            Action::Release => Step::Release,
            Action::Reject(_) => Step::Reject,
            Action::CompleteCancellation => Step::CompleteCancellation,
            Action::Compensate(_) | Action::Complete(_) | Action::WaitUntil(_) | Action::Idle => {
                self.last_step.unwrap_or(Step::Start)
            }
        }
    }

    /// What to do next, given the time and whether the reservation is being cancelled.
    pub fn next_action(&self, now: DateTime<Utc>, cancel_requested: bool) -> Action {
        if self.facts.is_none() {
            return Action::Start;
        }
        if self.parked.is_some() {
            return Action::Idle;
        }
        match (&self.outcome, &self.compensation) {
            (Some(Outcome::Rejected { .. } | Outcome::Cancelled), _) => return Action::Idle,
            (Some(Outcome::Confirmed), None) if !cancel_requested => return Action::Idle,
            (Some(Outcome::Confirmed), None) => return Action::Compensate(CompensationReason::Cancelled),
            _ => {}
        }
        if let Some(reason) = &self.compensation {
            if let Some(at) = self.retry_at.filter(|at| *at > now) {
                return Action::WaitUntil(at);
            }
            return self.next_compensation(reason);
        }
        if cancel_requested {
            return Action::Compensate(CompensationReason::Cancelled);
        }
        if self.price.is_none() {
            return self.retry_or(now, Action::Hold);
        }
        match self.charge {
            ChargeState::NotRequested => self.retry_or(now, Action::RequestCharge),
            ChargeState::Requested => {
                let deadline = self.payment_deadline.unwrap_or(now);
                if now >= deadline && !self.deadline_fired {
                    // The deadline is measured by the saga's progress, not by the clock alone: it
                    // fires once an attempt failed with no retry due before it. A saga that no
                    // process drove through its deadline (a crash, an outage) asks the provider
                    // once more first, and a charge approved before the crash is found approved.
                    return match self.retry_at {
                        Some(retry) if retry >= deadline => Action::FireDeadline,
                        _ => Action::Charge,
                    };
                }
                match self.retry_at.filter(|at| *at > now) {
                    Some(at) => Action::WaitUntil(at.min(deadline)),
                    None => Action::Charge,
                }
            }
            ChargeState::Declined => {
                Action::Compensate(CompensationReason::Rejected { reason: RejectionReason::PaymentDeclined })
            }
            ChargeState::Approved if !self.confirmed => self.retry_or(now, Action::Confirm),
            ChargeState::Approved => Action::Complete(Outcome::Confirmed),
            // Voided without a compensation cannot happen; undo whatever is left.
            ChargeState::Voided => {
                Action::Compensate(CompensationReason::Rejected { reason: RejectionReason::PaymentUnavailable })
            }
        }
    }

    fn retry_or(&self, now: DateTime<Utc>, action: Action) -> Action {
        match self.retry_at.filter(|at| *at > now) {
            Some(at) => Action::WaitUntil(at),
            None => action,
        }
    }

    /// The compensation's next step: give money back, free the nights, then settle the reservation.
    fn next_compensation(&self, reason: &CompensationReason) -> Action {
        if self.charge == ChargeState::Approved && !self.refunded {
            return Action::Refund;
        }
        if self.charge == ChargeState::Requested {
            return Action::Void;
        }
        // Release once unless the room is known to hold nothing: a hold may have committed
        // before a crash kept the saga from recording it, and releasing an unknown hold is a no-op.
        if !self.released {
            return Action::Release;
        }
        match reason {
            CompensationReason::Rejected { reason } if !self.rejected => Action::Reject(reason.clone()),
            CompensationReason::Rejected { reason } => Action::Complete(Outcome::Rejected { reason: reason.clone() }),
            CompensationReason::Cancelled if !self.cancellation_completed => Action::CompleteCancellation,
            CompensationReason::Cancelled => Action::Complete(Outcome::Cancelled),
        }
    }

    fn succeeded(&mut self, step: Step, outcome: &StepOutcome) {
        match outcome {
            StepOutcome::Started | StepOutcome::CancelledBeforeConfirm => {}
            StepOutcome::HoldRefused { .. } => self.released = true,
            StepOutcome::Held { price } => self.price = Some(*price),
            StepOutcome::ChargeApproved { .. } => self.charge = ChargeState::Approved,
            StepOutcome::ChargeDeclined { .. } => self.charge = ChargeState::Declined,
            StepOutcome::Confirmed => self.confirmed = true,
            StepOutcome::Voided { .. } => self.charge = ChargeState::Voided,
            StepOutcome::Refunded { .. } => self.refunded = true,
            StepOutcome::Released => self.released = true,
            StepOutcome::Rejected => self.rejected = true,
            StepOutcome::CancellationCompleted => self.cancellation_completed = true,
            StepOutcome::Skipped { .. } => self.skip(step),
        }
        self.failures = 0;
        self.retry_at = None;
        self.last_error = None;
    }

    /// An operator gave up a step: compensation steps count as done; a forward step rejects.
    fn skip(&mut self, step: Step) {
        let give_up = || CompensationReason::Rejected {
            reason: RejectionReason::Other { detail: format!("an operator skipped the {} step", step.as_str()) },
        };
        match step {
            Step::Void => self.charge = ChargeState::Voided,
            Step::Refund => self.refunded = true,
            Step::Release => self.released = true,
            Step::Reject => self.rejected = true,
            Step::CompleteCancellation => self.cancellation_completed = true,
            Step::Start | Step::Hold | Step::Charge | Step::Confirm => {
                if self.compensation.is_none() {
                    self.compensation = Some(give_up());
                }
            }
        }
    }
}

impl Aggregate for SagaInstance {
    const TYPE: &'static str = "ReservationSaga";
    type Command = SagaCommand;
    type Event = SagaEvent;
    type Error = SagaError;
    type Services = DomainServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let events = match command {
            SagaCommand::Record { version, events } => {
                if version != self.version {
                    return Err(SagaError::Stale { expected: version, actual: self.version });
                }
                events
            }
            SagaCommand::Resume { action, by } => {
                let Some(step) = self.parked else {
                    return Err(if self.facts.is_none() {
                        SagaError::NotFound
                    } else {
                        SagaError::NotParked { status: self.status().as_str() }
                    });
                };
                let mut events = vec![SagaEvent::SagaResumed { action, by: by.clone() }];
                if action == ResumeAction::Skip {
                    let started_at = services.clock.now();
                    events.push(SagaEvent::StepSucceeded { step, outcome: StepOutcome::Skipped { by }, started_at });
                }
                events
            }
        };
        for event in events {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.version += 1;
        match event {
            SagaEvent::SagaStarted { reservation_id, room_id, guest_id, stay, guests, card_token } => {
                self.facts = Some(Facts { reservation_id, room_id, guest_id, stay, guests, card_token });
                self.last_step = Some(Step::Start);
            }
            SagaEvent::StepRequested { step } => {
                self.last_step = Some(step);
                if step == Step::Charge && self.charge == ChargeState::NotRequested {
                    self.charge = ChargeState::Requested;
                }
            }
            SagaEvent::StepSucceeded { step, outcome, .. } => {
                self.last_step = Some(step);
                self.succeeded(step, &outcome);
            }
            SagaEvent::StepFailed { step, error, attempt, retry_at } => {
                self.last_step = Some(step);
                self.failures = attempt;
                self.retry_at = retry_at;
                self.last_error = Some(error);
                if step == Step::Charge {
                    self.charge_attempts += 1;
                }
            }
            SagaEvent::DeadlineSet { deadline: Deadline::Payment, at } => self.payment_deadline = Some(at),
            SagaEvent::DeadlineFired { deadline: Deadline::Payment } => self.deadline_fired = true,
            SagaEvent::CompensationStarted { reason } => {
                self.compensation = Some(reason);
                self.failures = 0;
                self.retry_at = None;
            }
            SagaEvent::SagaCompleted { outcome } => self.outcome = Some(outcome),
            SagaEvent::SagaParked { step, error } => {
                self.parked = Some(step);
                self.last_step = Some(step);
                self.last_error = Some(error);
            }
            SagaEvent::SagaResumed { .. } => {
                self.parked = None;
                self.failures = 0;
                self.retry_at = None;
            }
        }
    }
}
