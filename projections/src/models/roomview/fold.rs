//! A batch of roomview's events folded into its rows in memory.
//!
//! Each event becomes a [`Change`] that names the rows it needs; `rows` reads those rows once, the
//! changes are applied here in feed order by exactly the rules of `per_event` (the same
//! idempotence, the same poison, the stamp of the last event that touched a row), and each row
//! that changed is written once. The fold never writes: it only answers which rows changed.

use std::collections::BTreeMap;

use stay_domain::{Payment, PaymentEvent, Reservation, ReservationEvent, Review, ReviewEvent, Room, RoomEvent};
use stay_store::{RecordedEvent, StoreError};

use super::{stamp, Booked};
use crate::model::{decode, ApplyError};

/// A room's row as the batch holds it (its id is the key it is held under).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct RoomRecord {
    pub(super) host_id: String,
    pub(super) name: String,
    pub(super) description: String,
    pub(super) address: String,
    pub(super) price_minor: i64,
    pub(super) currency: String,
    pub(super) capacity: i64,
    pub(super) listed: i64,
    pub(super) pending: i64,
    pub(super) confirmed: i64,
    pub(super) cancelled: i64,
    pub(super) rejected: i64,
    pub(super) booked: BookedStays,
    pub(super) charged_minor: i64,
    pub(super) refunded_minor: i64,
    pub(super) review_count: i64,
    pub(super) rating_sum: i64,
    pub(super) updated_at: String,
    pub(super) position: String,
}

/// The `booked` column. It is read into a list only when a booking needs it: as one event at a
/// time, an unreadable list is poison only to the bookings that must read it, and a row that no
/// booking changed keeps its text as it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct BookedStays {
    /// The column as read (or as a new row starts it).
    text: String,
    /// The list, once read and changed by this batch.
    list: Option<Vec<Booked>>,
}

impl BookedStays {
    /// The column as read.
    pub(super) fn stored(text: String) -> Self {
        Self { text, list: None }
    }

    /// The list, read from the stored text the first time it is needed.
    fn list(&mut self, room_id: &str) -> Result<&mut Vec<Booked>, ApplyError> {
        let list = match self.list.take() {
            Some(list) => list,
            None => serde_json::from_str(&self.text)
                .map_err(|err| ApplyError::Poison(format!("room {room_id}'s booked stays cannot be read: {err}")))?,
        };
        Ok(self.list.insert(list))
    }

    /// The column's text.
    pub(super) fn json(&self) -> Result<String, StoreError> {
        match &self.list {
            None => Ok(self.text.clone()),
            Some(list) => Ok(serde_json::to_string(list)?),
        }
    }
}

/// A reservation as roomview maps it: its room and the bucket it is counted in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ReservationRecord {
    pub(super) room_id: String,
    /// As stored: `pending`, `confirmed`, `cancelled` or `rejected`.
    pub(super) status: String,
}

/// A reservation status, which is also the name of the room's column counting it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Bucket {
    Pending,
    Confirmed,
    Cancelled,
    Rejected,
}

impl Bucket {
    /// The status as stored, and the column that counts it.
    fn as_str(self) -> &'static str {
        match self {
            Bucket::Pending => "pending",
            Bucket::Confirmed => "confirmed",
            Bucket::Cancelled => "cancelled",
            Bucket::Rejected => "rejected",
        }
    }

    /// The bucket of a stored status. Any other status is a store that cannot be read (one event at
    /// a time, it names a column that does not exist, and the database refuses the statement).
    fn of(status: &str) -> Result<Self, ApplyError> {
        [Bucket::Pending, Bucket::Confirmed, Bucket::Cancelled, Bucket::Rejected]
            .into_iter()
            .find(|bucket| bucket.as_str() == status)
            .ok_or_else(|| StoreError::Decode(format!("reservation status `{status}` has no count in roomview")).into())
    }
}

/// Which running total of a room a payment adds to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Total {
    Charged,
    Refunded,
}

/// What one event does to roomview's rows, decoded once for the whole batch.
#[derive(Debug)]
pub(super) enum Change {
    /// A room was listed: its new row, unless the room exists already.
    Register { room_id: String, row: Box<RoomRecord> },
    /// Some details changed; `None` keeps the current value.
    Details {
        room_id: String,
        name: Option<String>,
        description: Option<String>,
        address: Option<String>,
        capacity: Option<i64>,
    },
    /// A new nightly price.
    Price { room_id: String, price_minor: i64, currency: String },
    /// The room left the market.
    Delist { room_id: String },
    /// A stay was booked (poison if the room was never registered).
    Book { room_id: String, stay: Booked },
    /// A booked stay was freed (poison if the room was never registered).
    Release { room_id: String, reservation_id: String },
    /// Only the room's stamp moves (a hold, a hold released, a cancellation asked, a reply).
    Touch { room_id: String },
    /// A reservation was asked for: counted pending once, however often it is seen.
    Request { reservation_id: String, room_id: String },
    /// A reservation moved to another bucket (poison if it was never requested).
    Move { reservation_id: String, room_id: String, to: Bucket },
    /// Money moved for a reservation's room (poison if the reservation was never requested).
    Pay { reservation_id: String, total: Total, amount: i64 },
    /// A review of the room.
    Review { room_id: String, rating: i64 },
    /// Nothing roomview shows (a payment asked, declined, failed or voided).
    Nothing,
}

impl Change {
    /// Decodes `event`; an event that does not decode is poison.
    pub(super) fn of(event: &RecordedEvent) -> Result<Self, ApplyError> {
        Ok(match event.aggregate_type.as_str() {
            "Room" => Self::of_room(event, decode::<Room>(event)?),
            "Reservation" => Self::of_reservation(decode::<Reservation>(event)?),
            "Payment" => match decode::<Payment>(event)? {
                PaymentEvent::ChargeApproved { reservation_id, amount, .. } => Change::Pay {
                    reservation_id: reservation_id.to_string(),
                    total: Total::Charged,
                    amount: amount.money().amount_minor(),
                },
                PaymentEvent::PaymentRefunded { reservation_id, amount, .. } => Change::Pay {
                    reservation_id: reservation_id.to_string(),
                    total: Total::Refunded,
                    amount: amount.money().amount_minor(),
                },
                _ => Change::Nothing,
            },
            "Review" => match decode::<Review>(event)? {
                ReviewEvent::ReviewPosted { room_id, rating, .. } => {
                    Change::Review { room_id: room_id.to_string(), rating: i64::from(rating.get()) }
                }
                ReviewEvent::ReplyPosted { room_id, .. } => Change::Touch { room_id: room_id.to_string() },
            },
            _ => Change::Nothing,
        })
    }

    fn of_room(event: &RecordedEvent, room: RoomEvent) -> Self {
        match room {
            RoomEvent::RoomRegistered { room_id, host_id, name, description, address, nightly_price, capacity } => {
                let price = nightly_price.money();
                let (updated_at, position) = stamp(event);
                let row = RoomRecord {
                    host_id: host_id.as_str().to_owned(),
                    name: name.into(),
                    description: description.into(),
                    address: address.into(),
                    price_minor: price.amount_minor(),
                    currency: price.currency().as_str().to_owned(),
                    capacity: i64::from(capacity.get()),
                    listed: 1,
                    pending: 0,
                    confirmed: 0,
                    cancelled: 0,
                    rejected: 0,
                    booked: BookedStays::stored("[]".to_owned()),
                    charged_minor: 0,
                    refunded_minor: 0,
                    review_count: 0,
                    rating_sum: 0,
                    updated_at,
                    position,
                };
                Change::Register { room_id: room_id.to_string(), row: Box::new(row) }
            }
            RoomEvent::RoomDetailsChanged { room_id, name, description, address, capacity } => Change::Details {
                room_id: room_id.to_string(),
                name: name.map(String::from),
                description: description.map(String::from),
                address: address.map(String::from),
                capacity: capacity.map(|c| i64::from(c.get())),
            },
            RoomEvent::NightlyPriceChanged { room_id, price } => {
                let money = price.money();
                Change::Price {
                    room_id: room_id.to_string(),
                    price_minor: money.amount_minor(),
                    currency: money.currency().as_str().to_owned(),
                }
            }
            RoomEvent::RoomDelisted { room_id } => Change::Delist { room_id: room_id.to_string() },
            RoomEvent::BookingConfirmed { room_id, reservation_id, stay, .. } => Change::Book {
                room_id: room_id.to_string(),
                stay: Booked {
                    reservation_id: reservation_id.to_string(),
                    check_in: stay.check_in().to_string(),
                    check_out: stay.check_out().to_string(),
                },
            },
            RoomEvent::BookingReleased { room_id, reservation_id, .. } => {
                Change::Release { room_id: room_id.to_string(), reservation_id: reservation_id.to_string() }
            }
            RoomEvent::NightsHeld { room_id, .. } | RoomEvent::HoldReleased { room_id, .. } => {
                Change::Touch { room_id: room_id.to_string() }
            }
        }
    }

    fn of_reservation(reservation: ReservationEvent) -> Self {
        let moved = |reservation_id: stay_domain::ReservationId, room_id: stay_domain::RoomId, to| Change::Move {
            reservation_id: reservation_id.to_string(),
            room_id: room_id.to_string(),
            to,
        };
        match reservation {
            ReservationEvent::ReservationRequested { reservation_id, room_id, .. } => {
                Change::Request { reservation_id: reservation_id.to_string(), room_id: room_id.to_string() }
            }
            ReservationEvent::ReservationConfirmed { reservation_id, room_id, .. } => {
                moved(reservation_id, room_id, Bucket::Confirmed)
            }
            ReservationEvent::ReservationRejected { reservation_id, room_id, .. } => {
                moved(reservation_id, room_id, Bucket::Rejected)
            }
            ReservationEvent::ReservationCancelled { reservation_id, room_id, .. } => {
                moved(reservation_id, room_id, Bucket::Cancelled)
            }
            ReservationEvent::CancellationRequested { room_id, .. } => Change::Touch { room_id: room_id.to_string() },
        }
    }

    /// The room the change names itself (a payment reaches its room through the reservation).
    pub(super) fn room(&self) -> Option<&str> {
        match self {
            Change::Register { room_id, .. }
            | Change::Details { room_id, .. }
            | Change::Price { room_id, .. }
            | Change::Delist { room_id }
            | Change::Book { room_id, .. }
            | Change::Release { room_id, .. }
            | Change::Touch { room_id }
            | Change::Request { room_id, .. }
            | Change::Move { room_id, .. }
            | Change::Review { room_id, .. } => Some(room_id),
            Change::Pay { .. } | Change::Nothing => None,
        }
    }

    /// The reservation whose row the change reads.
    pub(super) fn reservation(&self) -> Option<&str> {
        match self {
            Change::Request { reservation_id, .. }
            | Change::Move { reservation_id, .. }
            | Change::Pay { reservation_id, .. } => Some(reservation_id),
            _ => None,
        }
    }
}

/// A row as the batch holds it: absent (never registered, never requested) or present, and
/// whether the batch changed it.
#[derive(Debug)]
struct Slot<T> {
    row: Option<T>,
    changed: bool,
}

/// The rows a batch touches, as read before it and as its events leave them.
#[derive(Debug, Default)]
pub(super) struct Fold {
    rooms: BTreeMap<String, Slot<RoomRecord>>,
    reservations: BTreeMap<String, Slot<ReservationRecord>>,
}

impl Fold {
    /// A room's row as read (`None`: there is none).
    pub(super) fn know_room(&mut self, room_id: String, row: Option<RoomRecord>) {
        self.rooms.insert(room_id, Slot { row, changed: false });
    }

    /// A reservation's row as read (`None`: there is none).
    pub(super) fn know_reservation(&mut self, reservation_id: String, row: Option<ReservationRecord>) {
        self.reservations.insert(reservation_id, Slot { row, changed: false });
    }

    /// The rooms of the reservations read, which payments reach through them.
    pub(super) fn rooms_of_reservations(&self) -> impl Iterator<Item = &str> {
        self.reservations.values().filter_map(|slot| slot.row.as_ref().map(|row| row.room_id.as_str()))
    }

    /// The rooms the batch changed, new ones included, in id order.
    pub(super) fn changed_rooms(&self) -> impl Iterator<Item = (&str, &RoomRecord)> {
        changed(&self.rooms)
    }

    /// The reservations the batch changed, new ones included, in id order.
    pub(super) fn changed_reservations(&self) -> impl Iterator<Item = (&str, &ReservationRecord)> {
        changed(&self.reservations)
    }

    /// Applies one event's change, as `per_event` would apply the event.
    pub(super) fn apply(&mut self, event: &RecordedEvent, change: Change) -> Result<(), ApplyError> {
        match change {
            Change::Register { room_id, row } => {
                let slot = self.room(&room_id)?;
                if slot.row.is_none() {
                    slot.row = Some(*row);
                    slot.changed = true;
                }
                Ok(())
            }
            Change::Details { room_id, name, description, address, capacity } => self.touch(&room_id, event, |room| {
                if let Some(name) = name {
                    room.name = name;
                }
                if let Some(description) = description {
                    room.description = description;
                }
                if let Some(address) = address {
                    room.address = address;
                }
                room.capacity = capacity.unwrap_or(room.capacity);
                Ok(())
            }),
            Change::Price { room_id, price_minor, currency } => self.touch(&room_id, event, |room| {
                room.price_minor = price_minor;
                room.currency = currency;
                Ok(())
            }),
            Change::Delist { room_id } => self.touch(&room_id, event, |room| {
                room.listed = 0;
                Ok(())
            }),
            Change::Book { room_id, stay } => {
                let booked = self.registered(&room_id)?.booked.list(&room_id)?;
                if !booked.iter().any(|b| b.reservation_id == stay.reservation_id) {
                    booked.push(stay);
                    booked.sort_by(|a, b| (&a.check_in, &a.reservation_id).cmp(&(&b.check_in, &b.reservation_id)));
                }
                self.touch(&room_id, event, |_| Ok(()))
            }
            Change::Release { room_id, reservation_id } => {
                self.registered(&room_id)?.booked.list(&room_id)?.retain(|b| b.reservation_id != reservation_id);
                self.touch(&room_id, event, |_| Ok(()))
            }
            Change::Touch { room_id } => self.touch(&room_id, event, |_| Ok(())),
            Change::Request { reservation_id, room_id } => {
                let slot = self.reservation(&reservation_id)?;
                if slot.row.is_some() {
                    return Ok(());
                }
                slot.row =
                    Some(ReservationRecord { room_id: room_id.clone(), status: Bucket::Pending.as_str().into() });
                slot.changed = true;
                self.touch(&room_id, event, |room| add(&mut room.pending, 1, &room_id, "pending"))
            }
            Change::Move { reservation_id, room_id, to } => {
                let slot = self.reservation(&reservation_id)?;
                let Some(reservation) = slot.row.as_mut() else {
                    return Err(never_requested(event));
                };
                if reservation.status == to.as_str() {
                    return self.touch(&room_id, event, |_| Ok(()));
                }
                let from = Bucket::of(&reservation.status)?;
                reservation.status = to.as_str().to_owned();
                slot.changed = true;
                self.touch(&room_id, event, |room| {
                    add(room.count(from), -1, &room_id, from.as_str())?;
                    add(room.count(to), 1, &room_id, to.as_str())
                })
            }
            Change::Pay { reservation_id, total, amount } => {
                let Some(reservation) = self.reservation(&reservation_id)?.row.as_ref() else {
                    return Err(never_requested(event));
                };
                let room_id = reservation.room_id.clone();
                self.touch(&room_id, event, |room| match total {
                    Total::Charged => add(&mut room.charged_minor, amount, &room_id, "charged_minor"),
                    Total::Refunded => add(&mut room.refunded_minor, amount, &room_id, "refunded_minor"),
                })
            }
            Change::Review { room_id, rating } => self.touch(&room_id, event, |room| {
                add(&mut room.review_count, 1, &room_id, "review_count")?;
                add(&mut room.rating_sum, rating, &room_id, "rating_sum")
            }),
            Change::Nothing => Ok(()),
        }
    }

    /// Changes a room's row and stamps it with `event`; a room that does not exist is left alone
    /// (as an `UPDATE` that matches no row).
    fn touch(
        &mut self,
        room_id: &str,
        event: &RecordedEvent,
        change: impl FnOnce(&mut RoomRecord) -> Result<(), ApplyError>,
    ) -> Result<(), ApplyError> {
        let slot = self.room(room_id)?;
        let Some(room) = slot.row.as_mut() else { return Ok(()) };
        change(room)?;
        (room.updated_at, room.position) = stamp(event);
        slot.changed = true;
        Ok(())
    }

    /// A room's row, which must exist (a booking of a room never registered is poison).
    fn registered(&mut self, room_id: &str) -> Result<&mut RoomRecord, ApplyError> {
        self.room(room_id)?
            .row
            .as_mut()
            .ok_or_else(|| ApplyError::Poison(format!("room {room_id} was never registered")))
    }

    fn room(&mut self, room_id: &str) -> Result<&mut Slot<RoomRecord>, ApplyError> {
        self.rooms.get_mut(room_id).ok_or_else(|| unread("room", room_id))
    }

    fn reservation(&mut self, reservation_id: &str) -> Result<&mut Slot<ReservationRecord>, ApplyError> {
        self.reservations.get_mut(reservation_id).ok_or_else(|| unread("reservation", reservation_id))
    }
}

impl RoomRecord {
    /// The column counting reservations in `bucket`.
    fn count(&mut self, bucket: Bucket) -> &mut i64 {
        match bucket {
            Bucket::Pending => &mut self.pending,
            Bucket::Confirmed => &mut self.confirmed,
            Bucket::Cancelled => &mut self.cancelled,
            Bucket::Rejected => &mut self.rejected,
        }
    }
}

/// The rows of `slots` that the batch changed.
fn changed<T>(slots: &BTreeMap<String, Slot<T>>) -> impl Iterator<Item = (&str, &T)> {
    slots
        .iter()
        .filter(|(_, slot)| slot.changed)
        .filter_map(|(id, slot)| slot.row.as_ref().map(|row| (id.as_str(), row)))
}

/// Adds `delta` to a room's `column`. A sum past what a BIGINT holds cannot be folded: the
/// batch is then applied one event at a time, where the database decides.
fn add(value: &mut i64, delta: i64, room_id: &str, column: &str) -> Result<(), ApplyError> {
    *value = value
        .checked_add(delta)
        .ok_or_else(|| ApplyError::Poison(format!("room {room_id}'s {column} would overflow")))?;
    Ok(())
}

/// The poison of a status move or a payment for a reservation never requested.
fn never_requested(event: &RecordedEvent) -> ApplyError {
    ApplyError::Poison(format!("{} for a reservation never requested", event.event_type))
}

/// A change named a row the batch did not read: a flaw of the fold, never of the event. Answered
/// as poison so that the runner applies the batch one event at a time, which needs no such read.
fn unread(kind: &str, id: &str) -> ApplyError {
    ApplyError::Poison(format!("roomview's batch did not read {kind} {id}"))
}
