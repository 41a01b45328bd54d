//! Why a payment refused a command.

use super::status::PaymentStatus;
use crate::ids::{PaymentId, RefundId};
use crate::money::{Currency, Money};

/// A payment's refusal. Variants are stable so callers (and tests) match on them, never on text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// No charge was requested under this id.
    #[error("no such payment")]
    PaymentNotFound,
    /// The payment id is not the one derived from the reservation.
    #[error("payment {actual} is not the payment of this reservation ({expected})")]
    PaymentIdMismatch {
        /// `PaymentId::for_reservation` of the reservation.
        expected: PaymentId,
        /// The id given.
        actual: PaymentId,
    },
    /// A different outcome was recorded already.
    #[error("the charge is already {recorded}")]
    ContradictoryOutcome {
        /// The outcome on record.
        recorded: PaymentStatus,
    },
    /// Only an approved charge can be refunded.
    #[error("only an approved charge can be refunded; this one is {status}")]
    NotApproved {
        /// The payment's status.
        status: PaymentStatus,
    },
    /// An approved charge is refunded, not voided.
    #[error("a charge that is {status} cannot be voided")]
    CannotVoid {
        /// The payment's status.
        status: PaymentStatus,
    },
    /// The refunds would add up to more than was charged.
    #[error("refunding {requested} more would exceed the charge of {charged} ({refunded} refunded)")]
    RefundExceedsCharge {
        /// What was charged.
        charged: Money,
        /// What was refunded already.
        refunded: Money,
        /// What this refund asked for.
        requested: Money,
    },
    /// This refund id was used already, for a different amount.
    #[error("refund {refund_id} was already made for a different amount")]
    RefundIdReused {
        /// The refund id.
        refund_id: RefundId,
    },
    /// A refund must be in the currency of the charge.
    #[error("the charge is in {charged}, the refund in {requested}")]
    CurrencyMismatch {
        /// The charge's currency.
        charged: Currency,
        /// The refund's currency.
        requested: Currency,
    },
}

impl PaymentError {
    /// A stable snake_case code for API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Self::PaymentNotFound => "payment_not_found",
            Self::PaymentIdMismatch { .. } => "payment_id_mismatch",
            Self::ContradictoryOutcome { .. } => "contradictory_outcome",
            Self::NotApproved { .. } => "payment_not_approved",
            Self::CannotVoid { .. } => "cannot_void",
            Self::RefundExceedsCharge { .. } => "refund_exceeds_charge",
            Self::RefundIdReused { .. } => "refund_id_reused",
            Self::CurrencyMismatch { .. } => "currency_mismatch",
        }
    }
}
