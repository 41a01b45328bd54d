//! What can be asked of a room.

use serde::{Deserialize, Serialize};

use crate::ids::{ReservationId, RoomId, UserId};
use crate::money::PositiveMoney;
use crate::values::{Address, Capacity, Description, GuestCount, RoomName, StayDates};

/// A command to a [`Room`](super::Room).
///
/// Host commands carry the `actor` so the room can refuse anyone but its host. Calendar commands
/// come from the reservation saga and are idempotent, so the saga may retry them freely.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RoomCommand {
    /// List a new room; `host_id` becomes its owner.
    RegisterRoom {
        /// The new room's id.
        room_id: RoomId,
        /// The host who owns it.
        host_id: UserId,
        /// Its name.
        name: RoomName,
        /// Its description, possibly empty.
        description: Description,
        /// Where it is.
        address: Address,
        /// The price of one night.
        nightly_price: PositiveMoney,
        /// How many guests it sleeps.
        capacity: Capacity,
    },
    /// Change any of the room's details; fields left `None`, or equal to the current value, stay.
    ///
    /// `nightly_price` is accepted here too so that one edit is one atomic command; it records the
    /// same `NightlyPriceChanged` event as [`RoomCommand::ChangeNightlyPrice`].
    ChangeRoomDetails {
        /// Who asks; must be the room's host.
        actor: UserId,
        /// A new name.
        name: Option<RoomName>,
        /// A new description.
        description: Option<Description>,
        /// A new address.
        address: Option<Address>,
        /// A new capacity; holds and bookings already made keep their guests.
        capacity: Option<Capacity>,
        /// A new nightly price, in the room's current currency.
        nightly_price: Option<PositiveMoney>,
    },
    /// Change the price of a night for holds made from now on.
    ChangeNightlyPrice {
        /// Who asks; must be the room's host.
        actor: UserId,
        /// The new price, in the room's current currency.
        price: PositiveMoney,
    },
    /// Take the room off the market; refused while stays are upcoming.
    DelistRoom {
        /// Who asks; must be the room's host.
        actor: UserId,
    },
    /// Hold the nights of a stay for a reservation, at today's nightly price.
    HoldNights {
        /// The reservation the nights are held for.
        reservation_id: ReservationId,
        /// The guest of that reservation.
        guest_id: UserId,
        /// The nights to hold.
        stay: StayDates,
        /// How many guests will stay.
        guests: GuestCount,
    },
    /// Turn a reservation's hold into a booking, once it is paid.
    ConfirmBooking {
        /// The reservation whose hold is confirmed.
        reservation_id: ReservationId,
    },
    /// Free a reservation's nights, held or booked.
    ReleaseNights {
        /// The reservation whose nights are freed.
        reservation_id: ReservationId,
    },
}
