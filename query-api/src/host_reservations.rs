//! `GET /v1/me/rooms/reservations`: the reservations of the signed-in host's rooms, newest first.

use axum::extract::State;
use axum::Json;
use stay_http::auth::{Caller, Hosts};
use stay_http::{ApiError, Problem, QueryParams};

use stay_projections::queries::reservations::Party;

use crate::reservations::{reservation_page, ReservationList, ReservationWindow};
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
    reservation_page(&state, Party::Host, caller.principal.user.as_str(), &window, &freshness).await
}
