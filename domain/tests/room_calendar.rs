//! Property tests of a room's calendar: random hold / confirm / release sequences never give a
//! night to two reservations, retries change nothing, and every answer matches a simple model.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Days, NaiveDate};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use proptest::prelude::*;
use stay_domain::room::{EntryState, Room, RoomCommand, RoomError, RoomEvent};
use stay_domain::*;
use uuid::Uuid;

const RESERVATIONS: u128 = 5;
const NIGHTLY_PRICE: i64 = 10_000;
const CAPACITY: i64 = 2;

#[derive(Debug, Clone)]
enum Step {
    Hold { reservation: u128, from: i64, nights: i64, guests: i64 },
    Confirm { reservation: u128 },
    Release { reservation: u128 },
}

fn step() -> impl Strategy<Value = Step> {
    let reservation = 0..RESERVATIONS;
    prop_oneof![
        3 => (reservation.clone(), -2i64..60, 1i64..=12, 1i64..=3).prop_map(
            |(reservation, from, nights, guests)| Step::Hold { reservation, from, nights, guests }
        ),
        2 => reservation.clone().prop_map(|reservation| Step::Confirm { reservation }),
        1 => reservation.prop_map(|reservation| Step::Release { reservation }),
    ]
}

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2030, 6, 15).expect("valid date")
}

fn day(offset: i64) -> NaiveDate {
    let days = Days::new(offset.unsigned_abs());
    if offset >= 0 { today().checked_add_days(days) } else { today().checked_sub_days(days) }.expect("in range")
}

fn stay(from: i64, nights: i64) -> StayDates {
    StayDates::new(day(from), day(from + nights)).expect("valid stay")
}

fn reservation_id(n: u128) -> ReservationId {
    ReservationId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_9000_0000_0000_0000 + n))
}

fn room_id() -> RoomId {
    RoomId::from_uuid(Uuid::from_u128(1))
}

fn guest() -> UserId {
    UserId::new("guest-1").expect("valid user id")
}

fn registered_room() -> Room {
    let mut room = Room::default();
    room.apply(RoomEvent::RoomRegistered {
        room_id: room_id(),
        host_id: UserId::new("host-1").expect("valid user id"),
        name: RoomName::new("Loft").expect("valid"),
        description: Description::default(),
        address: Address::new("1 Harbour Road").expect("valid"),
        nightly_price: PositiveMoney::from_minor(NIGHTLY_PRICE, Currency::USD).expect("valid"),
        capacity: Capacity::new(CAPACITY).expect("valid"),
    });
    room
}

fn command(step: &Step) -> RoomCommand {
    match *step {
        Step::Hold { reservation, from, nights, guests } => RoomCommand::HoldNights {
            reservation_id: reservation_id(reservation),
            guest_id: guest(),
            stay: stay(from, nights),
            guests: GuestCount::new(guests).expect("valid"),
        },
        Step::Confirm { reservation } => RoomCommand::ConfirmBooking { reservation_id: reservation_id(reservation) },
        Step::Release { reservation } => RoomCommand::ReleaseNights { reservation_id: reservation_id(reservation) },
    }
}

fn execute(
    runtime: &tokio::runtime::Runtime,
    room: &mut Room,
    services: &DomainServices,
    command: RoomCommand,
) -> Result<Vec<RoomEvent>, RoomError> {
    runtime.block_on(async {
        let sink = EventSink::default();
        room.handle(command, services, &sink).await?;
        Ok(sink.collect().await)
    })
}

/// What the model says a step should answer, given each reservation's (stay, state).
fn expected(step: &Step, model: &BTreeMap<u128, (StayDates, EntryState)>) -> Result<Vec<RoomEvent>, RoomError> {
    match *step {
        Step::Hold { reservation, from, nights, guests } => {
            if model.contains_key(&reservation) {
                return Ok(vec![]);
            }
            let stay = stay(from, nights);
            if from < 0 {
                return Err(RoomError::StayInPast { check_in: stay.check_in(), today: today() });
            }
            if guests > CAPACITY {
                return Err(RoomError::TooManyGuests { capacity: 2, guests: u8::try_from(guests).expect("small") });
            }
            let taken = model.values().any(|(other, state)| *state != EntryState::Released && other.overlaps(&stay));
            if taken {
                return Err(RoomError::DatesUnavailable);
            }
            Ok(vec![RoomEvent::NightsHeld {
                room_id: room_id(),
                reservation_id: reservation_id(reservation),
                guest_id: guest(),
                stay,
                guests: GuestCount::new(guests).expect("valid"),
                price: Money::new(NIGHTLY_PRICE * nights, Currency::USD).expect("valid"),
            }])
        }
        Step::Confirm { reservation } => match model.get(&reservation) {
            None => Err(RoomError::HoldNotFound),
            Some((_, EntryState::Released)) => Err(RoomError::HoldAlreadyReleased),
            Some((_, EntryState::Booked)) => Ok(vec![]),
            Some((stay, EntryState::Held)) => Ok(vec![RoomEvent::BookingConfirmed {
                room_id: room_id(),
                reservation_id: reservation_id(reservation),
                guest_id: guest(),
                stay: *stay,
            }]),
        },
        Step::Release { reservation } => match model.get(&reservation) {
            None | Some((_, EntryState::Released)) => Ok(vec![]),
            Some((stay, EntryState::Held)) => Ok(vec![RoomEvent::HoldReleased {
                room_id: room_id(),
                reservation_id: reservation_id(reservation),
                stay: *stay,
            }]),
            Some((stay, EntryState::Booked)) => Ok(vec![RoomEvent::BookingReleased {
                room_id: room_id(),
                reservation_id: reservation_id(reservation),
                stay: *stay,
            }]),
        },
    }
}

fn advance_model(step: &Step, model: &mut BTreeMap<u128, (StayDates, EntryState)>) {
    match *step {
        Step::Hold { reservation, from, nights, .. } => {
            model.insert(reservation, (stay(from, nights), EntryState::Held));
        }
        Step::Confirm { reservation } => {
            if let Some(entry) = model.get_mut(&reservation) {
                entry.1 = EntryState::Booked;
            }
        }
        Step::Release { reservation } => {
            if let Some(entry) = model.get_mut(&reservation) {
                entry.1 = EntryState::Released;
            }
        }
    }
}

/// No night is held or booked by two reservations, and the night index agrees with the entries.
fn assert_no_night_given_twice(room: &Room) -> Result<(), TestCaseError> {
    let mut owner: BTreeMap<NaiveDate, ReservationId> = BTreeMap::new();
    for (reservation, entry) in room.calendar().entries() {
        if entry.state == EntryState::Released {
            continue;
        }
        for night in entry.stay.each_night() {
            if let Some(other) = owner.insert(night, reservation) {
                return Err(TestCaseError::fail(format!("{night} is given to both {other} and {reservation}")));
            }
            prop_assert_eq!(room.calendar().occupant(night), Some(reservation));
        }
    }
    for offset in -5..80 {
        let night = day(offset);
        prop_assert_eq!(room.calendar().occupant(night), owner.get(&night).copied());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_calendar_commands_never_give_a_night_to_two_reservations(
        steps in prop::collection::vec(step(), 1..40)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let services = DomainServices::new(Arc::new(FixedClock::on(today())));
        let mut room = registered_room();
        let mut model = BTreeMap::new();

        for step in &steps {
            let before = room.clone();
            let answer = execute(&runtime, &mut room, &services, command(step));
            prop_assert_eq!(&answer, &expected(step, &model), "step {:?}", step);
            match &answer {
                Ok(events) if !events.is_empty() => advance_model(step, &mut model),
                // Refusals and no-ops leave the room exactly as it was.
                _ => prop_assert_eq!(&room, &before, "step {:?} changed the room", step),
            }
            assert_no_night_given_twice(&room)?;

            // Holding again for the same reservation, with any stay, changes nothing.
            if let Step::Hold { reservation, .. } = *step {
                if model.contains_key(&reservation) {
                    let settled = room.clone();
                    let again = Step::Hold { reservation, from: 30, nights: 5, guests: 1 };
                    let retry = execute(&runtime, &mut room, &services, command(&again));
                    prop_assert_eq!(retry, Ok(vec![]));
                    prop_assert_eq!(&room, &settled);
                }
            }
        }
    }

    #[test]
    fn replaying_the_recorded_events_rebuilds_the_same_room(
        steps in prop::collection::vec(step(), 1..40)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let services = DomainServices::new(Arc::new(FixedClock::on(today())));
        let mut room = registered_room();
        let mut history = Vec::new();
        for step in &steps {
            if let Ok(events) = execute(&runtime, &mut room, &services, command(step)) {
                history.extend(events);
            }
        }
        let mut replayed = registered_room();
        for event in history {
            replayed.apply(event);
        }
        prop_assert_eq!(replayed, room);
    }
}
