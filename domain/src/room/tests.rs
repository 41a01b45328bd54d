//! Given/when/then tests of every room rule (DESIGN.md §5.1).

use cqrs_es::test::TestFramework;
use serde_json::json;

use super::*;
use crate::ids::{ReservationId, UserId};
use crate::money::{Currency, PositiveMoney};
use crate::test_fixtures::{day, guest, host, reservation, room_id, services, stay, today, usd, usd_positive, user};
use crate::values::{Address, Capacity, Description, GuestCount, RoomName, StayDates};

type RoomTest = TestFramework<Room>;

fn name(text: &str) -> RoomName {
    RoomName::new(text).expect("valid name")
}

fn capacity(n: i64) -> Capacity {
    Capacity::new(n).expect("valid capacity")
}

fn guests(n: i64) -> GuestCount {
    GuestCount::new(n).expect("valid guest count")
}

fn registered() -> RoomEvent {
    RoomEvent::RoomRegistered {
        room_id: room_id(),
        host_id: host(),
        name: name("Sea view loft"),
        description: Description::new("Bright, quiet, two windows.").expect("valid"),
        address: Address::new("1 Harbour Road, Portsmouth").expect("valid"),
        nightly_price: usd_positive(10_000),
        capacity: capacity(2),
    }
}

fn held(n: u128, stay: StayDates) -> RoomEvent {
    RoomEvent::NightsHeld {
        room_id: room_id(),
        reservation_id: reservation(n),
        guest_id: guest(),
        stay,
        guests: guests(2),
        price: usd(10_000 * i64::from(stay.nights())),
    }
}

fn booked(n: u128, stay: StayDates) -> RoomEvent {
    RoomEvent::BookingConfirmed { room_id: room_id(), reservation_id: reservation(n), guest_id: guest(), stay }
}

fn hold_released(n: u128, stay: StayDates) -> RoomEvent {
    RoomEvent::HoldReleased { room_id: room_id(), reservation_id: reservation(n), stay }
}

fn delisted() -> RoomEvent {
    RoomEvent::RoomDelisted { room_id: room_id() }
}

fn hold(n: u128, stay: StayDates) -> RoomCommand {
    hold_for(n, stay, 2)
}

fn hold_for(n: u128, stay: StayDates, guest_count: i64) -> RoomCommand {
    RoomCommand::HoldNights { reservation_id: reservation(n), guest_id: guest(), stay, guests: guests(guest_count) }
}

fn no_changes(actor: UserId) -> RoomCommand {
    RoomCommand::ChangeRoomDetails {
        actor,
        name: None,
        description: None,
        address: None,
        capacity: None,
        nightly_price: None,
    }
}

fn register_command() -> RoomCommand {
    let RoomEvent::RoomRegistered { room_id, host_id, name, description, address, nightly_price, capacity } =
        registered()
    else {
        unreachable!("registered() is a RoomRegistered event")
    };
    RoomCommand::RegisterRoom { room_id, host_id, name, description, address, nightly_price, capacity }
}

// --- registration --------------------------------------------------------------------------------

#[tokio::test]
async fn registering_a_room_lists_it_with_its_host() {
    RoomTest::with(services())
        .given_no_previous_events()
        .when_async(register_command())
        .await
        .then_expect_events(vec![registered()]);
}

#[tokio::test]
async fn registering_an_existing_room_is_refused() {
    RoomTest::with(services())
        .given(vec![registered()])
        .when_async(register_command())
        .await
        .then_expect_error(RoomError::AlreadyRegistered);
}

#[tokio::test]
async fn every_command_on_an_unregistered_room_is_room_not_found() {
    let commands = vec![
        no_changes(host()),
        RoomCommand::ChangeNightlyPrice { actor: host(), price: usd_positive(1) },
        RoomCommand::DelistRoom { actor: host() },
        hold(1, stay(1, 2)),
        RoomCommand::ConfirmBooking { reservation_id: reservation(1) },
        RoomCommand::ReleaseNights { reservation_id: reservation(1) },
    ];
    for command in commands {
        RoomTest::with(services())
            .given_no_previous_events()
            .when_async(command)
            .await
            .then_expect_error(RoomError::RoomNotFound);
    }
}

// --- details and price ---------------------------------------------------------------------------

#[tokio::test]
async fn changing_details_records_only_the_fields_that_changed() {
    RoomTest::with(services())
        .given(vec![registered()])
        .when_async(RoomCommand::ChangeRoomDetails {
            actor: host(),
            name: Some(name("Sea view loft")), // unchanged: left out of the event
            description: None,
            address: Some(Address::new("2 Harbour Road").expect("valid")),
            capacity: Some(capacity(4)),
            nightly_price: None,
        })
        .await
        .then_expect_events(vec![RoomEvent::RoomDetailsChanged {
            room_id: room_id(),
            name: None,
            description: None,
            address: Some(Address::new("2 Harbour Road").expect("valid")),
            capacity: Some(capacity(4)),
        }]);
}

#[tokio::test]
async fn changing_details_to_their_current_values_records_nothing() {
    RoomTest::with(services())
        .given(vec![registered()])
        .when_async(RoomCommand::ChangeRoomDetails {
            actor: host(),
            name: Some(name("Sea view loft")),
            description: None,
            address: None,
            capacity: Some(capacity(2)),
            nightly_price: Some(usd_positive(10_000)),
        })
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn changing_details_and_price_together_records_both_in_one_command() {
    RoomTest::with(services())
        .given(vec![registered()])
        .when_async(RoomCommand::ChangeRoomDetails {
            actor: host(),
            name: Some(name("Loft")),
            description: None,
            address: None,
            capacity: None,
            nightly_price: Some(usd_positive(12_000)),
        })
        .await
        .then_expect_events(vec![
            RoomEvent::RoomDetailsChanged {
                room_id: room_id(),
                name: Some(name("Loft")),
                description: None,
                address: None,
                capacity: None,
            },
            RoomEvent::NightlyPriceChanged { room_id: room_id(), price: usd_positive(12_000) },
        ]);
}

#[tokio::test]
async fn changing_the_nightly_price_records_the_new_price() {
    RoomTest::with(services())
        .given(vec![registered()])
        .when_async(RoomCommand::ChangeNightlyPrice { actor: host(), price: usd_positive(9_500) })
        .await
        .then_expect_events(vec![RoomEvent::NightlyPriceChanged { room_id: room_id(), price: usd_positive(9_500) }]);
}

#[tokio::test]
async fn setting_the_same_nightly_price_records_nothing() {
    RoomTest::with(services())
        .given(vec![registered()])
        .when_async(RoomCommand::ChangeNightlyPrice { actor: host(), price: usd_positive(10_000) })
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn a_price_in_another_currency_is_refused() {
    let euros = PositiveMoney::from_minor(9_000, Currency::EUR).expect("valid");
    let expected = RoomError::CurrencyChange { current: Currency::USD, requested: Currency::EUR };
    RoomTest::with(services())
        .given(vec![registered()])
        .when_async(RoomCommand::ChangeNightlyPrice { actor: host(), price: euros })
        .await
        .then_expect_error(expected.clone());
    // Refused as a whole: the name change in the same command is not recorded either.
    RoomTest::with(services())
        .given(vec![registered()])
        .when_async(RoomCommand::ChangeRoomDetails {
            actor: host(),
            name: Some(name("Loft")),
            description: None,
            address: None,
            capacity: None,
            nightly_price: Some(euros),
        })
        .await
        .then_expect_error(expected);
}

#[tokio::test]
async fn only_the_host_may_change_or_delist_the_room() {
    let stranger = user("host-2");
    let commands = vec![
        RoomCommand::ChangeRoomDetails {
            actor: stranger.clone(),
            name: Some(name("Mine now")),
            description: None,
            address: None,
            capacity: None,
            nightly_price: None,
        },
        RoomCommand::ChangeNightlyPrice { actor: stranger.clone(), price: usd_positive(1) },
        RoomCommand::DelistRoom { actor: stranger },
    ];
    for command in commands {
        RoomTest::with(services())
            .given(vec![registered()])
            .when_async(command)
            .await
            .then_expect_error(RoomError::NotOwner);
    }
}

// --- delisting -----------------------------------------------------------------------------------

#[tokio::test]
async fn delisting_a_room_without_upcoming_stays_records_it() {
    RoomTest::with(services())
        .given(vec![registered()])
        .when_async(RoomCommand::DelistRoom { actor: host() })
        .await
        .then_expect_events(vec![delisted()]);
}

#[tokio::test]
async fn delisting_is_refused_while_a_hold_is_upcoming() {
    RoomTest::with(services())
        .given(vec![registered(), held(1, stay(10, 3))])
        .when_async(RoomCommand::DelistRoom { actor: host() })
        .await
        .then_expect_error(RoomError::HasUpcomingStays);
}

#[tokio::test]
async fn delisting_is_refused_while_a_booking_is_under_way() {
    // Checked in two days ago, checks out tomorrow: tonight is still booked.
    RoomTest::with(services())
        .given(vec![registered(), held(1, stay(-2, 3)), booked(1, stay(-2, 3))])
        .when_async(RoomCommand::DelistRoom { actor: host() })
        .await
        .then_expect_error(RoomError::HasUpcomingStays);
}

#[tokio::test]
async fn delisting_is_allowed_once_every_stay_has_ended_or_been_released() {
    // One booking checked out this morning, one hold was released.
    RoomTest::with(services())
        .given(vec![
            registered(),
            held(1, stay(-3, 3)),
            booked(1, stay(-3, 3)),
            held(2, stay(5, 2)),
            hold_released(2, stay(5, 2)),
        ])
        .when_async(RoomCommand::DelistRoom { actor: host() })
        .await
        .then_expect_events(vec![delisted()]);
}

#[tokio::test]
async fn delisting_a_delisted_room_records_nothing() {
    RoomTest::with(services())
        .given(vec![registered(), delisted()])
        .when_async(RoomCommand::DelistRoom { actor: host() })
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn a_delisted_room_refuses_changes_and_holds() {
    let commands = vec![
        RoomCommand::ChangeRoomDetails {
            actor: host(),
            name: Some(name("Back again")),
            description: None,
            address: None,
            capacity: None,
            nightly_price: None,
        },
        RoomCommand::ChangeNightlyPrice { actor: host(), price: usd_positive(1) },
        hold(1, stay(1, 2)),
    ];
    for command in commands {
        RoomTest::with(services())
            .given(vec![registered(), delisted()])
            .when_async(command)
            .await
            .then_expect_error(RoomError::RoomDelisted);
    }
}

// --- holds ---------------------------------------------------------------------------------------

#[tokio::test]
async fn holding_nights_answers_the_price_of_the_stay() {
    RoomTest::with(services()).given(vec![registered()]).when_async(hold(1, stay(1, 3))).await.then_expect_events(
        vec![RoomEvent::NightsHeld {
            room_id: room_id(),
            reservation_id: reservation(1),
            guest_id: guest(),
            stay: stay(1, 3),
            guests: guests(2),
            price: usd(30_000),
        }],
    );
}

#[tokio::test]
async fn a_hold_is_priced_at_the_nightly_price_at_the_time_of_the_hold() {
    RoomTest::with(services())
        .given(vec![
            registered(),
            held(1, stay(1, 2)),
            RoomEvent::NightlyPriceChanged { room_id: room_id(), price: usd_positive(12_500) },
        ])
        .when_async(hold(2, stay(5, 2)))
        .await
        .then_expect_events(vec![RoomEvent::NightsHeld {
            room_id: room_id(),
            reservation_id: reservation(2),
            guest_id: guest(),
            stay: stay(5, 2),
            guests: guests(2),
            price: usd(25_000),
        }]);
}

#[tokio::test]
async fn a_hold_overlapping_another_hold_is_refused() {
    RoomTest::with(services())
        .given(vec![registered(), held(1, stay(5, 3))])
        .when_async(hold(2, stay(7, 4)))
        .await
        .then_expect_error(RoomError::DatesUnavailable);
}

#[tokio::test]
async fn a_hold_overlapping_a_booking_is_refused() {
    RoomTest::with(services())
        .given(vec![registered(), held(1, stay(5, 3)), booked(1, stay(5, 3))])
        .when_async(hold(2, stay(3, 3)))
        .await
        .then_expect_error(RoomError::DatesUnavailable);
}

#[tokio::test]
async fn a_hold_may_start_on_the_day_another_stay_checks_out() {
    RoomTest::with(services())
        .given(vec![registered(), held(1, stay(5, 3))])
        .when_async(hold(2, stay(8, 2)))
        .await
        .then_expect_events(vec![held(2, stay(8, 2))]);
}

#[tokio::test]
async fn released_nights_can_be_held_again() {
    RoomTest::with(services())
        .given(vec![registered(), held(1, stay(5, 3)), hold_released(1, stay(5, 3))])
        .when_async(hold(2, stay(5, 3)))
        .await
        .then_expect_events(vec![held(2, stay(5, 3))]);
}

#[tokio::test]
async fn a_hold_for_more_guests_than_the_room_sleeps_is_refused() {
    RoomTest::with(services())
        .given(vec![registered()])
        .when_async(hold_for(1, stay(1, 2), 3))
        .await
        .then_expect_error(RoomError::TooManyGuests { capacity: 2, guests: 3 });
}

#[tokio::test]
async fn a_hold_starting_before_today_is_refused() {
    RoomTest::with(services())
        .given(vec![registered()])
        .when_async(hold(1, stay(-1, 3)))
        .await
        .then_expect_error(RoomError::StayInPast { check_in: day(-1), today: today() });
}

#[tokio::test]
async fn a_hold_may_start_today() {
    RoomTest::with(services())
        .given(vec![registered()])
        .when_async(hold(1, stay(0, 1)))
        .await
        .then_expect_events(vec![held(1, stay(0, 1))]);
}

#[tokio::test]
async fn a_hold_whose_price_overflows_is_refused() {
    let huge = usd_positive(i64::MAX / 2);
    RoomTest::with(services())
        .given(vec![registered(), RoomEvent::NightlyPriceChanged { room_id: room_id(), price: huge }])
        .when_async(hold(1, stay(1, 3)))
        .await
        .then_expect_error(RoomError::PriceOverflow);
}

#[test]
fn a_hold_cannot_be_made_from_an_empty_or_overlong_stay() {
    let command = |check_in: &str, check_out: &str| {
        json!({"HoldNights": {
            "reservation_id": reservation(1),
            "guest_id": "guest-1",
            "stay": {"check_in": check_in, "check_out": check_out},
            "guests": 1,
        }})
    };
    assert!(serde_json::from_value::<RoomCommand>(command("2030-07-01", "2030-07-03")).is_ok());
    for (check_in, check_out) in
        [("2030-07-01", "2030-07-01"), ("2030-07-03", "2030-07-01"), ("2030-07-01", "2030-08-01")]
    {
        assert!(
            serde_json::from_value::<RoomCommand>(command(check_in, check_out)).is_err(),
            "{check_in}..{check_out}"
        );
    }
}

#[tokio::test]
async fn holding_again_for_the_same_reservation_records_nothing_whatever_the_stay() {
    for again in [stay(5, 3), stay(20, 2), stay(-5, 1)] {
        RoomTest::with(services())
            .given(vec![registered(), held(1, stay(5, 3))])
            .when_async(hold(1, again))
            .await
            .then_expect_events(vec![]);
    }
}

#[tokio::test]
async fn holding_again_after_booking_release_or_delisting_records_nothing() {
    let histories = vec![
        vec![registered(), held(1, stay(5, 3)), booked(1, stay(5, 3))],
        vec![registered(), held(1, stay(5, 3)), hold_released(1, stay(5, 3))],
        vec![registered(), held(1, stay(-5, 3)), booked(1, stay(-5, 3)), delisted()],
    ];
    for history in histories {
        RoomTest::with(services()).given(history).when_async(hold(1, stay(5, 3))).await.then_expect_events(vec![]);
    }
}

// --- bookings and releases -----------------------------------------------------------------------

#[tokio::test]
async fn confirming_a_hold_turns_it_into_a_booking() {
    RoomTest::with(services())
        .given(vec![registered(), held(1, stay(5, 3))])
        .when_async(RoomCommand::ConfirmBooking { reservation_id: reservation(1) })
        .await
        .then_expect_events(vec![booked(1, stay(5, 3))]);
}

#[tokio::test]
async fn confirming_a_booking_again_records_nothing() {
    RoomTest::with(services())
        .given(vec![registered(), held(1, stay(5, 3)), booked(1, stay(5, 3))])
        .when_async(RoomCommand::ConfirmBooking { reservation_id: reservation(1) })
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn confirming_an_unknown_hold_is_refused() {
    RoomTest::with(services())
        .given(vec![registered(), held(1, stay(5, 3))])
        .when_async(RoomCommand::ConfirmBooking { reservation_id: reservation(2) })
        .await
        .then_expect_error(RoomError::HoldNotFound);
}

#[tokio::test]
async fn confirming_a_released_hold_is_refused() {
    RoomTest::with(services())
        .given(vec![registered(), held(1, stay(5, 3)), hold_released(1, stay(5, 3))])
        .when_async(RoomCommand::ConfirmBooking { reservation_id: reservation(1) })
        .await
        .then_expect_error(RoomError::HoldAlreadyReleased);
}

#[tokio::test]
async fn releasing_a_hold_says_it_was_a_hold() {
    RoomTest::with(services())
        .given(vec![registered(), held(1, stay(5, 3))])
        .when_async(RoomCommand::ReleaseNights { reservation_id: reservation(1) })
        .await
        .then_expect_events(vec![hold_released(1, stay(5, 3))]);
}

#[tokio::test]
async fn releasing_a_booking_says_it_was_a_booking() {
    RoomTest::with(services())
        .given(vec![registered(), held(1, stay(5, 3)), booked(1, stay(5, 3))])
        .when_async(RoomCommand::ReleaseNights { reservation_id: reservation(1) })
        .await
        .then_expect_events(vec![RoomEvent::BookingReleased {
            room_id: room_id(),
            reservation_id: reservation(1),
            stay: stay(5, 3),
        }]);
}

#[tokio::test]
async fn releasing_an_unknown_or_released_reservation_records_nothing() {
    let histories = vec![
        vec![registered()],
        vec![registered(), held(2, stay(5, 3))],
        vec![registered(), held(1, stay(5, 3)), hold_released(1, stay(5, 3))],
    ];
    for history in histories {
        RoomTest::with(services())
            .given(history)
            .when_async(RoomCommand::ReleaseNights { reservation_id: reservation(1) })
            .await
            .then_expect_events(vec![]);
    }
}

// --- state ---------------------------------------------------------------------------------------

#[test]
fn the_calendar_tracks_who_has_each_night() {
    let mut room = Room::default();
    for event in
        [registered(), held(1, stay(5, 3)), booked(1, stay(5, 3)), held(2, stay(8, 1)), hold_released(2, stay(8, 1))]
    {
        cqrs_es::Aggregate::apply(&mut room, event);
    }
    let calendar = room.calendar();
    assert_eq!(calendar.occupant(day(5)), Some(reservation(1)));
    assert_eq!(calendar.occupant(day(7)), Some(reservation(1)));
    assert_eq!(calendar.occupant(day(8)), None);
    assert_eq!(calendar.entry(reservation(1)).map(|entry| entry.state), Some(EntryState::Booked));
    assert_eq!(calendar.entry(reservation(2)).map(|entry| entry.state), Some(EntryState::Released));
    assert_eq!(calendar.entry(ReservationId::from_uuid(uuid::Uuid::nil())), None);
    assert_eq!(room.listing().map(|listing| listing.listed), Some(true));

    // The state survives a snapshot round trip.
    let json = serde_json::to_value(&room).expect("serializes");
    assert_eq!(serde_json::from_value::<Room>(json).expect("parses"), room);
}
