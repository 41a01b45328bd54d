//! `GET /v1/me/rooms/reservations`: the reservations of the signed-in host's rooms, newest first.

use axum::extract::State;
use axum::Json;
use stay_http::auth::{Caller, Hosts};
use stay_http::{ApiError, Problem, QueryParams};
use stay_projections::queries::reservations;
use stay_store::Position;

use crate::reservations::{ReservationList, ReservationView, ReservationWindow};
use crate::wait::Freshness;
use crate::QueryState;

/// The reservations of the caller's rooms, newest first, one page at a time (hosts).
#[utoipa::path(
    get, path = "/v1/me/rooms/reservations", tag = "reservations", security(("bearer" = [])),
    params(ReservationWindow, Freshness),
    responses(
        (status = 200, description = "A page of the reservations of the host's rooms", body = ReservationList),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a host", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad parameters: a `cursor` not from this list", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "`projection_behind`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn host_reservations(
    State(state): State<QueryState>,
    caller: Caller<Hosts>,
    QueryParams(window): QueryParams<ReservationWindow>,
    QueryParams(freshness): QueryParams<Freshness>,
) -> Result<Json<ReservationList>, ApiError> {
    let before = match window.cursor.as_deref() {
        None | Some("") => None,
        Some(text) => Some(text.parse::<Position>().map_err(|_| ApiError::invalid_cursor())?),
    };
    let version = state.read_at("reservations", &freshness).await?.version;
    let limit = window.limit.unwrap_or(100).clamp(1, 1000);
    let page = reservations::of_host(&state.db, version, caller.principal.user.as_str(), before, limit).await?;
    let items = page.rows.into_iter().map(ReservationView::try_from).collect::<Result<_, _>>()?;
    Ok(Json(ReservationList { items, next_cursor: page.next.map(|position| position.to_string()) }))
}
