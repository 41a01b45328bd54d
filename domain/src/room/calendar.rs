//! A room's calendar: which reservation holds or has booked which night.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::ids::{ReservationId, UserId};
use crate::money::Money;
use crate::values::{GuestCount, StayDates};

/// Where a reservation stands on the room's calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryState {
    /// The nights are held while the reservation is being paid.
    Held,
    /// The nights are booked: the reservation is paid and confirmed.
    Booked,
    /// The nights were freed; the reservation id is remembered so retries stay no-ops.
    Released,
}

/// What the room knows about one reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarEntry {
    /// The reservation's guest.
    pub guest_id: UserId,
    /// The nights.
    pub stay: StayDates,
    /// How many guests.
    pub guests: GuestCount,
    /// The price of the stay, fixed when the nights were held.
    pub price: Money,
    /// Held, booked or released.
    pub state: EntryState,
}

/// Every reservation the room has seen, and an index of the nights currently taken.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Calendar {
    entries: BTreeMap<ReservationId, CalendarEntry>,
    /// Each held or booked night and the reservation that has it; kept so that a hold checks at
    /// most 30 nights instead of scanning every reservation ever made.
    taken: BTreeMap<NaiveDate, ReservationId>,
}

impl Calendar {
    /// What the room knows about `reservation_id`, if it has ever seen it.
    pub fn entry(&self, reservation_id: ReservationId) -> Option<&CalendarEntry> {
        self.entries.get(&reservation_id)
    }

    /// Every reservation the room has seen, in id order.
    pub fn entries(&self) -> impl Iterator<Item = (ReservationId, &CalendarEntry)> {
        self.entries.iter().map(|(id, entry)| (*id, entry))
    }

    /// The reservation holding or having booked `night`, if any.
    pub fn occupant(&self, night: NaiveDate) -> Option<ReservationId> {
        self.taken.get(&night).copied()
    }

    /// Whether no night of `stay` is held or booked.
    pub fn is_free(&self, stay: &StayDates) -> bool {
        self.taken.range(stay.check_in()..stay.check_out()).next().is_none()
    }

    /// Whether some hold or booking has a night on or after `today` (its check-out is after today).
    pub fn has_stays_from(&self, today: NaiveDate) -> bool {
        self.taken.range(today..).next().is_some()
    }

    pub(super) fn hold(&mut self, reservation_id: ReservationId, entry: CalendarEntry) {
        for night in entry.stay.each_night() {
            self.taken.insert(night, reservation_id);
        }
        self.entries.insert(reservation_id, entry);
    }

    pub(super) fn book(&mut self, reservation_id: ReservationId) {
        if let Some(entry) = self.entries.get_mut(&reservation_id) {
            entry.state = EntryState::Booked;
        }
    }

    pub(super) fn release(&mut self, reservation_id: ReservationId) {
        if let Some(entry) = self.entries.get_mut(&reservation_id) {
            entry.state = EntryState::Released;
            for night in entry.stay.each_night() {
                if self.taken.get(&night) == Some(&reservation_id) {
                    self.taken.remove(&night);
                }
            }
        }
    }
}
