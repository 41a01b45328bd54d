//! `roomview`: one row per room with its details, reservation counts, booked stays, payment totals
//! and reviews (DESIGN.md §5.3).
//!
//! Payment events name a reservation, not a room, so the model keeps its own map from reservation
//! to room (and the reservation's status, to move counts between buckets).
//!
//! An event can be applied two ways with the same result:
//! - `per_event` — one event with its own statements (the runner's careful pass, after poison);
//! - `fold` + `rows` — a whole batch: every row it touches read at once, the events folded into
//!   those rows in memory, each changed row written once (the runner's straight pass, so rebuilds
//!   and live batches alike cost a few statements per batch rather than two or three per event).

mod fold;
mod per_event;
mod rows;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use stay_store::{RecordedEvent, SqlTransaction};

use crate::model::{ApplyError, ReadModel};
use fold::{Change, Fold};

/// The roomview read model.
#[derive(Debug, Default)]
pub struct RoomView;

/// A booked stay in the `booked` list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Booked {
    /// The reservation.
    pub reservation_id: String,
    /// First night.
    pub check_in: String,
    /// Day of departure.
    pub check_out: String,
}

/// The rooms table of version `v`.
pub fn table(v: i64) -> String {
    format!("roomview_v{v}")
}

/// The table of version `v` mapping each reservation to its room and status.
fn reservations_table(v: i64) -> String {
    format!("roomview_v{v}_reservations")
}

/// The `updated_at` and `position` an event leaves on the rows it touches.
fn stamp(event: &RecordedEvent) -> (String, String) {
    (event.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true), event.position.to_string())
}

#[async_trait]
impl ReadModel for RoomView {
    fn name(&self) -> &'static str {
        "roomview"
    }

    fn create(&self, v: i64) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {rooms} (
                room_id TEXT PRIMARY KEY, host_id TEXT NOT NULL, name TEXT NOT NULL, description TEXT NOT NULL,
                address TEXT NOT NULL, price_minor BIGINT NOT NULL, currency TEXT NOT NULL, capacity BIGINT NOT NULL,
                listed BIGINT NOT NULL, pending BIGINT NOT NULL, confirmed BIGINT NOT NULL, cancelled BIGINT NOT NULL,
                rejected BIGINT NOT NULL, booked TEXT NOT NULL, charged_minor BIGINT NOT NULL,
                refunded_minor BIGINT NOT NULL, review_count BIGINT NOT NULL, rating_sum BIGINT NOT NULL,
                updated_at TEXT NOT NULL, position TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS {rooms}_host ON {rooms} (host_id, room_id);
             CREATE TABLE IF NOT EXISTS {reservations} (
                reservation_id TEXT PRIMARY KEY, room_id TEXT NOT NULL, status TEXT NOT NULL);",
            rooms = table(v),
            reservations = reservations_table(v)
        )
    }

    fn tables(&self, v: i64) -> Vec<String> {
        vec![table(v), reservations_table(v)]
    }

    fn wants(&self, event: &RecordedEvent) -> bool {
        matches!(event.aggregate_type.as_str(), "Room" | "Reservation" | "Payment" | "Review")
    }

    async fn apply(&self, tx: &mut SqlTransaction, v: i64, event: &RecordedEvent) -> Result<(), ApplyError> {
        per_event::apply(tx, v, event).await
    }

    /// Decodes every event first (an undecodable one is poison before anything is read), reads the
    /// reservations the batch names and then the rooms (payments reach their room through the
    /// reservation), folds the events into those rows in feed order and writes the changed ones.
    async fn apply_batch(&self, tx: &mut SqlTransaction, v: i64, events: &[&RecordedEvent]) -> Result<(), ApplyError> {
        let changes = events
            .iter()
            .map(|event| Change::of(event).map(|change| (*event, change)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut fold = Fold::default();
        let reservations = changes.iter().filter_map(|(_, change)| change.reservation()).collect();
        for (id, reservation) in rows::read_reservations(tx, v, reservations).await? {
            fold.know_reservation(id, reservation);
        }
        let rooms =
            changes.iter().filter_map(|(_, change)| change.room()).chain(fold.rooms_of_reservations()).collect();
        for (id, room) in rows::read_rooms(tx, v, rooms).await? {
            fold.know_room(id, room);
        }
        for (event, change) in changes {
            fold.apply(event, change)?;
        }
        rows::write_reservations(tx, v, fold.changed_reservations()).await?;
        rows::write_rooms(tx, v, fold.changed_rooms()).await?;
        Ok(())
    }
}
