//! The `Reservation` of API.md, read from the write side, for answers to `Prefer: wait`.
//!
//! A waiting request is answered when the reservation has reached a final state for its step,
//! which only the aggregates know the moment it happens; the read models catch up after.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use stay_domain::{Money, PaymentId, PaymentStatus, RejectionReason, ReservationId, ReservationStatus};
use stay_store::{EventStore, Position};
use utoipa::ToSchema;

use crate::CommandApi;
use stay_http::ApiError;
use stay_http::MoneyBody;

/// The longest `Prefer: wait` honoured, in seconds.
pub const MAX_WAIT_SECS: u64 = 30;

/// The payment part of a reservation.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentView {
    /// none, pending, approved, declined, failed, refunded.
    pub status: String,
    /// What was taken and kept, if anything was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub charged: Option<MoneyBody>,
    /// What went back, if anything did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refunded: Option<MoneyBody>,
}

/// A reservation as API.md describes it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReservationView {
    /// The reservation.
    pub reservation_id: String,
    /// Its room.
    pub room_id: String,
    /// Its guest.
    pub guest_id: String,
    /// First night.
    pub check_in: String,
    /// Day of departure.
    pub check_out: String,
    /// Guests.
    pub guests: u8,
    /// pending, confirmed, rejected, cancelling, cancelled.
    pub status: String,
    /// Why it was rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub reason: Option<RejectionReason>,
    /// What the stay costs, once confirmed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_price: Option<MoneyBody>,
    /// The payment.
    pub payment: PaymentView,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// The feed position of its last change.
    pub position: String,
}

fn money(value: Money) -> MoneyBody {
    MoneyBody { amount_minor: value.amount_minor(), currency: value.currency().as_str().to_owned() }
}

/// The value of `Prefer: wait=N`, capped at [`MAX_WAIT_SECS`].
pub fn prefer_wait(headers: &axum::http::HeaderMap) -> Option<Duration> {
    headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).find_map(|pref| {
        let (name, value) = pref.trim().split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("wait") {
            return None;
        }
        let seconds: u64 = value.trim().trim_matches('"').parse().ok()?;
        Some(Duration::from_secs(seconds.min(MAX_WAIT_SECS)))
    })
}

/// Reads the reservation and its payment as they stand now.
pub async fn view(api: &CommandApi, id: ReservationId) -> Result<Option<ReservationView>, ApiError> {
    let key = id.to_string();
    let (reservation, _) = api.executors().reservations.load(&key).await?;
    let Some(details) = reservation.details() else { return Ok(None) };
    let payment_key = PaymentId::for_reservation(id).to_string();
    let (payment, _) = api.executors().payments.load(&payment_key).await?;
    let store: &EventStore = api.executors().reservations.store();
    let last = |events: Vec<stay_store::RecordedEvent>| events.last().map(|e| (e.position, e.recorded_at));
    let reservation_last = last(store.read_stream("Reservation", &key).await?);
    let payment_last = last(store.read_stream("Payment", &payment_key).await?);
    let (position, updated_at) = reservation_last
        .into_iter()
        .chain(payment_last)
        .max_by_key(|(p, _)| *p)
        .unwrap_or((Position::START, DateTime::<Utc>::default()));
    let payment_view = match payment.details() {
        None => PaymentView { status: "none".into(), charged: None, refunded: None },
        Some(p) => {
            let status = match p.status {
                PaymentStatus::Pending => "pending",
                PaymentStatus::Approved => "approved",
                PaymentStatus::Declined => "declined",
                PaymentStatus::Failed | PaymentStatus::Voided => "failed",
                PaymentStatus::Refunded => "refunded",
            };
            let charged =
                matches!(p.status, PaymentStatus::Approved | PaymentStatus::Refunded).then(|| money(p.amount.money()));
            let refunded = (p.refunded.amount_minor() > 0).then(|| money(p.refunded));
            PaymentView { status: status.into(), charged, refunded }
        }
    };
    Ok(Some(ReservationView {
        reservation_id: key,
        room_id: details.room_id.to_string(),
        guest_id: details.guest_id.as_str().to_owned(),
        check_in: details.stay.check_in().to_string(),
        check_out: details.stay.check_out().to_string(),
        guests: details.guests.get(),
        status: details.status.as_str().to_owned(),
        reason: details.rejection.clone(),
        total_price: details.total_price.map(money),
        payment: payment_view,
        updated_at,
        position: position.to_string(),
    }))
}

/// Waits up to `wait` for the reservation to reach one of `finals`; the view when it did.
///
/// It is woken only by new events of this reservation (one feed follower serves every waiting
/// request), and looks at the reservation once per wake-up.
pub async fn wait_for(
    api: &CommandApi,
    id: ReservationId,
    finals: &[ReservationStatus],
    wait: Duration,
) -> Result<Option<ReservationView>, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    let key = id.to_string();
    // Subscribe before looking, so a change between the look and the wait still wakes us.
    let mut changes = api.watch().subscribe(<stay_domain::Reservation as cqrs_es::Aggregate>::TYPE, &key).await;
    loop {
        let (reservation, _) = api.executors().reservations.load(&key).await?;
        if reservation.status().is_some_and(|status| finals.contains(&status)) {
            return view(api, id).await;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() || !changes.changed(left).await {
            return Ok(None);
        }
    }
}
