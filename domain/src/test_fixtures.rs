//! Shared values for the aggregate tests: a fixed "today", dates relative to it, people, money.

use std::sync::Arc;

use chrono::{Days, NaiveDate};
use uuid::Uuid;

use crate::clock::FixedClock;
use crate::ids::{ReservationId, RoomId, UserId};
use crate::money::{Currency, Money, PositiveMoney};
use crate::services::DomainServices;
use crate::values::StayDates;

/// The day every aggregate test runs on.
pub(crate) fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2030, 6, 15).expect("valid date")
}

/// `offset` days from [`today`], before it when negative.
pub(crate) fn day(offset: i64) -> NaiveDate {
    let days = Days::new(offset.unsigned_abs());
    if offset >= 0 { today().checked_add_days(days) } else { today().checked_sub_days(days) }.expect("in range")
}

/// A stay of `nights` nights starting `from` days after today.
pub(crate) fn stay(from: i64, nights: i64) -> StayDates {
    StayDates::new(day(from), day(from + nights)).expect("valid stay")
}

/// Services whose clock is stopped at the start of [`today`].
pub(crate) fn services() -> DomainServices {
    DomainServices::new(Arc::new(FixedClock::on(today())))
}

/// `amount_minor` cents.
pub(crate) fn usd(amount_minor: i64) -> Money {
    Money::new(amount_minor, Currency::USD).expect("valid money")
}

/// `amount_minor` cents, above zero.
pub(crate) fn usd_positive(amount_minor: i64) -> PositiveMoney {
    PositiveMoney::new(usd(amount_minor)).expect("positive money")
}

/// A user id.
pub(crate) fn user(id: &str) -> UserId {
    UserId::new(id).expect("valid user id")
}

/// The host of the test room.
pub(crate) fn host() -> UserId {
    user("host-1")
}

/// The guest of the test reservations.
pub(crate) fn guest() -> UserId {
    user("guest-1")
}

/// The test room.
pub(crate) fn room_id() -> RoomId {
    RoomId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001))
}

/// Another room.
pub(crate) fn other_room_id() -> RoomId {
    RoomId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002))
}

/// Test reservation number `n`.
pub(crate) fn reservation(n: u128) -> ReservationId {
    ReservationId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_9000_0000_0000_0000 + n))
}
