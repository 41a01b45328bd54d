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
use stay_projections::queries::notifications;
use stay_projections::queries::reservations::{self, Party, ReservationRow};
use stay_store::{Position, StoreError};
use utoipa::{IntoParams, ToSchema};

use crate::wait::Freshness;
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

impl TryFrom<ReservationRow> for ReservationView {
    type Error = StoreError;

    fn try_from(row: ReservationRow) -> Result<Self, StoreError> {
        // An amount without a currency is a row the model should never have written.
        let money = |minor: Option<i64>, currency: Option<&str>, what: &str| match (minor, currency) {
            (Some(amount_minor), Some(currency)) => Ok(Some(MoneyBody { amount_minor, currency: currency.to_owned() })),
            (Some(_), None) => {
                Err(StoreError::Decode(format!("reservation {}: {what} has no currency", row.reservation_id)))
            }
            (None, _) => Ok(None),
        };
        let payment_currency = row.money_currency();
        let payment = PaymentPart {
            charged: money(row.charged_minor, payment_currency, "the charge")?,
            refunded: money(row.refunded_minor, payment_currency, "the refund")?.filter(|m| m.amount_minor > 0),
            status: row.payment_status.clone(),
        };
        let total_price = money(row.total_minor, row.currency.as_deref(), "the price")?;
        Ok(ReservationView {
            reservation_id: row.reservation_id,
            room_id: row.room_id,
            guest_id: row.guest_id,
            check_in: row.check_in,
            check_out: row.check_out,
            guests: row.guests,
            status: row.status,
            reason: row.reason,
            total_price,
            payment,
            updated_at: row.updated_at,
            position: row.position,
        })
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
    let version = state.read_at("reservations", &freshness).await?.version;
    let row = reservations::reservation(&state.db, version, &reservation_id.to_string()).await?.ok_or_else(|| {
        ApiError::not_found("reservation_not_found", format!("no reservation has the id {reservation_id}"))
    })?;
    let me = principal.user.as_str();
    let allowed = match principal.role {
        Role::Admin => true,
        Role::Guest => row.guest_id == me,
        Role::Host => row.host_id == me,
    };
    if !allowed {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "not_owner",
            "only the reservation's guest, its room's host or an admin may read it",
        ));
    }
    Ok(Json(ReservationView::try_from(row)?))
}

/// `?limit` of a list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Limit {
    /// At most this many (default 100; below 1 counts as 1, above 1000 as 1000).
    limit: Option<i64>,
}

/// `?limit&cursor` of a list of reservations (a guest's, or those of a host's rooms).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReservationWindow {
    /// At most this many (default 100; below 1 counts as 1, above 1000 as 1000).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^([0-9]+(-[0-9]+)?)?$")]
    cursor: Option<String>,
}

/// A page of reservations.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReservationList {
    items: Vec<ReservationView>,
    /// The `cursor` of the next page; `null` on the last.
    next_cursor: Option<String>,
}

/// The caller's reservations, newest first, one page at a time (guests).
#[utoipa::path(
    get, path = "/v1/me/reservations", tag = "reservations", security(("bearer" = [])),
    params(ReservationWindow, Freshness),
    responses(
        (status = 200, description = "A page of the reservations", body = ReservationList),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a guest", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad parameters: a `cursor` not from this list", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "`projection_behind`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn my_reservations(
    State(state): State<QueryState>,
    caller: Caller<Guests>,
    QueryParams(window): QueryParams<ReservationWindow>,
    QueryParams(freshness): QueryParams<Freshness>,
) -> Result<Json<ReservationList>, ApiError> {
    reservation_page(&state, Party::Guest, caller.principal.user.as_str(), &window, &freshness).await
}

/// One page of `user`'s reservations (as guest or as host), newest first.
pub(crate) async fn reservation_page(
    state: &QueryState,
    party: Party,
    user: &str,
    window: &ReservationWindow,
    freshness: &Freshness,
) -> Result<Json<ReservationList>, ApiError> {
    let before = match window.cursor.as_deref() {
        None | Some("") => None,
        Some(text) => Some(text.parse::<Position>().map_err(|_| ApiError::invalid_cursor())?),
    };
    let version = state.read_at("reservations", freshness).await?.version;
    let limit = window.limit.unwrap_or(100).clamp(1, 1000);
    let page = reservations::of_party(&state.db, version, party, user, before, limit).await?;
    let items = page.rows.into_iter().map(ReservationView::try_from).collect::<Result<_, _>>()?;
    Ok(Json(ReservationList { items, next_cursor: page.next.map(|position| position.to_string()) }))
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
    let version = state.read_at("notifications", &freshness).await?.version;
    let limit = limit.limit.unwrap_or(100).clamp(1, 1000);
    let rows = notifications::of_recipient(&state.db, version, principal.user.as_str(), limit).await?;
    let items = rows
        .into_iter()
        .map(|row| NotificationView {
            notification_id: row.notification_id,
            kind: row.kind,
            reservation_id: row.reservation_id,
            room_id: row.room_id,
            message: row.message,
            created_at: row.created_at,
        })
        .collect();
    Ok(Json(NotificationList { items }))
}
