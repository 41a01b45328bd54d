//! Why a saga step did not complete: one variant per cause, so the decision of what follows
//! ([`super::decide`]) and the tests can match on it.
//!
//! The messages are what the timeline shows (`StepFailed.error`, `SagaParked.error`, the admin
//! list's `last_error`); they read as they always have.

use cqrs_es::Aggregate;
use stay_domain::{Payment, PaymentError, Reservation, ReservationError, Room, RoomError, ValidationError};
use stay_store::{ExecuteError, StoreError};

use crate::provider::ProviderError;

/// Why a step did not complete.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The event store failed while the step read or wrote an aggregate.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Other writers kept changing an aggregate the step wrote to, past the executor's retries.
    #[error("the aggregate kept changing under the command; gave up after {attempts} attempts")]
    Conflict {
        /// The aggregate type (`Room`, `Reservation`, `Payment`).
        aggregate: &'static str,
        /// How many times the executor tried.
        attempts: u32,
    },
    /// The room refused a command the saga sent (one the step does not expect to be refused).
    #[error(transparent)]
    Room(RoomError),
    /// The reservation refused a command the saga sent.
    #[error(transparent)]
    Reservation(ReservationError),
    /// The payment refused a command the saga sent.
    #[error(transparent)]
    Payment(PaymentError),
    /// The payment provider gave no answer (no answer in time, unreachable, refused the request,
    /// or its circuit is open).
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The provider answered the refund with a refusal; no money moved.
    #[error("the provider refused the refund: {reason}")]
    RefundRefused {
        /// The provider's reason.
        reason: String,
    },
    /// A provider call could not be noted in Stay's payment ledger.
    #[error("could not note a provider call in the ledger: {0}")]
    Ledger(#[source] StoreError),
    /// The reservation the saga was started for does not exist.
    #[error("the reservation does not exist")]
    ReservationMissing,
    /// The saga has no facts yet (it has not recorded its start).
    #[error("not started")]
    NotStarted,
    /// The step needs the price the room answered, and the saga has none recorded.
    #[error("no price")]
    NoPrice,
    /// The room took the hold, yet its calendar has no entry for the reservation.
    #[error("the hold vanished")]
    HoldVanished,
    /// The price cannot be charged or refunded (it is not above zero).
    #[error(transparent)]
    InvalidAmount(ValidationError),
}

impl StepError {
    /// A command to an aggregate of type `aggregate` did not produce events.
    fn executing<E: std::error::Error>(
        err: ExecuteError<E>,
        aggregate: &'static str,
        refused: fn(E) -> StepError,
    ) -> Self {
        match err {
            ExecuteError::Rejected(refusal) => refused(refusal),
            ExecuteError::Conflict { attempts } => StepError::Conflict { aggregate, attempts },
            ExecuteError::Store(store) => StepError::Store(store),
        }
    }
}

impl From<ExecuteError<RoomError>> for StepError {
    fn from(err: ExecuteError<RoomError>) -> Self {
        Self::executing(err, Room::TYPE, StepError::Room)
    }
}

impl From<ExecuteError<ReservationError>> for StepError {
    fn from(err: ExecuteError<ReservationError>) -> Self {
        Self::executing(err, Reservation::TYPE, StepError::Reservation)
    }
}

impl From<ExecuteError<PaymentError>> for StepError {
    fn from(err: ExecuteError<PaymentError>) -> Self {
        Self::executing(err, Payment::TYPE, StepError::Payment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_as_the_timeline_has_always_shown_them() {
        let cases: [(StepError, &str); 7] = [
            (StepError::NotStarted, "not started"),
            (StepError::NoPrice, "no price"),
            (StepError::HoldVanished, "the hold vanished"),
            (StepError::ReservationMissing, "the reservation does not exist"),
            (StepError::RefundRefused { reason: "no_charge".into() }, "the provider refused the refund: no_charge"),
            (
                StepError::Ledger(StoreError::Closed),
                "could not note a provider call in the ledger: the event store is shutting down",
            ),
            (StepError::Provider(ProviderError::Timeout), "the payment provider did not answer in time"),
        ];
        for (error, message) in cases {
            assert_eq!(error.to_string(), message);
        }
    }

    #[test]
    fn an_executor_error_keeps_its_cause_and_its_message() {
        let refused = StepError::from(ExecuteError::Rejected(RoomError::DatesUnavailable));
        assert_eq!(refused.to_string(), RoomError::DatesUnavailable.to_string());
        assert!(matches!(refused, StepError::Room(RoomError::DatesUnavailable)));

        let conflict = ExecuteError::<PaymentError>::Conflict { attempts: 25 };
        let message = conflict.to_string();
        let error = StepError::from(conflict);
        assert_eq!(error.to_string(), message, "the message the timeline always showed");
        assert!(matches!(error, StepError::Conflict { aggregate: "Payment", attempts: 25 }));

        let store = StepError::from(ExecuteError::<ReservationError>::Store(StoreError::Closed));
        assert!(matches!(store, StepError::Store(StoreError::Closed)));
    }
}
