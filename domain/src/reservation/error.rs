//! Why a reservation refused a command.

use chrono::NaiveDate;

use super::status::ReservationStatus;
use crate::ids::PaymentId;

/// A reservation's refusal. Variants are stable so callers (and tests) match on them, never on text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReservationError {
    /// No reservation was requested under this id.
    #[error("no such reservation")]
    ReservationNotFound,
    /// A reservation with this id was already requested, for a different stay, room, guest or card.
    #[error("a different reservation already has this id")]
    AlreadyRequested,
    /// The command does not apply to a reservation in this status.
    #[error("the reservation is {status}")]
    WrongStatus {
        /// The reservation's current status.
        status: ReservationStatus,
    },
    /// A confirmation named a payment that is not this reservation's.
    #[error("payment {actual} is not this reservation's payment {expected}")]
    PaymentMismatch {
        /// This reservation's payment id.
        expected: PaymentId,
        /// The payment id given.
        actual: PaymentId,
    },
    /// Only the reservation's guest or an admin may cancel it.
    #[error("only the reservation's guest or an admin may cancel it")]
    NotOwner,
    /// The stay has begun (check-in is today or earlier), so it can no longer be cancelled.
    #[error("the stay began on {check_in}; today is {today}")]
    StayAlreadyBegun {
        /// The stay's first night.
        check_in: NaiveDate,
        /// Today, by the clock.
        today: NaiveDate,
    },
}

impl ReservationError {
    /// A stable snake_case code for API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ReservationNotFound => "reservation_not_found",
            Self::AlreadyRequested => "reservation_already_exists",
            Self::WrongStatus { .. } => "reservation_status_conflict",
            Self::PaymentMismatch { .. } => "payment_mismatch",
            Self::NotOwner => "not_owner",
            Self::StayAlreadyBegun { .. } => "stay_already_begun",
        }
    }
}
