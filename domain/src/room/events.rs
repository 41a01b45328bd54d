//! What happened to a room, as stored in its stream.
//!
//! Every variant is renamed explicitly so a Rust rename never changes stored JSON; the JSON of each
//! is pinned by `tests/event_json.rs`.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::ids::{ReservationId, RoomId, UserId};
use crate::money::{Money, PositiveMoney};
use crate::values::{Address, Capacity, Description, GuestCount, RoomName, StayDates};
use crate::EVENT_VERSION;

/// An event of a [`Room`](super::Room).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RoomEvent {
    /// A host listed a new room.
    #[serde(rename = "RoomRegistered")]
    RoomRegistered {
        /// The room.
        room_id: RoomId,
        /// Its host.
        host_id: UserId,
        /// Its name.
        name: RoomName,
        /// Its description.
        description: Description,
        /// Its address.
        address: Address,
        /// The price of one night.
        nightly_price: PositiveMoney,
        /// How many guests it sleeps.
        capacity: Capacity,
    },
    /// The host changed some details; only the changed fields are present.
    #[serde(rename = "RoomDetailsChanged")]
    RoomDetailsChanged {
        /// The room.
        room_id: RoomId,
        /// The new name, if it changed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<RoomName>,
        /// The new description, if it changed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<Description>,
        /// The new address, if it changed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<Address>,
        /// The new capacity, if it changed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        capacity: Option<Capacity>,
    },
    /// The host changed the price of a night.
    #[serde(rename = "NightlyPriceChanged")]
    NightlyPriceChanged {
        /// The room.
        room_id: RoomId,
        /// The new price of one night.
        price: PositiveMoney,
    },
    /// The host took the room off the market.
    #[serde(rename = "RoomDelisted")]
    RoomDelisted {
        /// The room.
        room_id: RoomId,
    },
    /// The nights of a stay were held for a reservation, at `price` for the whole stay.
    #[serde(rename = "NightsHeld")]
    NightsHeld {
        /// The room.
        room_id: RoomId,
        /// The reservation holding the nights.
        reservation_id: ReservationId,
        /// Its guest.
        guest_id: UserId,
        /// The nights held.
        stay: StayDates,
        /// How many guests will stay.
        guests: GuestCount,
        /// Nights × nightly price at the time of the hold: what the guest is charged.
        price: Money,
    },
    /// A reservation's hold became a booking.
    #[serde(rename = "BookingConfirmed")]
    BookingConfirmed {
        /// The room.
        room_id: RoomId,
        /// The reservation now booked.
        reservation_id: ReservationId,
        /// Its guest.
        guest_id: UserId,
        /// The nights booked.
        stay: StayDates,
    },
    /// A hold that was never confirmed was freed.
    #[serde(rename = "HoldReleased")]
    HoldReleased {
        /// The room.
        room_id: RoomId,
        /// The reservation that held the nights.
        reservation_id: ReservationId,
        /// The nights freed.
        stay: StayDates,
    },
    /// A confirmed booking was freed (its reservation was cancelled).
    #[serde(rename = "BookingReleased")]
    BookingReleased {
        /// The room.
        room_id: RoomId,
        /// The reservation that had booked the nights.
        reservation_id: ReservationId,
        /// The nights freed.
        stay: StayDates,
    },
}

impl DomainEvent for RoomEvent {
    fn event_type(&self) -> String {
        match self {
            Self::RoomRegistered { .. } => "RoomRegistered",
            Self::RoomDetailsChanged { .. } => "RoomDetailsChanged",
            Self::NightlyPriceChanged { .. } => "NightlyPriceChanged",
            Self::RoomDelisted { .. } => "RoomDelisted",
            Self::NightsHeld { .. } => "NightsHeld",
            Self::BookingConfirmed { .. } => "BookingConfirmed",
            Self::HoldReleased { .. } => "HoldReleased",
            Self::BookingReleased { .. } => "BookingReleased",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        EVENT_VERSION.to_owned()
    }
}
