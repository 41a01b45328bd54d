//! roomview folds a batch per row before writing. These tests hold it to the rule that makes that
//! safe: a folded batch leaves exactly the rows that applying its events one by one leaves (random
//! histories of rooms, reservations, payments and reviews, duplicates and poison included, on
//! SQLite and on PostgreSQL), refuses a batch as poison exactly when one by one would, and a poison
//! event in a folded batch is still parked by the runner while the rest of the batch is applied.

use std::collections::HashMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use cqrs_es::DomainEvent;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::json;
use stay_domain::{
    Address, Capacity, CardToken, Currency, Description, GuestCount, Money, PaymentEvent, PaymentId, PositiveMoney,
    Rating, RefundId, RejectionReason, ReservationEvent, ReservationId, ReviewComment, ReviewEvent, ReviewId,
    RoomEvent, RoomId, RoomName, StayDates, UserId,
};
use stay_projections::models::notifications::Notifications;
use stay_projections::models::reservations::Reservations;
use stay_projections::models::roomview::RoomView;
use stay_projections::queries::rooms;
use stay_projections::{ApplyError, Projector, ReadModel, RunnerConfig, PROJECTION_MIGRATIONS};
use stay_store::{
    Append, CommandContext, EventStore, NewEvent, Position, RecordedEvent, Row, SqlDatabase, StoreOptions, StoreUrl,
};

// --- Histories ------------------------------------------------------------------------------------

/// Rooms a history may name. The last is registered more rarely than the others, so events for a
/// room not (yet) registered come up often.
const ROOMS: [&str; 4] = [
    "0190c7a2-0000-7000-8000-00000000a001",
    "0190c7a2-0000-7000-8000-00000000a002",
    "0190c7a2-0000-7000-8000-00000000a003",
    "0190c7a2-0000-7000-8000-00000000a004",
];

/// Reservations a history may name.
const RESERVATIONS: [&str; 6] = [
    "0190c7a2-0000-7000-8000-00000000b001",
    "0190c7a2-0000-7000-8000-00000000b002",
    "0190c7a2-0000-7000-8000-00000000b003",
    "0190c7a2-0000-7000-8000-00000000b004",
    "0190c7a2-0000-7000-8000-00000000b005",
    "0190c7a2-0000-7000-8000-00000000b006",
];

/// One step of a random history: indices into `ROOMS` and `RESERVATIONS`, small numbers.
#[derive(Clone, Debug)]
enum Act {
    Register {
        room: usize,
        price: i64,
        capacity: i64,
    },
    Details {
        room: usize,
        name: Option<usize>,
        description: bool,
        address: Option<usize>,
        capacity: Option<i64>,
    },
    Price {
        room: usize,
        price: i64,
    },
    Delist {
        room: usize,
    },
    Hold {
        room: usize,
        reservation: usize,
        day: u32,
    },
    HoldReleased {
        room: usize,
        reservation: usize,
        day: u32,
    },
    Book {
        room: usize,
        reservation: usize,
        day: u32,
        nights: u32,
    },
    Release {
        room: usize,
        reservation: usize,
        day: u32,
    },
    Request {
        reservation: usize,
        room: usize,
        day: u32,
    },
    Confirm {
        reservation: usize,
        room: usize,
    },
    Reject {
        reservation: usize,
        room: usize,
    },
    CancellationRequested {
        reservation: usize,
        room: usize,
        was_confirmed: bool,
    },
    Cancel {
        reservation: usize,
        room: usize,
        was_confirmed: bool,
    },
    Payment {
        reservation: usize,
        kind: usize,
        amount: i64,
    },
    Review {
        room: usize,
        reservation: usize,
        rating: i64,
    },
    Reply {
        room: usize,
        reservation: usize,
    },
    /// An event of one of the four aggregates that does not decode.
    Garbled {
        aggregate: usize,
    },
    /// An earlier event of the history, seen again.
    Again {
        earlier: usize,
    },
}

fn act() -> impl Strategy<Value = Act> {
    let room = 0..ROOMS.len();
    let reservation = 0..RESERVATIONS.len();
    prop_oneof![
        4 => (0..ROOMS.len() - 1, 1..50_000i64, 1..=16i64)
            .prop_map(|(room, price, capacity)| Act::Register { room, price, capacity }),
        1 => Just(Act::Register { room: ROOMS.len() - 1, price: 999, capacity: 3 }),
        1 => (room.clone(), proptest::option::of(0..3usize), any::<bool>(), proptest::option::of(0..3usize),
              proptest::option::of(1..=16i64))
            .prop_map(|(room, name, description, address, capacity)| Act::Details {
                room, name, description, address, capacity
            }),
        1 => (room.clone(), 1..50_000i64).prop_map(|(room, price)| Act::Price { room, price }),
        1 => room.clone().prop_map(|room| Act::Delist { room }),
        2 => (room.clone(), reservation.clone(), 0..6u32)
            .prop_map(|(room, reservation, day)| Act::Hold { room, reservation, day }),
        1 => (room.clone(), reservation.clone(), 0..6u32)
            .prop_map(|(room, reservation, day)| Act::HoldReleased { room, reservation, day }),
        3 => (room.clone(), reservation.clone(), 0..6u32, 1..4u32)
            .prop_map(|(room, reservation, day, nights)| Act::Book { room, reservation, day, nights }),
        2 => (room.clone(), reservation.clone(), 0..6u32)
            .prop_map(|(room, reservation, day)| Act::Release { room, reservation, day }),
        4 => (reservation.clone(), room.clone(), 0..6u32)
            .prop_map(|(reservation, room, day)| Act::Request { reservation, room, day }),
        3 => (reservation.clone(), room.clone()).prop_map(|(reservation, room)| Act::Confirm { reservation, room }),
        1 => (reservation.clone(), room.clone()).prop_map(|(reservation, room)| Act::Reject { reservation, room }),
        1 => (reservation.clone(), room.clone(), any::<bool>()).prop_map(|(reservation, room, was_confirmed)| {
            Act::CancellationRequested { reservation, room, was_confirmed }
        }),
        2 => (reservation.clone(), room.clone(), any::<bool>())
            .prop_map(|(reservation, room, was_confirmed)| Act::Cancel { reservation, room, was_confirmed }),
        4 => (reservation.clone(), 0..6usize, 1..100_000i64)
            .prop_map(|(reservation, kind, amount)| Act::Payment { reservation, kind, amount }),
        2 => (room.clone(), reservation.clone(), 1..=5i64)
            .prop_map(|(room, reservation, rating)| Act::Review { room, reservation, rating }),
        1 => (room.clone(), reservation.clone()).prop_map(|(room, reservation)| Act::Reply { room, reservation }),
        1 => (0..4usize).prop_map(|aggregate| Act::Garbled { aggregate }),
        3 => any::<usize>().prop_map(|earlier| Act::Again { earlier }),
    ]
}

/// An event as written: its aggregate and its stored form.
#[derive(Clone, Debug)]
struct Written {
    aggregate_type: &'static str,
    aggregate_id: String,
    event: NewEvent,
}

fn written<E: DomainEvent>(aggregate_type: &'static str, aggregate_id: impl ToString, event: E) -> Written {
    let event = NewEvent::from_domain(&event).expect("a domain event serialises");
    Written { aggregate_type, aggregate_id: aggregate_id.to_string(), event }
}

fn room_id(i: usize) -> RoomId {
    ROOMS[i].parse().expect("a room id")
}

fn reservation_id(i: usize) -> ReservationId {
    RESERVATIONS[i].parse().expect("a reservation id")
}

fn user(id: &str) -> UserId {
    UserId::new(id).expect("a user id")
}

fn usd(amount_minor: i64) -> PositiveMoney {
    PositiveMoney::from_minor(amount_minor, Currency::USD).expect("a positive amount")
}

/// `nights` nights from day `day` of July 2030.
fn stay(day: u32, nights: u32) -> StayDates {
    let date = |d| NaiveDate::from_ymd_opt(2030, 7, d).expect("a day of July");
    StayDates::new(date(day + 1), date(day + 1 + nights)).expect("a stay")
}

const NAMES: [&str; 3] = ["Sea view loft", "Garden flat", "Attic"];
const ADDRESSES: [&str; 3] = ["1 Harbour Road", "2 Mill Lane", "3 Quay Street"];

/// The event an act writes (`None` for `Again` with nothing before it).
fn write(act: &Act, before: &[Written]) -> Option<Written> {
    let room_event = |room: usize, event: RoomEvent| written("Room", room_id(room), event);
    let reservation_event =
        |reservation: usize, event: ReservationEvent| written("Reservation", reservation_id(reservation), event);
    Some(match *act {
        Act::Register { room, price, capacity } => room_event(
            room,
            RoomEvent::RoomRegistered {
                room_id: room_id(room),
                host_id: user(&format!("host-{room}")),
                name: RoomName::new(NAMES[room % NAMES.len()]).expect("a name"),
                description: Description::new("Bright and quiet.").expect("a description"),
                address: Address::new(ADDRESSES[room % ADDRESSES.len()]).expect("an address"),
                nightly_price: usd(price),
                capacity: Capacity::new(capacity).expect("a capacity"),
            },
        ),
        Act::Details { room, name, description, address, capacity } => room_event(
            room,
            RoomEvent::RoomDetailsChanged {
                room_id: room_id(room),
                name: name.map(|n| RoomName::new(NAMES[n]).expect("a name")),
                description: description.then(|| Description::new("Freshly painted.").expect("a description")),
                address: address.map(|a| Address::new(ADDRESSES[a]).expect("an address")),
                capacity: capacity.map(|c| Capacity::new(c).expect("a capacity")),
            },
        ),
        Act::Price { room, price } => {
            room_event(room, RoomEvent::NightlyPriceChanged { room_id: room_id(room), price: usd(price) })
        }
        Act::Delist { room } => room_event(room, RoomEvent::RoomDelisted { room_id: room_id(room) }),
        Act::Hold { room, reservation, day } => room_event(
            room,
            RoomEvent::NightsHeld {
                room_id: room_id(room),
                reservation_id: reservation_id(reservation),
                guest_id: user("guest-1"),
                stay: stay(day, 2),
                guests: GuestCount::new(2).expect("guests"),
                price: Money::new(20_000, Currency::USD).expect("money"),
            },
        ),
        Act::HoldReleased { room, reservation, day } => room_event(
            room,
            RoomEvent::HoldReleased {
                room_id: room_id(room),
                reservation_id: reservation_id(reservation),
                stay: stay(day, 2),
            },
        ),
        Act::Book { room, reservation, day, nights } => room_event(
            room,
            RoomEvent::BookingConfirmed {
                room_id: room_id(room),
                reservation_id: reservation_id(reservation),
                guest_id: user("guest-1"),
                stay: stay(day, nights),
            },
        ),
        Act::Release { room, reservation, day } => room_event(
            room,
            RoomEvent::BookingReleased {
                room_id: room_id(room),
                reservation_id: reservation_id(reservation),
                stay: stay(day, 2),
            },
        ),
        Act::Request { reservation, room, day } => reservation_event(
            reservation,
            ReservationEvent::ReservationRequested {
                reservation_id: reservation_id(reservation),
                room_id: room_id(room),
                guest_id: user("guest-1"),
                stay: stay(day, 2),
                guests: GuestCount::new(2).expect("guests"),
                card_token: CardToken::new("tok_visa").expect("a card token"),
            },
        ),
        Act::Confirm { reservation, room } => reservation_event(
            reservation,
            ReservationEvent::ReservationConfirmed {
                reservation_id: reservation_id(reservation),
                room_id: room_id(room),
                guest_id: user("guest-1"),
                stay: stay(0, 2),
                total_price: Money::new(20_000, Currency::USD).expect("money"),
                payment_id: PaymentId::for_reservation(reservation_id(reservation)),
            },
        ),
        Act::Reject { reservation, room } => reservation_event(
            reservation,
            ReservationEvent::ReservationRejected {
                reservation_id: reservation_id(reservation),
                room_id: room_id(room),
                guest_id: user("guest-1"),
                reason: RejectionReason::DatesUnavailable,
            },
        ),
        Act::CancellationRequested { reservation, room, was_confirmed } => reservation_event(
            reservation,
            ReservationEvent::CancellationRequested {
                reservation_id: reservation_id(reservation),
                room_id: room_id(room),
                guest_id: user("guest-1"),
                requested_by: user("guest-1"),
                by_admin: false,
                was_confirmed,
            },
        ),
        Act::Cancel { reservation, room, was_confirmed } => reservation_event(
            reservation,
            ReservationEvent::ReservationCancelled {
                reservation_id: reservation_id(reservation),
                room_id: room_id(room),
                guest_id: user("guest-1"),
                was_confirmed,
            },
        ),
        Act::Payment { reservation, kind, amount } => {
            let reservation_id = reservation_id(reservation);
            let payment_id = PaymentId::for_reservation(reservation_id);
            let amount = usd(amount);
            let event = match kind {
                0 => PaymentEvent::ChargeRequested {
                    payment_id,
                    reservation_id,
                    amount,
                    card_token: CardToken::new("tok_visa").expect("a card token"),
                },
                1 | 2 => {
                    PaymentEvent::ChargeApproved { payment_id, reservation_id, amount, provider_ref: "ch_1".into() }
                }
                3 => PaymentEvent::ChargeDeclined { payment_id, reservation_id, amount, reason: "declined".into() },
                4 => PaymentEvent::PaymentRefunded {
                    payment_id,
                    reservation_id,
                    refund_id: RefundId::for_cancellation(reservation_id),
                    amount,
                    refunded_total: amount.money(),
                },
                _ => PaymentEvent::ChargeVoided { payment_id, reservation_id, amount, reason: "timeout".into() },
            };
            written("Payment", payment_id, event)
        }
        Act::Review { room, reservation, rating } => {
            let review_id = ReviewId::for_reservation(reservation_id(reservation));
            written(
                "Review",
                review_id,
                ReviewEvent::ReviewPosted {
                    review_id,
                    room_id: room_id(room),
                    reservation_id: reservation_id(reservation),
                    guest_id: user("guest-1"),
                    rating: Rating::new(rating).expect("a rating"),
                    comment: ReviewComment::new("Lovely.").expect("a comment"),
                },
            )
        }
        Act::Reply { room, reservation } => {
            let review_id = ReviewId::for_reservation(reservation_id(reservation));
            written(
                "Review",
                review_id,
                ReviewEvent::ReplyPosted {
                    review_id,
                    room_id: room_id(room),
                    reservation_id: reservation_id(reservation),
                    host_id: user(&format!("host-{room}")),
                    comment: ReviewComment::new("Thank you!").expect("a comment"),
                },
            )
        }
        Act::Garbled { aggregate } => Written {
            aggregate_type: ["Room", "Reservation", "Payment", "Review"][aggregate],
            aggregate_id: ROOMS[0].to_owned(),
            event: NewEvent {
                event_type: "Garbled".into(),
                event_version: "1.0".into(),
                payload: json!({"Garbled": {"room_id": 7}}),
            },
        },
        Act::Again { earlier } => {
            if before.is_empty() {
                return None;
            }
            before[earlier % before.len()].clone()
        }
    })
}

/// The events of a history.
fn history(acts: &[Act]) -> Vec<RecordedEvent> {
    let mut events: Vec<Written> = Vec::new();
    for act in acts {
        if let Some(event) = write(act, &events) {
            events.push(event);
        }
    }
    recorded(events)
}

/// `events` as the feed would give them: positions from 1, a moment each.
fn recorded(events: Vec<Written>) -> Vec<RecordedEvent> {
    let start: DateTime<Utc> = "2030-06-01T08:00:00.123456Z".parse().expect("a time");
    events
        .into_iter()
        .zip(1u64..)
        .map(|(written, n)| RecordedEvent {
            position: Position::new(n, 0),
            aggregate_type: written.aggregate_type.to_owned(),
            aggregate_id: written.aggregate_id,
            sequence: n,
            event_type: written.event.event_type,
            event_version: written.event.event_version,
            payload: written.event.payload,
            metadata: json!({}),
            recorded_at: start + Duration::milliseconds(1_237 * i64::try_from(n).expect("a small position")),
        })
        .collect()
}

// --- One by one against folded ------------------------------------------------------------------

/// Version 1 gets the events one by one, version 2 folded batches.
const ONE_BY_ONE: i64 = 1;
const FOLDED: i64 = 2;

/// Fresh, empty tables of `model` for both versions.
async fn fresh_tables(db: &SqlDatabase, model: &dyn ReadModel) {
    let mut tx = db.begin().await.expect("begin");
    for v in [ONE_BY_ONE, FOLDED] {
        for table in model.tables(v) {
            tx.batch(&format!("DROP TABLE IF EXISTS {table}")).await.expect("drop");
        }
        tx.batch(&model.create(v)).await.expect("create");
    }
    tx.commit().await.expect("commit");
}

/// Every row of roomview's tables of version `v`, in key order, with every column.
async fn contents(db: &SqlDatabase, v: i64) -> (Vec<Row>, Vec<Row>) {
    let mut tables = model_contents(db, &RoomView, v).await.into_iter();
    let rooms = tables.next().expect("the rooms table");
    let reservations = tables.next().expect("the reservations table");
    (rooms, reservations)
}

/// Every row of every table of `model` at version `v`, in key order (the first column), with
/// every column.
async fn model_contents(db: &SqlDatabase, model: &dyn ReadModel, v: i64) -> Vec<Vec<Row>> {
    let mut contents = Vec::new();
    for table in model.tables(v) {
        contents.push(db.rows(&format!("SELECT * FROM {table} ORDER BY 1"), &[]).await.expect("rows"));
    }
    contents
}

/// Applies `events` in batches of `sizes` (used in turn) one by one to version 1 and folded to
/// version 2; fails unless both refuse the same batches as poison and leave the same rows after
/// every batch. A refused batch is tried again without its poison event, as if parked.
async fn one_by_one_equals_folded(
    db: &SqlDatabase,
    events: &[RecordedEvent],
    sizes: &[usize],
) -> Result<(), TestCaseError> {
    batches_equal_one_by_one(db, &RoomView, events, sizes).await
}

/// [`one_by_one_equals_folded`] for any model: its `apply_batch` against its `apply`.
async fn batches_equal_one_by_one(
    db: &SqlDatabase,
    model: &dyn ReadModel,
    events: &[RecordedEvent],
    sizes: &[usize],
) -> Result<(), TestCaseError> {
    fresh_tables(db, model).await;
    let events: Vec<&RecordedEvent> = events.iter().filter(|e| model.wants(e)).collect();
    let mut rest: Vec<&RecordedEvent> = events;
    let mut sizes = sizes.iter().cycle();
    while !rest.is_empty() {
        let size = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
        let mut batch: Vec<&RecordedEvent> = rest.drain(..size).collect();
        loop {
            let mut tx = db.begin().await.expect("begin");
            let mut poison = None;
            for (i, event) in batch.iter().enumerate() {
                match model.apply(&mut tx, ONE_BY_ONE, event).await {
                    Ok(()) => {}
                    Err(ApplyError::Poison(_)) => {
                        poison = Some(i);
                        break;
                    }
                    Err(err) => panic!("one by one: {err}"),
                }
            }
            // SQLite has one writer at a time: end version 1's transaction before version 2's.
            if poison.is_none() {
                tx.commit().await.expect("commit");
            } else {
                tx.rollback().await.expect("rollback");
            }
            let mut folded_tx = db.begin().await.expect("begin");
            let folded = model.apply_batch(&mut folded_tx, FOLDED, &batch).await;
            match (poison, folded) {
                (None, Ok(())) => {
                    folded_tx.commit().await.expect("commit");
                    break;
                }
                (Some(i), Err(ApplyError::Poison(_))) => {
                    folded_tx.rollback().await.expect("rollback");
                    batch.remove(i);
                }
                (poison, folded) => {
                    folded_tx.rollback().await.expect("rollback");
                    let at = poison.map(|i| batch[i]);
                    return Err(TestCaseError::fail(format!(
                        "one by one met poison at {at:?}, the fold answered {folded:?}; batch {batch:#?}"
                    )));
                }
            }
        }
        prop_assert_eq!(
            model_contents(db, model, ONE_BY_ONE).await,
            model_contents(db, model, FOLDED).await,
            "{} after a batch of {}",
            model.name(),
            size
        );
    }
    Ok(())
}

fn histories() -> impl Strategy<Value = (Vec<Act>, Vec<usize>)> {
    (proptest::collection::vec(act(), 0..120), proptest::collection::vec(1..60usize, 1..6))
}

/// Runs the property on `db` under a runtime of its own (proptest's cases are not async).
fn check_on(runtime: &tokio::runtime::Runtime, db: &SqlDatabase, cases: u32) {
    check_model_on(runtime, db, &RoomView, cases);
}

/// The property for `model`: its batches leave the rows its events one by one leave.
fn check_model_on(runtime: &tokio::runtime::Runtime, db: &SqlDatabase, model: &dyn ReadModel, cases: u32) {
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&histories(), |(acts, sizes)| {
        let events = history(&acts);
        runtime.block_on(batches_equal_one_by_one(db, model, &events, &sizes))
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime")
}

async fn sqlite_database(dir: &tempfile::TempDir) -> SqlDatabase {
    SqlDatabase::open(&StoreUrl::Sqlite(dir.path().join("read.db"))).await.expect("open")
}

#[test]
fn folded_batches_leave_the_rows_one_by_one_leaves_on_sqlite() {
    let runtime = runtime();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = runtime.block_on(sqlite_database(&dir));
    check_on(&runtime, &db, 200);
}

#[test]
fn folded_batches_leave_the_rows_one_by_one_leaves_on_postgres() {
    let runtime = runtime();
    let database = runtime.block_on(TestPostgres::create());
    let db = runtime.block_on(database.open());
    check_on(&runtime, &db, 40);
}

/// `reservations` and `notifications` write runs of room registrations as one statement each
/// (`models/registrations.rs`) and the rest event by event: the same rows as one by one.
#[test]
fn reservations_and_notifications_batches_leave_the_rows_one_by_one_leaves_on_sqlite() {
    let runtime = runtime();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = runtime.block_on(sqlite_database(&dir));
    check_model_on(&runtime, &db, &Reservations, 100);
    check_model_on(&runtime, &db, &Notifications, 100);
}

#[test]
fn reservations_and_notifications_batches_leave_the_rows_one_by_one_leaves_on_postgres() {
    let runtime = runtime();
    let postgres = runtime.block_on(TestPostgres::create());
    let db = runtime.block_on(postgres.open());
    check_model_on(&runtime, &db, &Reservations, 30);
    check_model_on(&runtime, &db, &Notifications, 30);
}

/// A history wider than one statement: 150 rooms registered and four reservations requested for
/// each; then every reservation booked (in the reverse order of the stays), confirmed and half of
/// them charged. Applied in two batches, the second reads back every row the first wrote.
fn wide_history() -> Vec<RecordedEvent> {
    let room_ids: Vec<RoomId> =
        (0..150u32).map(|r| format!("0190c7a2-0000-7000-8000-0000000c{r:04}").parse().expect("a room id")).collect();
    let reservation_ids = |r: usize| -> Vec<ReservationId> {
        (0..4)
            .map(|k| format!("0190c7a2-0000-7000-8000-0000000d{r:03}{k}").parse().expect("a reservation id"))
            .collect()
    };
    let mut events = Vec::new();
    for (r, &room_id) in room_ids.iter().enumerate() {
        let registered = RoomEvent::RoomRegistered {
            room_id,
            host_id: user("host-wide"),
            name: RoomName::new("Wide room").expect("a name"),
            description: Description::new("One of many.").expect("a description"),
            address: Address::new("4 Long Row").expect("an address"),
            nightly_price: usd(5_000 + i64::try_from(r).expect("small")),
            capacity: Capacity::new(2).expect("a capacity"),
        };
        events.push(written("Room", room_id, registered));
        for (k, reservation_id) in (0..).zip(reservation_ids(r)) {
            let requested = ReservationEvent::ReservationRequested {
                reservation_id,
                room_id,
                guest_id: user("guest-wide"),
                stay: stay(k, 1),
                guests: GuestCount::new(1).expect("guests"),
                card_token: CardToken::new("tok_visa").expect("a card token"),
            };
            events.push(written("Reservation", reservation_id, requested));
        }
    }
    for (r, &room_id) in room_ids.iter().enumerate() {
        for (k, reservation_id) in (0..).zip(reservation_ids(r)) {
            let booked = RoomEvent::BookingConfirmed {
                room_id,
                reservation_id,
                guest_id: user("guest-wide"),
                stay: stay(3 - k, 1),
            };
            events.push(written("Room", room_id, booked));
            let confirmed = ReservationEvent::ReservationConfirmed {
                reservation_id,
                room_id,
                guest_id: user("guest-wide"),
                stay: stay(3 - k, 1),
                total_price: Money::new(1_000, Currency::USD).expect("money"),
                payment_id: PaymentId::for_reservation(reservation_id),
            };
            events.push(written("Reservation", reservation_id, confirmed));
            if k % 2 == 0 {
                let payment_id = PaymentId::for_reservation(reservation_id);
                let approved = PaymentEvent::ChargeApproved {
                    payment_id,
                    reservation_id,
                    amount: usd(1_000 + i64::from(k)),
                    provider_ref: "ch_wide".into(),
                };
                events.push(written("Payment", payment_id, approved));
            }
        }
    }
    recorded(events)
}

#[test]
fn a_batch_of_hundreds_of_rows_folds_as_one_by_one_on_sqlite_and_postgres() {
    let runtime = runtime();
    let events = wide_history();
    let rooms_and_requests = 150 + 600;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let sqlite = runtime.block_on(sqlite_database(&dir));
    let postgres = runtime.block_on(TestPostgres::create());
    let pg = runtime.block_on(postgres.open());
    for db in [&sqlite, &pg] {
        // At once, then as two batches: the second reads back the 150 rooms and 600 reservations
        // the first wrote (more than one query's worth) and rewrites each once.
        for sizes in [vec![events.len()], vec![rooms_and_requests, events.len()]] {
            if let Err(failure) = runtime.block_on(one_by_one_equals_folded(db, &events, &sizes)) {
                panic!("{failure}");
            }
            let (rooms, reservations) = runtime.block_on(contents(db, FOLDED));
            assert_eq!((rooms.len(), reservations.len()), (150, 600));
        }
    }
}

// --- PostgreSQL ---------------------------------------------------------------------------------

/// A PostgreSQL database of this test's own, created on the server the tests use
/// (`STAY_TEST_POSTGRES_URL`, by default the local one) and dropped, with its connections, when
/// this value is dropped (a failing test's too).
struct TestPostgres {
    admin_url: String,
    name: String,
}

impl TestPostgres {
    async fn create() -> Self {
        let admin_url = std::env::var("STAY_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let admin = SqlDatabase::open(&StoreUrl::Postgres(admin_url.clone())).await.unwrap_or_else(|e| {
            panic!("PostgreSQL at {admin_url} is needed for this test (start it, or set STAY_TEST_POSTGRES_URL): {e}")
        });
        let name = format!("stay_test_{}", uuid::Uuid::new_v4().simple());
        admin.run(&format!("CREATE DATABASE {name}"), &[]).await.expect("create the test database");
        Self { admin_url, name }
    }

    async fn open(&self) -> SqlDatabase {
        let server = self.admin_url.rsplit_once('/').map(|(server, _)| server).expect("a URL ending in /DATABASE");
        let url = format!("{server}/{}", self.name);
        SqlDatabase::open(&StoreUrl::Postgres(url)).await.expect("open the test database")
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        // Drop cannot await, and may run inside a runtime that cannot block: drop the database from
        // a thread with a runtime of its own.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let admin = SqlDatabase::open(&StoreUrl::Postgres(admin_url)).await.ok()?;
                admin.run(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"), &[]).await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("warning: test database {} was not dropped", self.name);
        }
    }
}

// --- Through the runner ---------------------------------------------------------------------------

/// An event store on a SQLite file in a temporary directory, with the runner's tables.
struct Store {
    store: EventStore,
    db: SqlDatabase,
    versions: HashMap<String, u64>,
    _dir: tempfile::TempDir,
}

impl Store {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = EventStore::open(&StoreUrl::Sqlite(dir.path().join("stay.db")), StoreOptions::default())
            .await
            .expect("open the store");
        store.migrate().await.expect("migrate the store");
        let db = store.sql_database().expect("a SQL database beside the log");
        db.migrate(&PROJECTION_MIGRATIONS).await.expect("migrate the runner's tables");
        Self { store, db, versions: HashMap::new(), _dir: dir }
    }

    async fn append(&mut self, written: Written) -> Position {
        let version = self.versions.entry(format!("{}/{}", written.aggregate_type, written.aggregate_id)).or_insert(0);
        let append = Append {
            aggregate_type: written.aggregate_type.to_owned(),
            aggregate_id: written.aggregate_id,
            expected_version: *version,
            events: vec![written.event],
            metadata: CommandContext::new("test").metadata(Utc::now()),
        };
        *version += 1;
        *self.store.append(append).await.expect("append").first().expect("a position")
    }

    async fn act(&mut self, act: Act) -> Position {
        let written = write(&act, &[]).expect("an event");
        self.append(written).await
    }
}

#[tokio::test]
async fn a_poison_event_in_a_folded_batch_is_parked_and_the_rest_of_the_batch_applied() {
    let mut s = Store::new().await;
    let model = RoomView;
    stay_projections::runner::initialize(&s.db, &model).await.expect("initialize");
    let (room, ghost) = (0, ROOMS.len() - 1);
    s.act(Act::Register { room, price: 12_000, capacity: 2 }).await;
    s.act(Act::Request { reservation: 0, room, day: 0 }).await;
    let poison = s.act(Act::Book { room: ghost, reservation: 1, day: 0, nights: 2 }).await;
    let held = s.act(Act::Hold { room: ghost, reservation: 1, day: 0 }).await;
    s.act(Act::Payment { reservation: 0, kind: 1, amount: 24_000 }).await;
    s.act(Act::Confirm { reservation: 0, room }).await;
    let last = s.act(Act::Book { room, reservation: 0, day: 0, nights: 2 }).await;
    let projector = Projector::new(s.store.clone(), s.db.clone(), vec![], RunnerConfig::default());

    let step = projector.step(&model, 1).await.expect("step");

    assert_eq!((step.read, step.at), (7, last));
    let parked =
        s.db.rows(
            "SELECT position, aggregate_id, error FROM projection_dead_letters \
             WHERE projection = 'roomview' AND version = 1 ORDER BY position",
            &[],
        )
        .await
        .expect("dead letters");
    let parked: Vec<(String, String, String)> = parked
        .iter()
        .map(|row| {
            (
                row.text("position").expect("position"),
                row.text("aggregate_id").expect("id"),
                row.text("error").expect("error"),
            )
        })
        .collect();
    assert_eq!(parked.len(), 2, "{parked:?}");
    assert_eq!(
        parked[0],
        (poison.to_string(), ROOMS[ghost].to_owned(), format!("room {} was never registered", ROOMS[ghost]))
    );
    assert_eq!((parked[1].0.as_str(), parked[1].1.as_str()), (held.to_string().as_str(), ROOMS[ghost]));
    let row = rooms::room(&s.db, 1, ROOMS[room]).await.expect("read").expect("the room");
    assert_eq!((row.pending, row.confirmed, row.charged_minor), (0, 1, 24_000));
    assert_eq!(row.booked.iter().map(|b| b.reservation_id.as_str()).collect::<Vec<_>>(), vec![RESERVATIONS[0]]);
    assert_eq!(row.position, last.to_string(), "stamped by the last event that touched it");
    assert!(rooms::room(&s.db, 1, ROOMS[ghost]).await.expect("read").is_none());
}
