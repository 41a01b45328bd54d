//! Guests request and cancel reservations.
//!
//! A request is recorded here and carried further (hold, charge, confirm) by the saga; before
//! recording it, the route asks the room whether it would take the hold now, so a request that
//! cannot succeed (unknown or delisted room, too many guests, nights taken, a stay in the past)
//! is refused at once instead of failing later.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use stay_domain::{
    parse_date, CardToken, GuestCount, ReservationCommand, ReservationId, ReservationStatus, RoomCommand, RoomError,
    RoomId, StayDates,
};
use utoipa::ToSchema;

use super::reservation_view::{prefer_wait, wait_for, ReservationView};
use super::{committed_earlier, context, run};
use crate::idempotency::CommandKey;
use crate::refusal::refused;
use crate::CommandApi;
use stay_http::auth::{Caller, Guests, GuestsOrAdmins, Role};
use stay_http::body::{Check, JsonBody};
use stay_http::IdPath;
use stay_http::{ApiError, Problem};

/// How the guest pays.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequest {
    /// The payment provider's token for the card: 1 to 200 characters.
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub card_token: String,
}

/// A stay asked for.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestReservationRequest {
    /// The room.
    #[schema(format = Uuid)]
    pub room_id: String,
    /// The first night, `YYYY-MM-DD`.
    #[schema(format = Date, pattern = r"^\d{4}-\d{2}-\d{2}$")]
    pub check_in: String,
    /// The day of departure, `YYYY-MM-DD`; after `check_in`, at most 30 nights later, and within
    /// the booking horizon (by default 730 days from today).
    #[schema(format = Date, pattern = r"^\d{4}-\d{2}-\d{2}$")]
    pub check_out: String,
    /// How many guests, 1 to 16.
    #[schema(minimum = 1, maximum = 16)]
    pub guests: i64,
    /// The card to charge.
    pub payment: PaymentRequest,
}

/// The answer to a reservation command.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReservationAnswer {
    /// The reservation.
    pub reservation_id: String,
    /// `pending` after a request, `cancelling` after a cancellation.
    pub status: String,
    /// The feed position of the command's last event.
    pub position: String,
}

/// Ask for a stay; the saga holds the nights, charges the card and confirms or rejects.
#[utoipa::path(
    post, path = "/v1/reservations", tag = "reservations", request_body = RequestReservationRequest,
    params(("Prefer" = Option<String>, Header, description = "`wait=N`: answer once the reservation is confirmed, rejected or cancelled, waiting at most N seconds (at most 30)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "With `Prefer: wait`: the reservation in its final state", body = ReservationView),
        (status = 202, description = "Recorded; the saga carries it on", body = ReservationAnswer, headers(("Location" = String))),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a guest", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`room_not_found`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`dates_unavailable`, `room_delisted`, `too_many_guests`, `stay_in_past`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, or `beyond_booking_horizon`: the stay ends later than bookings may", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`payments_unavailable`: the provider is failing", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn request_reservation(
    State(api): State<CommandApi>,
    caller: Caller<Guests>,
    Extension(key): Extension<CommandKey>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<RequestReservationRequest>,
) -> Result<Response, ApiError> {
    let principal = caller.principal;
    let mut check = Check::default();
    let room_id = check.field("room_id", body.room_id.parse::<RoomId>());
    let check_in = check.field("check_in", parse_date("check_in", &body.check_in));
    let check_out = check.field("check_out", parse_date("check_out", &body.check_out));
    let guests = check.field("guests", GuestCount::new(body.guests));
    let card_token = check.field("payment.card_token", CardToken::new(body.payment.card_token));
    let stay = match (check_in, check_out) {
        (Some(check_in), Some(check_out)) => check.field("check_out", StayDates::new(check_in, check_out)),
        _ => None,
    };
    let (Some(room_id), Some(stay), Some(guests), Some(card_token)) = (room_id, stay, guests, card_token) else {
        return Err(check.refusal());
    };

    let reservation_id = ReservationId::from(key.derive_id("reservation"));
    let id = reservation_id.to_string();
    let context = context(&principal, &key).correlated_to(id.clone());
    let location = [(header::LOCATION, format!("/v1/reservations/{id}"))];
    // A retry whose first attempt recorded the reservation answers with it, whatever the checks
    // below would say now.
    let recorded = committed_earlier(&api.executors().reservations, &id, &context, &key).await?;
    if recorded.is_none() {
        api.booking_horizon().admits(&stay, api.services().clock.today())?;
        refuse_while_payments_fail(&api)?;
        let (mut room, _) = api.executors().rooms.load(&room_id.to_string()).await?;
        if room.listing().is_none() {
            return Err(refused(RoomError::RoomNotFound));
        }
        // A dry run of the hold the saga will ask for: nothing is recorded.
        let hold = RoomCommand::HoldNights { reservation_id, guest_id: principal.user.clone(), stay, guests };
        room.handle(hold, api.services(), &EventSink::default()).await.map_err(refused)?;
    }

    let command = ReservationCommand::RequestReservation {
        reservation_id,
        room_id,
        guest_id: principal.user.clone(),
        stay,
        guests,
        card_token,
    };
    let position = match recorded {
        Some(position) => position,
        None => run(&api.executors().reservations, &id, command, &context, &key).await?,
    };
    if let Some(wait) = prefer_wait(&headers) {
        let finals = [ReservationStatus::Confirmed, ReservationStatus::Rejected, ReservationStatus::Cancelled];
        if let Some(view) = wait_for(&api, reservation_id, &finals, wait).await? {
            return Ok((StatusCode::OK, location, [("preference-applied", "wait")], Json(view)).into_response());
        }
    }
    let answer =
        ReservationAnswer { reservation_id: id.clone(), status: "pending".into(), position: position.to_string() };
    Ok((StatusCode::ACCEPTED, location, Json(answer)).into_response())
}

/// Cancel a pending or confirmed reservation (its guest, or an admin); the saga refunds and releases.
#[utoipa::path(
    post, path = "/v1/reservations/{reservation_id}/cancel", tag = "reservations",
    params(
        ("reservation_id" = String, Path, description = "The reservation"),
        ("Prefer" = Option<String>, Header, description = "`wait=N`: answer once the reservation is cancelled, waiting at most N seconds (at most 30)"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "With `Prefer: wait`: the cancelled reservation", body = ReservationView),
        (status = 202, description = "Cancellation requested", body = ReservationAnswer),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not its guest nor an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`reservation_not_found`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`reservation_status_conflict`, `stay_already_begun`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel_reservation(
    State(api): State<CommandApi>,
    caller: Caller<GuestsOrAdmins>,
    Extension(key): Extension<CommandKey>,
    headers: HeaderMap,
    IdPath(reservation_id): IdPath<ReservationId>,
) -> Result<Response, ApiError> {
    let principal = caller.principal;
    let command = ReservationCommand::RequestCancellation {
        actor: principal.user.clone(),
        actor_is_admin: principal.role == Role::Admin,
    };
    let id = reservation_id.to_string();
    let context = context(&principal, &key).correlated_to(id.clone());
    let position = run(&api.executors().reservations, &id, command, &context, &key).await?;
    if let Some(wait) = prefer_wait(&headers) {
        if let Some(view) = wait_for(&api, reservation_id, &[ReservationStatus::Cancelled], wait).await? {
            return Ok((StatusCode::OK, [("preference-applied", "wait")], Json(view)).into_response());
        }
    }
    let answer = ReservationAnswer { reservation_id: id, status: "cancelling".into(), position: position.to_string() };
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

/// 503 while the payment provider is failing: a new reservation could not be paid for now.
fn refuse_while_payments_fail(api: &CommandApi) -> Result<(), ApiError> {
    let Some(retry_in) = api.payments_unavailable_for() else { return Ok(()) };
    let seconds = u32::try_from(retry_in.as_secs().max(1)).unwrap_or(u32::MAX);
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "payments_unavailable",
        "the payment provider is failing; new reservations are refused until it recovers",
    )
    .retry_after(seconds))
}
