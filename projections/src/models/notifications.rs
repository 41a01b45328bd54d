//! `notifications`: the messages guests and hosts receive — exactly one per recipient per event.
//!
//! A notification's id is derived from the event's position, its recipient and its kind, and is
//! the table's key, so applying an event twice (which the checkpoint already prevents) could not
//! notify twice either.

use async_trait::async_trait;
use stay_domain::{Reservation, ReservationEvent, Review, ReviewEvent, Room, RoomEvent};
use stay_store::{RecordedEvent, SqlTransaction};
use uuid::Uuid;

use super::registrations::{apply_in_runs, Directory};
use crate::model::{decode, ApplyError, ReadModel};

/// The notifications read model.
#[derive(Debug, Default)]
pub struct Notifications;

/// The notifications table of version `v`.
pub fn table(v: i64) -> String {
    format!("notifications_v{v}")
}

fn rooms_table(v: i64) -> String {
    format!("notifications_v{v}_rooms")
}

const NAMESPACE: Uuid = Uuid::from_u128(0x9a1e_2c3d_4b5f_4e60_8172_93a4_b5c6_d7e8);

struct Message {
    recipient: String,
    kind: &'static str,
    reservation_id: Option<String>,
    room_id: String,
    text: String,
}

impl Notifications {
    async fn room(&self, tx: &mut SqlTransaction, v: i64, room_id: &str) -> Result<(String, String), ApplyError> {
        let rows = tx
            .rows(&format!("SELECT host_id, name FROM {} WHERE room_id = $1", rooms_table(v)), &[room_id.into()])
            .await?;
        let row = rows.first().ok_or_else(|| ApplyError::Poison(format!("room {room_id} was never registered")))?;
        Ok((row.text("host_id")?, row.text("name")?))
    }

    async fn send(
        &self,
        tx: &mut SqlTransaction,
        v: i64,
        event: &RecordedEvent,
        message: Message,
    ) -> Result<(), ApplyError> {
        let name = format!("{}|{}|{}", event.position, message.recipient, message.kind);
        let id = Uuid::new_v5(&NAMESPACE, name.as_bytes()).to_string();
        tx.run(
            &format!(
                "INSERT INTO {} (notification_id, recipient, kind, reservation_id, room_id, message, created_at, \
                   position, position_major, position_minor) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (notification_id) DO NOTHING",
                table(v)
            ),
            &[
                id.into(),
                message.recipient.into(),
                message.kind.into(),
                message.reservation_id.into(),
                message.room_id.into(),
                message.text.into(),
                event.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true).into(),
                event.position.to_string().into(),
                i64::try_from(event.position.major()).unwrap_or(i64::MAX).into(),
                i64::try_from(event.position.minor()).unwrap_or(i64::MAX).into(),
            ],
        )
        .await?;
        Ok(())
    }

    /// The same news to the guest and to the room's host.
    #[allow(clippy::too_many_arguments)]
    async fn both(
        &self,
        tx: &mut SqlTransaction,
        v: i64,
        event: &RecordedEvent,
        kind: &'static str,
        reservation_id: String,
        room_id: String,
        guest: String,
        guest_text: String,
        host_text: String,
    ) -> Result<(), ApplyError> {
        let (host, _) = self.room(tx, v, &room_id).await?;
        let to_guest = Message {
            recipient: guest,
            kind,
            reservation_id: Some(reservation_id.clone()),
            room_id: room_id.clone(),
            text: guest_text,
        };
        self.send(tx, v, event, to_guest).await?;
        let to_host = Message { recipient: host, kind, reservation_id: Some(reservation_id), room_id, text: host_text };
        self.send(tx, v, event, to_host).await
    }
}

#[async_trait]
impl ReadModel for Notifications {
    fn name(&self) -> &'static str {
        "notifications"
    }

    fn create(&self, v: i64) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                notification_id TEXT PRIMARY KEY, recipient TEXT NOT NULL, kind TEXT NOT NULL, reservation_id TEXT,
                room_id TEXT, message TEXT NOT NULL, created_at TEXT NOT NULL, position TEXT NOT NULL,
                position_major BIGINT NOT NULL, position_minor BIGINT NOT NULL);
             CREATE INDEX IF NOT EXISTS {t}_recipient ON {t} (recipient, position_major, position_minor);
             CREATE TABLE IF NOT EXISTS {r} (room_id TEXT PRIMARY KEY, host_id TEXT NOT NULL, name TEXT NOT NULL);",
            t = table(v),
            r = rooms_table(v)
        )
    }

    fn tables(&self, v: i64) -> Vec<String> {
        vec![table(v), rooms_table(v)]
    }

    fn wants(&self, event: &RecordedEvent) -> bool {
        matches!(
            (event.aggregate_type.as_str(), event.event_type.as_str()),
            ("Room", "RoomRegistered" | "RoomDetailsChanged")
                | ("Reservation", "ReservationConfirmed" | "ReservationRejected" | "ReservationCancelled")
                | ("Review", "ReviewPosted")
        )
    }

    /// Runs of room registrations are written together (`registrations.rs`); the rest event by event.
    async fn apply_batch(&self, tx: &mut SqlTransaction, v: i64, events: &[&RecordedEvent]) -> Result<(), ApplyError> {
        let table = rooms_table(v);
        let directory = Directory { table: &table, columns: &["room_id", "host_id", "name"] };
        apply_in_runs(self, tx, v, events, directory, |event| match event {
            RoomEvent::RoomRegistered { room_id, host_id, name, .. } => {
                Some(vec![room_id.to_string().into(), host_id.as_str().into(), name.as_str().into()])
            }
            _ => None,
        })
        .await
    }

    async fn apply(&self, tx: &mut SqlTransaction, v: i64, event: &RecordedEvent) -> Result<(), ApplyError> {
        match event.aggregate_type.as_str() {
            "Room" => {
                match decode::<Room>(event)? {
                    RoomEvent::RoomRegistered { room_id, host_id, name, .. } => {
                        tx.run(
                            &format!(
                                "INSERT INTO {} (room_id, host_id, name) VALUES ($1, $2, $3) ON CONFLICT (room_id) DO NOTHING",
                                rooms_table(v)
                            ),
                            &[room_id.to_string().into(), host_id.as_str().into(), name.as_str().into()],
                        )
                        .await?;
                    }
                    RoomEvent::RoomDetailsChanged { room_id, name: Some(name), .. } => {
                        tx.run(
                            &format!("UPDATE {} SET name = $2 WHERE room_id = $1", rooms_table(v)),
                            &[room_id.to_string().into(), name.as_str().into()],
                        )
                        .await?;
                    }
                    _ => {}
                }
                Ok(())
            }
            "Reservation" => {
                let (kind, reservation_id, room_id, guest, verb, stay) = match decode::<Reservation>(event)? {
                    ReservationEvent::ReservationConfirmed { reservation_id, room_id, guest_id, stay, .. } => {
                        ("reservation_confirmed", reservation_id, room_id, guest_id, "is confirmed", Some(stay))
                    }
                    ReservationEvent::ReservationRejected { reservation_id, room_id, guest_id, .. } => {
                        ("reservation_rejected", reservation_id, room_id, guest_id, "was not accepted", None)
                    }
                    ReservationEvent::ReservationCancelled { reservation_id, room_id, guest_id, .. } => {
                        ("reservation_cancelled", reservation_id, room_id, guest_id, "is cancelled", None)
                    }
                    _ => return Ok(()),
                };
                let (_, name) = self.room(tx, v, &room_id.to_string()).await?;
                let dates = stay.map(|s| format!(" ({} to {})", s.check_in(), s.check_out())).unwrap_or_default();
                let guest_text = format!("Your reservation at {name}{dates} {verb}.");
                let host_text = format!("The reservation of {guest} at {name}{dates} {verb}.");
                self.both(
                    tx,
                    v,
                    event,
                    kind,
                    reservation_id.to_string(),
                    room_id.to_string(),
                    guest.to_string(),
                    guest_text,
                    host_text,
                )
                .await
            }
            "Review" => {
                let ReviewEvent::ReviewPosted { room_id, reservation_id, guest_id, rating, .. } =
                    decode::<Review>(event)?
                else {
                    return Ok(());
                };
                let room = room_id.to_string();
                let (host, name) = self.room(tx, v, &room).await?;
                let text = format!("{guest_id} reviewed {name}: {} of 5 stars.", rating.get());
                let message = Message {
                    recipient: host,
                    kind: "review_posted",
                    reservation_id: Some(reservation_id.to_string()),
                    room_id: room,
                    text,
                };
                self.send(tx, v, event, message).await
            }
            _ => Ok(()),
        }
    }
}
