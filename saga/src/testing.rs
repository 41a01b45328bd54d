//! What the saga's own tests set up alike: a room to reserve and a guest's request for it.

use chrono::{NaiveDate, TimeDelta};
use stay_domain::{
    Address, Capacity, CardToken, Currency, Description, GuestCount, Money, PositiveMoney, ReservationCommand,
    ReservationId, RoomCommand, RoomId, RoomName, StayDates, UserId,
};
use stay_store::{CommandContext, EventStore, Executors, SqlDatabase, StoreOptions, StoreUrl};
use tempfile::TempDir;
use uuid::Uuid;

use crate::schedule::SAGA_MIGRATIONS;

/// A fresh SQLite store in a temporary directory, with the log's and the saga's tables.
pub async fn fresh_store() -> (TempDir, EventStore, SqlDatabase) {
    let dir = TempDir::new().unwrap();
    let url = StoreUrl::Sqlite(dir.path().join("stay.db"));
    let store = EventStore::open(&url, StoreOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    let db = store.sql_database().unwrap();
    db.migrate(&SAGA_MIGRATIONS).await.unwrap();
    (dir, store, db)
}

/// Registers "Harbour view" (two guests, 120.00 EUR a night) for host-1.
pub async fn register_room(executors: &Executors) -> RoomId {
    let room_id = RoomId::from_uuid(Uuid::new_v4());
    let register = RoomCommand::RegisterRoom {
        room_id,
        host_id: UserId::new("host-1").unwrap(),
        name: RoomName::new("Harbour view").unwrap(),
        description: Description::default(),
        address: Address::new("1 Quay Street").unwrap(),
        nightly_price: PositiveMoney::new(Money::new(12_000, Currency::new("EUR").unwrap()).unwrap()).unwrap(),
        capacity: Capacity::new(2).unwrap(),
    };
    executors.rooms.execute(&room_id.to_string(), register, &CommandContext::new("host-1")).await.unwrap();
    room_id
}

/// guest-1 asks for three nights in `room_id` from `check_in` for two, paying with `card`, as the
/// command API would.
pub async fn request(executors: &Executors, room_id: RoomId, check_in: NaiveDate, card: &str) -> ReservationId {
    let reservation_id = ReservationId::from_uuid(Uuid::new_v4());
    let command = ReservationCommand::RequestReservation {
        reservation_id,
        room_id,
        guest_id: UserId::new("guest-1").unwrap(),
        stay: StayDates::new(check_in, check_in + TimeDelta::days(3)).unwrap(),
        guests: GuestCount::new(2).unwrap(),
        card_token: CardToken::new(card).unwrap(),
    };
    let id = reservation_id.to_string();
    executors.reservations.execute(&id, command, &CommandContext::new("guest-1")).await.unwrap();
    reservation_id
}

/// Held by every test that drives sagas, so they run one at a time. The test that captures the
/// drive's spans sets its subscriber for its own thread only; a drive on another thread at the same
/// moment can register the spans' call sites as of no interest to anyone, and the capture then
/// sees nothing.
pub static DRIVES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
