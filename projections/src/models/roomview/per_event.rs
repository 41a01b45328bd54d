//! roomview one event at a time: each event with its own statements (a SELECT and an UPDATE for
//! most). The runner's careful pass applies events this way, each in a savepoint; the batch fold
//! (`fold`) must leave exactly the rows this leaves.

use stay_domain::{Payment, PaymentEvent, Reservation, ReservationEvent, Review, ReviewEvent, Room, RoomEvent};
use stay_store::{Arg, RecordedEvent, SqlTransaction};

use super::{reservations_table, table, Booked};
use crate::model::{decode, ApplyError};

/// Applies one event to version `v`.
pub(super) async fn apply(tx: &mut SqlTransaction, v: i64, event: &RecordedEvent) -> Result<(), ApplyError> {
    match event.aggregate_type.as_str() {
        "Room" => room_event(tx, v, event).await,
        "Reservation" => reservation_event(tx, v, event).await,
        "Payment" => payment_event(tx, v, event).await,
        "Review" => review_event(tx, v, event).await,
        _ => Ok(()),
    }
}

/// The event's `updated_at` and `position`, as the arguments `$2` and `$3` of `touch`.
fn touch_args(event: &RecordedEvent) -> [Arg; 2] {
    let (at, position) = super::stamp(event);
    [at.into(), position.into()]
}

/// `UPDATE` the room's stamp and `set` (whose `$N` is the first of `args`); a room that does not
/// exist is left alone.
async fn touch(
    tx: &mut SqlTransaction,
    v: i64,
    room_id: &str,
    event: &RecordedEvent,
    set: &str,
    args: Vec<Arg>,
) -> Result<(), ApplyError> {
    let mut all = vec![room_id.into()];
    all.extend(touch_args(event));
    let first_free = all.len() + 1;
    all.extend(args);
    let set = set.replace("$N", &format!("${first_free}"));
    let comma = if set.is_empty() { "" } else { ", " };
    let sql = format!("UPDATE {} SET updated_at = $2, position = $3{comma}{set} WHERE room_id = $1", table(v));
    tx.run(&sql, &all).await?;
    Ok(())
}

/// A reservation's room and status, if it was requested.
async fn reservation(
    tx: &mut SqlTransaction,
    v: i64,
    reservation_id: &str,
) -> Result<Option<(String, String)>, ApplyError> {
    let rows = tx
        .rows(
            &format!("SELECT room_id, status FROM {} WHERE reservation_id = $1", reservations_table(v)),
            &[reservation_id.into()],
        )
        .await?;
    let Some(row) = rows.first() else { return Ok(None) };
    Ok(Some((row.text("room_id")?, row.text("status")?)))
}

/// Moves a reservation to `status`.
async fn set_status(tx: &mut SqlTransaction, v: i64, reservation_id: &str, status: &str) -> Result<(), ApplyError> {
    tx.run(
        &format!("UPDATE {} SET status = $2 WHERE reservation_id = $1", reservations_table(v)),
        &[reservation_id.into(), status.into()],
    )
    .await?;
    Ok(())
}

/// A room's booked stays; poison if the room was never registered or the list cannot be read.
async fn booked(tx: &mut SqlTransaction, v: i64, room_id: &str) -> Result<Vec<Booked>, ApplyError> {
    let rows = tx.rows(&format!("SELECT booked FROM {} WHERE room_id = $1", table(v)), &[room_id.into()]).await?;
    let row = rows.first().ok_or_else(|| ApplyError::Poison(format!("room {room_id} was never registered")))?;
    let text = row.text("booked")?;
    serde_json::from_str(&text)
        .map_err(|err| ApplyError::Poison(format!("room {room_id}'s booked stays cannot be read: {err}")))
}

async fn room_event(tx: &mut SqlTransaction, v: i64, event: &RecordedEvent) -> Result<(), ApplyError> {
    match decode::<Room>(event)? {
        RoomEvent::RoomRegistered { room_id, host_id, name, description, address, nightly_price, capacity } => {
            let [at, position] = touch_args(event);
            let price = nightly_price.money();
            tx.run(
                &format!(
                    "INSERT INTO {} (room_id, host_id, name, description, address, price_minor, currency, capacity, \
                       listed, pending, confirmed, cancelled, rejected, booked, charged_minor, refunded_minor, \
                       review_count, rating_sum, updated_at, position) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, 0, 0, 0, 0, '[]', 0, 0, 0, 0, $9, $10) \
                     ON CONFLICT (room_id) DO NOTHING",
                    table(v)
                ),
                &[
                    room_id.to_string().into(),
                    host_id.as_str().into(),
                    name.as_str().into(),
                    description.as_str().into(),
                    address.as_str().into(),
                    price.amount_minor().into(),
                    price.currency().as_str().into(),
                    i64::from(capacity.get()).into(),
                    at,
                    position,
                ],
            )
            .await?;
        }
        RoomEvent::RoomDetailsChanged { room_id, name, description, address, capacity } => {
            let set = "name = COALESCE($N, name), description = COALESCE($N1, description), \
                       address = COALESCE($N2, address), capacity = COALESCE($N3, capacity)";
            let base = 4;
            let set = set
                .replace("$N1", &format!("${}", base + 1))
                .replace("$N2", &format!("${}", base + 2))
                .replace("$N3", &format!("${}", base + 3));
            let args = vec![
                name.map(String::from).into(),
                description.map(String::from).into(),
                address.map(String::from).into(),
                capacity.map(|c| i64::from(c.get())).into(),
            ];
            touch(tx, v, &room_id.to_string(), event, &set, args).await?;
        }
        RoomEvent::NightlyPriceChanged { room_id, price } => {
            let money = price.money();
            let set = "price_minor = $N, currency = $N1".replace("$N1", "$5");
            let args = vec![money.amount_minor().into(), money.currency().as_str().into()];
            touch(tx, v, &room_id.to_string(), event, &set, args).await?;
        }
        RoomEvent::RoomDelisted { room_id } => {
            touch(tx, v, &room_id.to_string(), event, "listed = 0", vec![]).await?;
        }
        RoomEvent::BookingConfirmed { room_id, reservation_id, stay, .. } => {
            let room = room_id.to_string();
            let mut booked = booked(tx, v, &room).await?;
            let id = reservation_id.to_string();
            if !booked.iter().any(|b| b.reservation_id == id) {
                booked.push(Booked {
                    reservation_id: id,
                    check_in: stay.check_in().to_string(),
                    check_out: stay.check_out().to_string(),
                });
                booked.sort_by(|a, b| (&a.check_in, &a.reservation_id).cmp(&(&b.check_in, &b.reservation_id)));
            }
            let json = serde_json::to_string(&booked).unwrap_or_else(|_| "[]".into());
            touch(tx, v, &room, event, "booked = $N", vec![json.into()]).await?;
        }
        RoomEvent::BookingReleased { room_id, reservation_id, .. } => {
            let room = room_id.to_string();
            let id = reservation_id.to_string();
            let booked: Vec<Booked> =
                booked(tx, v, &room).await?.into_iter().filter(|b| b.reservation_id != id).collect();
            let json = serde_json::to_string(&booked).unwrap_or_else(|_| "[]".into());
            touch(tx, v, &room, event, "booked = $N", vec![json.into()]).await?;
        }
        RoomEvent::NightsHeld { room_id, .. } | RoomEvent::HoldReleased { room_id, .. } => {
            touch(tx, v, &room_id.to_string(), event, "", vec![]).await?;
        }
    }
    Ok(())
}

async fn reservation_event(tx: &mut SqlTransaction, v: i64, event: &RecordedEvent) -> Result<(), ApplyError> {
    let (reservation_id, room_id, moves): (String, String, Option<(&str, &str)>) = match decode::<Reservation>(event)? {
        ReservationEvent::ReservationRequested { reservation_id, room_id, .. } => {
            let id = reservation_id.to_string();
            let room = room_id.to_string();
            let inserted = tx
                .run(
                    &format!(
                        "INSERT INTO {} (reservation_id, room_id, status) VALUES ($1, $2, 'pending') \
                         ON CONFLICT (reservation_id) DO NOTHING",
                        reservations_table(v)
                    ),
                    &[id.as_str().into(), room.as_str().into()],
                )
                .await?;
            if inserted == 1 {
                touch(tx, v, &room, event, "pending = pending + 1", vec![]).await?;
            }
            return Ok(());
        }
        ReservationEvent::ReservationConfirmed { reservation_id, room_id, .. } => {
            (reservation_id.to_string(), room_id.to_string(), Some(("pending", "confirmed")))
        }
        ReservationEvent::ReservationRejected { reservation_id, room_id, .. } => {
            (reservation_id.to_string(), room_id.to_string(), Some(("pending", "rejected")))
        }
        ReservationEvent::ReservationCancelled { reservation_id, room_id, was_confirmed, .. } => {
            let from = if was_confirmed { "confirmed" } else { "pending" };
            (reservation_id.to_string(), room_id.to_string(), Some((from, "cancelled")))
        }
        ReservationEvent::CancellationRequested { reservation_id, room_id, .. } => {
            (reservation_id.to_string(), room_id.to_string(), None)
        }
    };
    let Some((_, to)) = moves else {
        return touch(tx, v, &room_id, event, "", vec![]).await;
    };
    // Move the reservation from the bucket it is in (as this model saw it) to the new one.
    let from = match reservation(tx, v, &reservation_id).await? {
        Some((_, status)) if status == to => return touch(tx, v, &room_id, event, "", vec![]).await,
        Some((_, status)) => status,
        None => return Err(ApplyError::Poison(format!("{} for a reservation never requested", event.event_type))),
    };
    set_status(tx, v, &reservation_id, to).await?;
    let set = format!("{from} = {from} - 1, {to} = {to} + 1");
    touch(tx, v, &room_id, event, &set, vec![]).await
}

async fn payment_event(tx: &mut SqlTransaction, v: i64, event: &RecordedEvent) -> Result<(), ApplyError> {
    let (reservation_id, set, amount) = match decode::<Payment>(event)? {
        PaymentEvent::ChargeApproved { reservation_id, amount, .. } => {
            (reservation_id, "charged_minor = charged_minor + $N", amount.money().amount_minor())
        }
        PaymentEvent::PaymentRefunded { reservation_id, amount, .. } => {
            (reservation_id, "refunded_minor = refunded_minor + $N", amount.money().amount_minor())
        }
        _ => return Ok(()),
    };
    let Some((room_id, _)) = reservation(tx, v, &reservation_id.to_string()).await? else {
        return Err(ApplyError::Poison(format!("{} for a reservation never requested", event.event_type)));
    };
    touch(tx, v, &room_id, event, set, vec![amount.into()]).await
}

async fn review_event(tx: &mut SqlTransaction, v: i64, event: &RecordedEvent) -> Result<(), ApplyError> {
    match decode::<Review>(event)? {
        ReviewEvent::ReviewPosted { room_id, rating, .. } => {
            let set = "review_count = review_count + 1, rating_sum = rating_sum + $N";
            touch(tx, v, &room_id.to_string(), event, set, vec![i64::from(rating.get()).into()]).await
        }
        ReviewEvent::ReplyPosted { room_id, .. } => touch(tx, v, &room_id.to_string(), event, "", vec![]).await,
    }
}
