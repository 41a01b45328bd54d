//! `GET /v1/reservations/{id}`, `GET /v1/me/reservations`, `GET /v1/me/notifications`.
//!
//! A guest sees their own reservations, a host the reservations of their rooms, an admin all.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use stay_domain::ReservationId;
use stay_http::auth::{Caller, Guests, Principal};
use stay_http::QueryParams;
use stay_http::{ApiError, Problem, Role};
use stay_http::{IdPath, MoneyBody};
use stay_projections::models::{notifications, reservations};
use stay_store::Cells;
use utoipa::{IntoParams, ToSchema};

use crate::wait::{until_fresh, Freshness};
use crate::QueryState;

/// The payment part of a reservation.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentPart {
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    charged: Option<MoneyBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refunded: Option<MoneyBody>,
}

/// A reservation (API.md `Reservation`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ReservationView {
    reservation_id: String,
    room_id: String,
    guest_id: String,
    check_in: String,
    check_out: String,
    guests: i64,
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    reason: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_price: Option<MoneyBody>,
    payment: PaymentPart,
    updated_at: String,
    position: String,
}

const COLUMNS: &str = "reservation_id, room_id, guest_id, check_in, check_out, guests, status, reason, total_minor, \
    currency, payment_status, charged_minor, refunded_minor, payment_currency, updated_at, position, host_id";

fn view(row: &Cells) -> ReservationView {
    let payment_currency = row[13].opt_text().or(row[9].opt_text()).unwrap_or("").to_owned();
    let money =
        |minor: Option<i64>| minor.map(|amount_minor| MoneyBody { amount_minor, currency: payment_currency.clone() });
    ReservationView {
        reservation_id: row[0].text().to_owned(),
        room_id: row[1].text().to_owned(),
        guest_id: row[2].text().to_owned(),
        check_in: row[3].text().to_owned(),
        check_out: row[4].text().to_owned(),
        guests: row[5].int(),
        status: row[6].text().to_owned(),
        reason: row[7].opt_text().and_then(|r| serde_json::from_str(r).ok()),
        total_price: row[8]
            .opt_int()
            .map(|amount_minor| MoneyBody { amount_minor, currency: row[9].text().to_owned() }),
        payment: PaymentPart {
            status: row[10].text().to_owned(),
            charged: money(row[11].opt_int()),
            refunded: money(row[12].opt_int()).filter(|m| m.amount_minor > 0),
        },
        updated_at: row[14].text().to_owned(),
        position: row[15].text().to_owned(),
    }
}

/// One reservation: its guest, its room's host, or an admin.
#[utoipa::path(
    get, path = "/v1/reservations/{reservation_id}", tag = "reservations", security(("bearer" = [])),
    params(("reservation_id" = String, Path, description = "The reservation"), Freshness),
    responses(
        (status = 200, description = "The reservation", body = ReservationView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Neither its guest, its room's host, nor an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`reservation_not_found`", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "`projection_behind`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_reservation(
    State(state): State<QueryState>,
    principal: Principal,
    IdPath(reservation_id): IdPath<ReservationId>,
    QueryParams(freshness): QueryParams<Freshness>,
) -> Result<Json<ReservationView>, ApiError> {
    let checked = until_fresh(&state.db, "reservations", &freshness).await?;
    let table = reservations::table(state.live_version("reservations", checked).await?);
    let rows = state
        .db
        .rows(&format!("SELECT {COLUMNS} FROM {table} WHERE reservation_id = $1"), &[reservation_id.to_string().into()])
        .await?;
    let row = rows.first().ok_or_else(|| {
        ApiError::not_found("reservation_not_found", format!("no reservation has the id {reservation_id}"))
    })?;
    let me = principal.user.as_str();
    let allowed = match principal.role {
        Role::Admin => true,
        Role::Guest => row[2].text() == me,
        Role::Host => row[16].text() == me,
    };
    if !allowed {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "not_owner",
            "only the reservation's guest, its room's host or an admin may read it",
        ));
    }
    Ok(Json(view(row)))
}

/// `?limit` of a list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Limit {
    /// At most this many (default 100, at most 1000).
    limit: Option<i64>,
}

/// A guest's reservations.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReservationList {
    items: Vec<ReservationView>,
}

/// The caller's reservations, newest first (guests).
#[utoipa::path(
    get, path = "/v1/me/reservations", tag = "reservations", security(("bearer" = [])), params(Limit, Freshness),
    responses(
        (status = 200, description = "The reservations", body = ReservationList),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a guest", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "`projection_behind`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn my_reservations(
    State(state): State<QueryState>,
    caller: Caller<Guests>,
    QueryParams(limit): QueryParams<Limit>,
    QueryParams(freshness): QueryParams<Freshness>,
) -> Result<Json<ReservationList>, ApiError> {
    let checked = until_fresh(&state.db, "reservations", &freshness).await?;
    let table = reservations::table(state.live_version("reservations", checked).await?);
    let limit = limit.limit.unwrap_or(100).clamp(1, 1000);
    let rows = state
        .db
        .rows(
            &format!(
                "SELECT {COLUMNS} FROM {table} WHERE guest_id = $1 \
                 ORDER BY created_position_major DESC, created_position_minor DESC LIMIT $2"
            ),
            &[caller.principal.user.as_str().into(), limit.into()],
        )
        .await?;
    Ok(Json(ReservationList { items: rows.iter().map(view).collect() }))
}

/// A message to a user.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationView {
    notification_id: String,
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reservation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    room_id: Option<String>,
    message: String,
    created_at: String,
}

/// The caller's messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationList {
    items: Vec<NotificationView>,
}

/// The caller's notifications, newest first.
#[utoipa::path(
    get, path = "/v1/me/notifications", tag = "reservations", security(("bearer" = [])), params(Limit, Freshness),
    responses(
        (status = 200, description = "The notifications", body = NotificationList),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "`projection_behind`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn my_notifications(
    State(state): State<QueryState>,
    principal: Principal,
    QueryParams(limit): QueryParams<Limit>,
    QueryParams(freshness): QueryParams<Freshness>,
) -> Result<Json<NotificationList>, ApiError> {
    let checked = until_fresh(&state.db, "notifications", &freshness).await?;
    let table = notifications::table(state.live_version("notifications", checked).await?);
    let limit = limit.limit.unwrap_or(100).clamp(1, 1000);
    let rows = state
        .db
        .rows(
            &format!(
                "SELECT notification_id, kind, reservation_id, room_id, message, created_at FROM {table} \
                 WHERE recipient = $1 ORDER BY position_major DESC, position_minor DESC, kind, notification_id LIMIT $2"
            ),
            &[principal.user.as_str().into(), limit.into()],
        )
        .await?;
    let items = rows
        .iter()
        .map(|row| NotificationView {
            notification_id: row[0].text().to_owned(),
            kind: row[1].text().to_owned(),
            reservation_id: row[2].opt_text().map(str::to_owned),
            room_id: row[3].opt_text().map(str::to_owned),
            message: row[4].text().to_owned(),
            created_at: row[5].text().to_owned(),
        })
        .collect();
    Ok(Json(NotificationList { items }))
}
