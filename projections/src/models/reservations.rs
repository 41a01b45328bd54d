//! `reservations`: every reservation with its payment, for a guest's history,
//! `GET /v1/reservations/{id}` and the host's view of their rooms' reservations.

use async_trait::async_trait;
use stay_domain::{Payment, PaymentEvent, Reservation, ReservationEvent, Room, RoomEvent};
use stay_store::{Arg, RecordedEvent, SqlTransaction};

use super::registrations::{apply_in_runs, Directory};
use crate::model::{decode, ApplyError, ReadModel};

/// The reservations read model.
#[derive(Debug, Default)]
pub struct Reservations;

/// The reservations table of version `v`.
pub fn table(v: i64) -> String {
    format!("reservations_v{v}")
}

fn rooms_table(v: i64) -> String {
    format!("reservations_v{v}_rooms")
}

fn stamp(event: &RecordedEvent) -> [Arg; 2] {
    [event.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true).into(), event.position.to_string().into()]
}

impl Reservations {
    /// `UPDATE … SET <set>, updated_at, position WHERE reservation_id`; `$4…` are `args`.
    async fn update(
        &self,
        tx: &mut SqlTransaction,
        v: i64,
        reservation_id: String,
        event: &RecordedEvent,
        set: &str,
        args: Vec<Arg>,
    ) -> Result<(), ApplyError> {
        let mut all = vec![reservation_id.into()];
        all.extend(stamp(event));
        all.extend(args);
        let sql = format!("UPDATE {} SET {set}, updated_at = $2, position = $3 WHERE reservation_id = $1", table(v));
        tx.run(&sql, &all).await?;
        Ok(())
    }
}

#[async_trait]
impl ReadModel for Reservations {
    fn name(&self) -> &'static str {
        "reservations"
    }

    fn create(&self, v: i64) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                reservation_id TEXT PRIMARY KEY, room_id TEXT NOT NULL, guest_id TEXT NOT NULL, host_id TEXT NOT NULL,
                check_in TEXT NOT NULL, check_out TEXT NOT NULL, guests BIGINT NOT NULL, status TEXT NOT NULL,
                reason TEXT, total_minor BIGINT, currency TEXT, payment_status TEXT NOT NULL,
                charged_minor BIGINT, refunded_minor BIGINT, payment_currency TEXT,
                created_position_major BIGINT NOT NULL, created_position_minor BIGINT NOT NULL,
                updated_at TEXT NOT NULL, position TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS {t}_guest ON {t} (guest_id, created_position_major, created_position_minor);
             CREATE INDEX IF NOT EXISTS {t}_host ON {t} (host_id);
             CREATE TABLE IF NOT EXISTS {r} (room_id TEXT PRIMARY KEY, host_id TEXT NOT NULL);",
            t = table(v),
            r = rooms_table(v)
        )
    }

    fn tables(&self, v: i64) -> Vec<String> {
        vec![table(v), rooms_table(v)]
    }

    fn wants(&self, event: &RecordedEvent) -> bool {
        match event.aggregate_type.as_str() {
            "Room" => event.event_type == "RoomRegistered",
            "Reservation" | "Payment" => true,
            _ => false,
        }
    }

    /// Runs of room registrations are written together (`registrations.rs`); the rest event by event.
    async fn apply_batch(&self, tx: &mut SqlTransaction, v: i64, events: &[&RecordedEvent]) -> Result<(), ApplyError> {
        let table = rooms_table(v);
        let directory = Directory { table: &table, columns: &["room_id", "host_id"] };
        apply_in_runs(self, tx, v, events, directory, |event| match event {
            RoomEvent::RoomRegistered { room_id, host_id, .. } => {
                Some(vec![room_id.to_string().into(), host_id.as_str().into()])
            }
            _ => None,
        })
        .await
    }

    async fn apply(&self, tx: &mut SqlTransaction, v: i64, event: &RecordedEvent) -> Result<(), ApplyError> {
        match event.aggregate_type.as_str() {
            "Room" => {
                if let RoomEvent::RoomRegistered { room_id, host_id, .. } = decode::<Room>(event)? {
                    tx.run(
                        &format!(
                            "INSERT INTO {} (room_id, host_id) VALUES ($1, $2) ON CONFLICT (room_id) DO NOTHING",
                            rooms_table(v)
                        ),
                        &[room_id.to_string().into(), host_id.as_str().into()],
                    )
                    .await?;
                }
                Ok(())
            }
            "Reservation" => match decode::<Reservation>(event)? {
                ReservationEvent::ReservationRequested { reservation_id, room_id, guest_id, stay, guests, .. } => {
                    let host = tx
                        .rows(
                            &format!("SELECT host_id FROM {} WHERE room_id = $1", rooms_table(v)),
                            &[room_id.to_string().into()],
                        )
                        .await?
                        .first()
                        .map(|row| row.text("host_id"))
                        .transpose()?
                        .ok_or_else(|| ApplyError::Poison(format!("room {room_id} was never registered")))?;
                    let [at, position] = stamp(event);
                    tx.run(
                        &format!(
                            "INSERT INTO {} (reservation_id, room_id, guest_id, host_id, check_in, check_out, guests, status, \
                               payment_status, created_position_major, created_position_minor, updated_at, position) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 'none', $8, $9, $10, $11) \
                             ON CONFLICT (reservation_id) DO NOTHING",
                            table(v)
                        ),
                        &[
                            reservation_id.to_string().into(),
                            room_id.to_string().into(),
                            guest_id.as_str().into(),
                            host.into(),
                            stay.check_in().to_string().into(),
                            stay.check_out().to_string().into(),
                            i64::from(guests.get()).into(),
                            i64::try_from(event.position.major()).unwrap_or(i64::MAX).into(),
                            i64::try_from(event.position.minor()).unwrap_or(i64::MAX).into(),
                            at,
                            position,
                        ],
                    )
                    .await?;
                    Ok(())
                }
                ReservationEvent::ReservationConfirmed { reservation_id, total_price, .. } => {
                    let args = vec![total_price.amount_minor().into(), total_price.currency().as_str().into()];
                    self.update(
                        tx,
                        v,
                        reservation_id.to_string(),
                        event,
                        "status = 'confirmed', total_minor = $4, currency = $5",
                        args,
                    )
                    .await
                }
                ReservationEvent::ReservationRejected { reservation_id, reason, .. } => {
                    let reason = serde_json::to_string(&reason).unwrap_or_default();
                    self.update(
                        tx,
                        v,
                        reservation_id.to_string(),
                        event,
                        "status = 'rejected', reason = $4",
                        vec![reason.into()],
                    )
                    .await
                }
                ReservationEvent::CancellationRequested { reservation_id, .. } => {
                    self.update(tx, v, reservation_id.to_string(), event, "status = 'cancelling'", vec![]).await
                }
                ReservationEvent::ReservationCancelled { reservation_id, .. } => {
                    self.update(tx, v, reservation_id.to_string(), event, "status = 'cancelled'", vec![]).await
                }
            },
            "Payment" => {
                let (reservation_id, set, args): (_, &str, Vec<Arg>) = match decode::<Payment>(event)? {
                    PaymentEvent::ChargeRequested { reservation_id, amount, .. } => (
                        reservation_id,
                        "payment_status = 'pending', payment_currency = $4",
                        vec![amount.money().currency().as_str().into()],
                    ),
                    PaymentEvent::ChargeApproved { reservation_id, amount, .. } => (
                        reservation_id,
                        "payment_status = 'approved', charged_minor = $4",
                        vec![amount.money().amount_minor().into()],
                    ),
                    PaymentEvent::ChargeDeclined { reservation_id, .. } => {
                        (reservation_id, "payment_status = 'declined'", vec![])
                    }
                    PaymentEvent::ChargeFailed { reservation_id, .. }
                    | PaymentEvent::ChargeVoided { reservation_id, .. } => {
                        (reservation_id, "payment_status = 'failed'", vec![])
                    }
                    PaymentEvent::PaymentRefunded { reservation_id, refunded_total, .. } => (
                        reservation_id,
                        "payment_status = 'refunded', refunded_minor = $4",
                        vec![refunded_total.amount_minor().into()],
                    ),
                };
                self.update(tx, v, reservation_id.to_string(), event, set, args).await
            }
            _ => Ok(()),
        }
    }
}
