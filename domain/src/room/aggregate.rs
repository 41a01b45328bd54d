//! The room's state and its rules.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::calendar::{Calendar, CalendarEntry, EntryState};
use super::commands::RoomCommand;
use super::error::RoomError;
use super::events::RoomEvent;
use crate::ids::{ReservationId, RoomId, UserId};
use crate::money::PositiveMoney;
use crate::services::DomainServices;
use crate::values::{Address, Capacity, Description, GuestCount, RoomName, StayDates};

/// A room: its listing (once registered) and its calendar.
///
/// Idempotency, so the saga can retry: holding again for a reservation the room has already seen
/// (held, booked or released) changes nothing, whatever stay is passed; confirming a booking again
/// changes nothing; releasing an unknown or already released reservation changes nothing.
/// Delisting a delisted room, or "changing" a detail to its current value, changes nothing either.
/// Every command but `RegisterRoom` on a room never registered is `RoomNotFound`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Room {
    listing: Option<Listing>,
    calendar: Calendar,
}

/// A registered room's details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// The room.
    pub room_id: RoomId,
    /// Its host, the only one who may change it.
    pub host_id: UserId,
    /// Its name.
    pub name: RoomName,
    /// Its description.
    pub description: Description,
    /// Its address.
    pub address: Address,
    /// The current price of one night.
    pub nightly_price: PositiveMoney,
    /// How many guests it sleeps.
    pub capacity: Capacity,
    /// False once delisted.
    pub listed: bool,
}

impl Room {
    /// The room's details, once registered.
    pub fn listing(&self) -> Option<&Listing> {
        self.listing.as_ref()
    }

    /// The room's calendar.
    pub fn calendar(&self) -> &Calendar {
        &self.calendar
    }

    /// Decides the events a command leads to, without changing the room.
    fn decide(&self, command: RoomCommand, services: &DomainServices) -> Result<Vec<RoomEvent>, RoomError> {
        match command {
            RoomCommand::RegisterRoom { room_id, host_id, name, description, address, nightly_price, capacity } => {
                if self.listing.is_some() {
                    return Err(RoomError::AlreadyRegistered);
                }
                Ok(vec![RoomEvent::RoomRegistered {
                    room_id,
                    host_id,
                    name,
                    description,
                    address,
                    nightly_price,
                    capacity,
                }])
            }
            RoomCommand::ChangeRoomDetails { actor, name, description, address, capacity, nightly_price } => {
                let listing = self.listed_for_host(&actor)?;
                let name = name.filter(|name| *name != listing.name);
                let description = description.filter(|text| *text != listing.description);
                let address = address.filter(|address| *address != listing.address);
                let capacity = capacity.filter(|capacity| *capacity != listing.capacity);
                let mut events = Vec::new();
                if name.is_some() || description.is_some() || address.is_some() || capacity.is_some() {
                    events.push(RoomEvent::RoomDetailsChanged {
                        room_id: listing.room_id,
                        name,
                        description,
                        address,
                        capacity,
                    });
                }
                if let Some(price) = nightly_price {
                    events.extend(price_change(listing, price)?);
                }
                Ok(events)
            }
            RoomCommand::ChangeNightlyPrice { actor, price } => {
                let listing = self.listed_for_host(&actor)?;
                Ok(price_change(listing, price)?.into_iter().collect())
            }
            RoomCommand::DelistRoom { actor } => {
                let listing = self.owned_by(&actor)?;
                if !listing.listed {
                    return Ok(vec![]);
                }
                if self.calendar.has_stays_from(services.clock.today()) {
                    return Err(RoomError::HasUpcomingStays);
                }
                Ok(vec![RoomEvent::RoomDelisted { room_id: listing.room_id }])
            }
            RoomCommand::HoldNights { reservation_id, guest_id, stay, guests } => {
                self.hold(reservation_id, guest_id, stay, guests, services)
            }
            RoomCommand::ConfirmBooking { reservation_id } => {
                let listing = self.registered()?;
                let entry = self.calendar.entry(reservation_id).ok_or(RoomError::HoldNotFound)?;
                match entry.state {
                    EntryState::Booked => Ok(vec![]),
                    EntryState::Released => Err(RoomError::HoldAlreadyReleased),
                    EntryState::Held => Ok(vec![RoomEvent::BookingConfirmed {
                        room_id: listing.room_id,
                        reservation_id,
                        guest_id: entry.guest_id.clone(),
                        stay: entry.stay,
                    }]),
                }
            }
            RoomCommand::ReleaseNights { reservation_id } => {
                let listing = self.registered()?;
                let Some(entry) = self.calendar.entry(reservation_id) else {
                    return Ok(vec![]);
                };
                let (room_id, stay) = (listing.room_id, entry.stay);
                Ok(match entry.state {
                    EntryState::Released => vec![],
                    EntryState::Held => vec![RoomEvent::HoldReleased { room_id, reservation_id, stay }],
                    EntryState::Booked => vec![RoomEvent::BookingReleased { room_id, reservation_id, stay }],
                })
            }
        }
    }

    fn hold(
        &self,
        reservation_id: ReservationId,
        guest_id: UserId,
        stay: StayDates,
        guests: GuestCount,
        services: &DomainServices,
    ) -> Result<Vec<RoomEvent>, RoomError> {
        let listing = self.registered()?;
        // A retry must not fail because the world moved on since the first attempt.
        if self.calendar.entry(reservation_id).is_some() {
            return Ok(vec![]);
        }
        if !listing.listed {
            return Err(RoomError::RoomDelisted);
        }
        let today = services.clock.today();
        if stay.check_in() < today {
            return Err(RoomError::StayInPast { check_in: stay.check_in(), today });
        }
        if guests.get() > listing.capacity.get() {
            return Err(RoomError::TooManyGuests { capacity: listing.capacity.get(), guests: guests.get() });
        }
        if !self.calendar.is_free(&stay) {
            return Err(RoomError::DatesUnavailable);
        }
        let price = listing.nightly_price.money().times(stay.nights()).map_err(|_| RoomError::PriceOverflow)?;
        Ok(vec![RoomEvent::NightsHeld { room_id: listing.room_id, reservation_id, guest_id, stay, guests, price }])
    }

    fn registered(&self) -> Result<&Listing, RoomError> {
        self.listing.as_ref().ok_or(RoomError::RoomNotFound)
    }

    fn owned_by(&self, actor: &UserId) -> Result<&Listing, RoomError> {
        let listing = self.registered()?;
        if listing.host_id != *actor {
            return Err(RoomError::NotOwner);
        }
        Ok(listing)
    }

    fn listed_for_host(&self, actor: &UserId) -> Result<&Listing, RoomError> {
        let listing = self.owned_by(actor)?;
        if !listing.listed {
            return Err(RoomError::RoomDelisted);
        }
        Ok(listing)
    }
}

/// The price change event, if `price` differs from the current one and keeps its currency.
fn price_change(listing: &Listing, price: PositiveMoney) -> Result<Option<RoomEvent>, RoomError> {
    let current = listing.nightly_price;
    if price.currency() != current.currency() {
        return Err(RoomError::CurrencyChange { current: current.currency(), requested: price.currency() });
    }
    Ok((price != current).then_some(RoomEvent::NightlyPriceChanged { room_id: listing.room_id, price }))
}

impl Aggregate for Room {
    const TYPE: &'static str = "Room";
    type Command = RoomCommand;
    type Event = RoomEvent;
    type Error = RoomError;
    type Services = DomainServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command, services)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            RoomEvent::RoomRegistered { room_id, host_id, name, description, address, nightly_price, capacity } => {
                self.listing = Some(Listing {
                    room_id,
                    host_id,
                    name,
                    description,
                    address,
                    nightly_price,
                    capacity,
                    listed: true,
                });
            }
            RoomEvent::RoomDetailsChanged { name, description, address, capacity, .. } => {
                if let Some(listing) = &mut self.listing {
                    if let Some(name) = name {
                        listing.name = name;
                    }
                    if let Some(description) = description {
                        listing.description = description;
                    }
                    if let Some(address) = address {
                        listing.address = address;
                    }
                    if let Some(capacity) = capacity {
                        listing.capacity = capacity;
                    }
                }
            }
            RoomEvent::NightlyPriceChanged { price, .. } => {
                if let Some(listing) = &mut self.listing {
                    listing.nightly_price = price;
                }
            }
            RoomEvent::RoomDelisted { .. } => {
                if let Some(listing) = &mut self.listing {
                    listing.listed = false;
                }
            }
            RoomEvent::NightsHeld { reservation_id, guest_id, stay, guests, price, .. } => self
                .calendar
                .hold(reservation_id, CalendarEntry { guest_id, stay, guests, price, state: EntryState::Held }),
            RoomEvent::BookingConfirmed { reservation_id, .. } => {
                self.calendar.book(reservation_id);
            }
            RoomEvent::HoldReleased { reservation_id, .. } | RoomEvent::BookingReleased { reservation_id, .. } => {
                self.calendar.release(reservation_id);
            }
        }
    }
}
