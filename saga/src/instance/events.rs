//! What happens to one saga instance, in the past tense: its own stream in the event log.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use stay_domain::{CardToken, GuestCount, Money, RejectionReason, ReservationId, RoomId, StayDates, UserId};

/// The schema version of saga events.
pub const SAGA_EVENT_VERSION: &str = "1.0";

/// A step of the saga: one command to an aggregate, or one call to the payment provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Read the reservation and begin.
    Start,
    /// Hold the nights on the room.
    Hold,
    /// Charge the card.
    Charge,
    /// Turn the hold into a booking and confirm the reservation.
    Confirm,
    /// Reverse a charge whose outcome is unknown.
    Void,
    /// Give back an approved charge.
    Refund,
    /// Free the nights.
    Release,
    /// Reject the reservation.
    Reject,
    /// Mark a cancelled reservation cancelled.
    CompleteCancellation,
}

impl Step {
    /// The step's name in the API and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Start => "start",
            Step::Hold => "hold",
            Step::Charge => "charge",
            Step::Confirm => "confirm",
            Step::Void => "void",
            Step::Refund => "refund",
            Step::Release => "release",
            Step::Reject => "reject",
            Step::CompleteCancellation => "complete_cancellation",
        }
    }

    /// Whether the step undoes something (part of a compensation).
    pub fn compensates(self) -> bool {
        matches!(self, Step::Void | Step::Refund | Step::Release | Step::Reject | Step::CompleteCancellation)
    }
}

/// What a successful step came to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepOutcome {
    /// The reservation was read.
    Started,
    /// The room held the nights at this price.
    Held {
        /// Nights × nightly price, fixed by the room.
        price: Money,
    },
    /// The room refused the nights.
    HoldRefused {
        /// Why.
        reason: RejectionReason,
    },
    /// The provider took the money.
    ChargeApproved {
        /// The provider's reference.
        provider_ref: String,
    },
    /// The provider declined the card.
    ChargeDeclined {
        /// The provider's reason.
        reason: String,
    },
    /// The booking and the reservation are confirmed.
    Confirmed,
    /// The guest cancelled before the confirmation could be recorded.
    CancelledBeforeConfirm,
    /// The unknown charge was reversed (`amount` went back) or had never happened (`None`).
    Voided {
        /// What went back, if anything had been taken.
        amount: Option<Money>,
    },
    /// The charge was given back.
    Refunded {
        /// How much.
        amount: Money,
    },
    /// The nights are free again.
    Released,
    /// The reservation is rejected.
    Rejected,
    /// The reservation is cancelled.
    CancellationCompleted,
    /// An operator skipped the step.
    Skipped {
        /// Who.
        by: String,
    },
}

/// Why the saga is undoing what it did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CompensationReason {
    /// The reservation will be rejected.
    Rejected {
        /// Why.
        reason: RejectionReason,
    },
    /// The guest (or an admin) cancelled.
    Cancelled,
}

/// How a saga ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// Nights booked, money kept.
    Confirmed,
    /// Refused; nothing kept.
    Rejected {
        /// Why.
        reason: RejectionReason,
    },
    /// Cancelled; nothing kept.
    Cancelled,
}

/// What an operator asked of a parked saga.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResumeAction {
    /// Try the parked step again.
    Retry,
    /// Give the parked step up: a compensation step counts as done; a forward step rejects.
    Skip,
}

/// A deadline the saga keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deadline {
    /// By then the charge has an answer, or the reservation is rejected and any charge voided.
    Payment,
}

/// An event of a saga instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SagaEvent {
    /// The saga took on a reservation.
    SagaStarted {
        /// The reservation (and the saga's id).
        reservation_id: ReservationId,
        /// Its room.
        room_id: RoomId,
        /// Its guest.
        guest_id: UserId,
        /// Its nights.
        stay: StayDates,
        /// Its guests.
        guests: GuestCount,
        /// The card to charge.
        card_token: CardToken,
    },
    /// A step that talks to the outside began (so its time shows in the timeline).
    StepRequested {
        /// The step.
        step: Step,
    },
    /// A step succeeded.
    StepSucceeded {
        /// The step.
        step: Step,
        /// What it came to.
        outcome: StepOutcome,
        /// When the step began.
        started_at: DateTime<Utc>,
    },
    /// A step failed; it is retried at `retry_at` unless the saga is parked.
    StepFailed {
        /// The step.
        step: Step,
        /// What went wrong.
        error: String,
        /// The how-many-th failure of this step in a row.
        attempt: u32,
        /// When it is tried again.
        retry_at: Option<DateTime<Utc>>,
    },
    /// A deadline was set.
    DeadlineSet {
        /// Which.
        deadline: Deadline,
        /// When it falls.
        at: DateTime<Utc>,
    },
    /// A deadline passed before its step had an answer.
    DeadlineFired {
        /// Which.
        deadline: Deadline,
    },
    /// The saga began undoing what it did.
    CompensationStarted {
        /// Why.
        reason: CompensationReason,
    },
    /// The saga reached a final state.
    SagaCompleted {
        /// Which.
        outcome: Outcome,
    },
    /// A step kept failing; the saga waits for an operator.
    SagaParked {
        /// The step.
        step: Step,
        /// Its last error.
        error: String,
    },
    /// An operator resumed a parked saga.
    SagaResumed {
        /// Retry or skip.
        action: ResumeAction,
        /// Who.
        by: String,
    },
}

impl DomainEvent for SagaEvent {
    fn event_type(&self) -> String {
        match self {
            Self::SagaStarted { .. } => "SagaStarted",
            Self::StepRequested { .. } => "StepRequested",
            Self::StepSucceeded { .. } => "StepSucceeded",
            Self::StepFailed { .. } => "StepFailed",
            Self::DeadlineSet { .. } => "DeadlineSet",
            Self::DeadlineFired { .. } => "DeadlineFired",
            Self::CompensationStarted { .. } => "CompensationStarted",
            Self::SagaCompleted { .. } => "SagaCompleted",
            Self::SagaParked { .. } => "SagaParked",
            Self::SagaResumed { .. } => "SagaResumed",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        SAGA_EVENT_VERSION.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    /// The failure events are stored history: their JSON must not follow a rename in the code.
    #[test]
    fn a_failed_step_and_a_park_are_stored_as_they_always_were() {
        let retry_at = Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 1).single().unwrap();
        let failed = SagaEvent::StepFailed {
            step: Step::Refund,
            error: "the payment provider did not answer in time".into(),
            attempt: 3,
            retry_at: Some(retry_at),
        };
        let parked = SagaEvent::SagaParked { step: Step::Refund, error: "no price".into() };

        assert_eq!(
            serde_json::to_value(&failed).unwrap(),
            json!({"StepFailed": {
                "step": "refund",
                "error": "the payment provider did not answer in time",
                "attempt": 3,
                "retry_at": "2030-01-01T12:00:01Z",
            }})
        );
        assert_eq!(
            serde_json::to_value(&parked).unwrap(),
            json!({"SagaParked": {"step": "refund", "error": "no price"}})
        );
        assert_eq!((failed.event_type(), failed.event_version()), ("StepFailed".to_owned(), "1.0".to_owned()));
        assert_eq!((parked.event_type(), parked.event_version()), ("SagaParked".to_owned(), "1.0".to_owned()));
    }
}
