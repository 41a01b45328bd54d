//! What happened to a payment, as stored in its stream.
//!
//! Every variant is renamed explicitly so a Rust rename never changes stored JSON; the JSON of each
//! is pinned by `tests/event_json.rs`.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::ids::{PaymentId, RefundId, ReservationId};
use crate::money::{Money, PositiveMoney};
use crate::values::CardToken;
use crate::EVENT_VERSION;

/// An event of a [`Payment`](super::Payment). Each carries the reservation and the charged amount
/// so a payment ledger can be built from the events alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PaymentEvent {
    /// The charge of a reservation was asked for.
    #[serde(rename = "ChargeRequested")]
    ChargeRequested {
        /// The payment.
        payment_id: PaymentId,
        /// The reservation paid for.
        reservation_id: ReservationId,
        /// How much.
        amount: PositiveMoney,
        /// The card to charge.
        card_token: CardToken,
    },
    /// The provider took the money.
    #[serde(rename = "ChargeApproved")]
    ChargeApproved {
        /// The payment.
        payment_id: PaymentId,
        /// The reservation paid for.
        reservation_id: ReservationId,
        /// How much was charged.
        amount: PositiveMoney,
        /// The provider's reference for the charge.
        provider_ref: String,
    },
    /// The provider refused the card; no money moved.
    #[serde(rename = "ChargeDeclined")]
    ChargeDeclined {
        /// The payment.
        payment_id: PaymentId,
        /// The reservation paid for.
        reservation_id: ReservationId,
        /// How much was asked.
        amount: PositiveMoney,
        /// The provider's reason.
        reason: String,
    },
    /// The provider could not be reached; whether money moved is unknown.
    #[serde(rename = "ChargeFailed")]
    ChargeFailed {
        /// The payment.
        payment_id: PaymentId,
        /// The reservation paid for.
        reservation_id: ReservationId,
        /// How much was asked.
        amount: PositiveMoney,
        /// What went wrong.
        reason: String,
    },
    /// Part or all of an approved charge was given back.
    #[serde(rename = "PaymentRefunded")]
    PaymentRefunded {
        /// The payment.
        payment_id: PaymentId,
        /// The reservation paid for.
        reservation_id: ReservationId,
        /// This refund.
        refund_id: RefundId,
        /// How much this refund gave back.
        amount: PositiveMoney,
        /// How much has been given back in all, this refund included.
        refunded_total: Money,
    },
    /// A charge of unknown or failed outcome was voided.
    #[serde(rename = "ChargeVoided")]
    ChargeVoided {
        /// The payment.
        payment_id: PaymentId,
        /// The reservation paid for.
        reservation_id: ReservationId,
        /// How much was asked.
        amount: PositiveMoney,
        /// Why.
        reason: String,
    },
}

impl DomainEvent for PaymentEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ChargeRequested { .. } => "ChargeRequested",
            Self::ChargeApproved { .. } => "ChargeApproved",
            Self::ChargeDeclined { .. } => "ChargeDeclined",
            Self::ChargeFailed { .. } => "ChargeFailed",
            Self::PaymentRefunded { .. } => "PaymentRefunded",
            Self::ChargeVoided { .. } => "ChargeVoided",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        EVENT_VERSION.to_owned()
    }
}
