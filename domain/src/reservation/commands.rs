//! What can be asked of a reservation.

use serde::{Deserialize, Serialize};

use super::events::RejectionReason;
use crate::ids::{PaymentId, ReservationId, RoomId, UserId};
use crate::money::Money;
use crate::values::{CardToken, GuestCount, StayDates};

/// A command to a [`Reservation`](super::Reservation).
///
/// Which repeats are harmless no-ops and which are errors is listed on
/// [`Reservation`](super::Reservation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReservationCommand {
    /// A guest asks for a stay in a room; this starts the saga.
    RequestReservation {
        /// The new reservation's id.
        reservation_id: ReservationId,
        /// The room asked for.
        room_id: RoomId,
        /// The guest asking.
        guest_id: UserId,
        /// The nights asked for.
        stay: StayDates,
        /// How many guests.
        guests: GuestCount,
        /// The provider token of the card the saga will charge.
        card_token: CardToken,
    },
    /// The saga confirms a pending reservation: nights held and charge approved.
    Confirm {
        /// What the guest paid: the price the room answered for the hold.
        total_price: Money,
        /// The approved payment; must be `PaymentId::for_reservation` of this reservation.
        payment_id: PaymentId,
    },
    /// The saga refuses a pending reservation.
    Reject {
        /// Why.
        reason: RejectionReason,
    },
    /// The guest, or an admin, asks to cancel a pending or confirmed reservation.
    RequestCancellation {
        /// Who asks.
        actor: UserId,
        /// Whether the actor has the admin role (checked by the caller from the token).
        actor_is_admin: bool,
    },
    /// The saga records that refund and release are done.
    CompleteCancellation,
}
