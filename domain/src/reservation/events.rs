//! What happened to a reservation, as stored in its stream.
//!
//! Every variant is renamed explicitly so a Rust rename never changes stored JSON; the JSON of each
//! is pinned by `tests/event_json.rs`.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::ids::{PaymentId, ReservationId, RoomId, UserId};
use crate::money::Money;
use crate::values::{CardToken, GuestCount, StayDates};
use crate::EVENT_VERSION;

/// Why a reservation was rejected. JSON: `{"code": "dates_unavailable"}`,
/// `{"code": "other", "detail": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum RejectionReason {
    /// Some night was already held or booked.
    DatesUnavailable,
    /// The room does not exist or is delisted.
    RoomUnavailable,
    /// More guests than the room sleeps.
    TooManyGuests,
    /// The stay starts before today.
    StayInPast,
    /// The provider declined the card.
    PaymentDeclined,
    /// The provider could not be reached before the deadline.
    PaymentUnavailable,
    /// Anything else, in words.
    Other {
        /// What happened.
        detail: String,
    },
}

/// An event of a [`Reservation`](super::Reservation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReservationEvent {
    /// A guest asked for a stay.
    #[serde(rename = "ReservationRequested")]
    ReservationRequested {
        /// The reservation.
        reservation_id: ReservationId,
        /// The room.
        room_id: RoomId,
        /// The guest.
        guest_id: UserId,
        /// The nights.
        stay: StayDates,
        /// How many guests.
        guests: GuestCount,
        /// The provider token of the card to charge.
        card_token: CardToken,
    },
    /// The reservation is paid and booked.
    #[serde(rename = "ReservationConfirmed")]
    ReservationConfirmed {
        /// The reservation.
        reservation_id: ReservationId,
        /// The room.
        room_id: RoomId,
        /// The guest.
        guest_id: UserId,
        /// The nights booked.
        stay: StayDates,
        /// What the guest paid.
        total_price: Money,
        /// The approved payment.
        payment_id: PaymentId,
    },
    /// The reservation was refused.
    #[serde(rename = "ReservationRejected")]
    ReservationRejected {
        /// The reservation.
        reservation_id: ReservationId,
        /// The room.
        room_id: RoomId,
        /// The guest.
        guest_id: UserId,
        /// Why.
        reason: RejectionReason,
    },
    /// The guest or an admin asked to cancel.
    #[serde(rename = "CancellationRequested")]
    CancellationRequested {
        /// The reservation.
        reservation_id: ReservationId,
        /// The room.
        room_id: RoomId,
        /// The guest.
        guest_id: UserId,
        /// Who asked: the guest or an admin.
        requested_by: UserId,
        /// Whether the one who asked did so as an admin.
        by_admin: bool,
        /// Whether the reservation was confirmed (paid and booked) when cancelled, so a refund is due.
        was_confirmed: bool,
    },
    /// The cancellation is complete: refunded if it was paid, nights released.
    #[serde(rename = "ReservationCancelled")]
    ReservationCancelled {
        /// The reservation.
        reservation_id: ReservationId,
        /// The room.
        room_id: RoomId,
        /// The guest.
        guest_id: UserId,
        /// Whether the reservation had been confirmed before the cancellation was asked.
        was_confirmed: bool,
    },
}

impl DomainEvent for ReservationEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ReservationRequested { .. } => "ReservationRequested",
            Self::ReservationConfirmed { .. } => "ReservationConfirmed",
            Self::ReservationRejected { .. } => "ReservationRejected",
            Self::CancellationRequested { .. } => "CancellationRequested",
            Self::ReservationCancelled { .. } => "ReservationCancelled",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        match self {
            Self::ReservationRejected { .. } => REJECTION_VERSION,
            _ => EVENT_VERSION,
        }
        .to_owned()
    }
}

/// `ReservationRejected` 1.1 carries a structured [`RejectionReason`]; 1.0 carried the reason as a
/// bare string, which [`crate::upcasters`] lifts on read.
pub const REJECTION_VERSION: &str = "1.1";
