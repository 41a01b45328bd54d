//! What can be asked of a payment.

use serde::{Deserialize, Serialize};

use crate::ids::{PaymentId, RefundId, ReservationId};
use crate::money::PositiveMoney;
use crate::values::CardToken;

/// A command to a [`Payment`](super::Payment).
///
/// Which repeats are harmless no-ops and which are errors is listed on
/// [`Payment`](super::Payment).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PaymentCommand {
    /// Ask for the charge of a reservation, before calling the provider.
    RequestCharge {
        /// Must be `PaymentId::for_reservation(reservation_id)`.
        payment_id: PaymentId,
        /// The reservation paid for.
        reservation_id: ReservationId,
        /// How much to charge.
        amount: PositiveMoney,
        /// The card to charge.
        card_token: CardToken,
    },
    /// The provider took the money.
    RecordApproval {
        /// The provider's reference for the charge.
        provider_ref: String,
    },
    /// The provider refused the card.
    RecordDecline {
        /// The provider's reason, e.g. "insufficient_funds".
        reason: String,
    },
    /// The provider could not be reached (timeouts, errors) and the saga gave up on it.
    RecordFailure {
        /// What went wrong.
        reason: String,
    },
    /// Give back part or all of an approved charge.
    Refund {
        /// Identifies this refund so a retry is not paid twice (e.g. `RefundId::for_cancellation`).
        refund_id: RefundId,
        /// How much to give back.
        amount: PositiveMoney,
    },
    /// Void a charge whose outcome is unknown or failed, so any money that may have moved goes back.
    VoidCharge {
        /// Why.
        reason: String,
    },
}
