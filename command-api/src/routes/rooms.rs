//! Hosts list, change and delist rooms.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use stay_domain::{Address, Capacity, Description, RoomCommand, RoomId, RoomName};
use utoipa::ToSchema;

use super::{context, run};
use crate::idempotency::CommandKey;
use crate::CommandApi;
use stay_http::auth::{Caller, Hosts};
use stay_http::body::{Check, JsonBody};
use stay_http::IdPath;
use stay_http::PriceBody;
use stay_http::{ApiError, Problem};

// Texts are counted in characters after trimming surrounding whitespace, and may not hold NUL.
// The bounds below are the domain's (`RoomName`, `Description`, `Address`, `Capacity`); the
// tests of `routes` hold them equal.

/// A new room.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRoomRequest {
    /// 1 to 100 characters.
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    pub name: String,
    /// Up to 5,000 characters; empty when left out.
    #[serde(default)]
    #[schema(max_length = 5000)]
    pub description: Option<String>,
    /// Where the room is: 1 to 500 characters.
    #[schema(min_length = 1, max_length = 500, pattern = r"\S")]
    pub address: String,
    /// The price of one night; above zero.
    pub nightly_price: PriceBody,
    /// Guests it sleeps, 1 to 16.
    #[schema(minimum = 1, maximum = 16)]
    pub capacity: i64,
}

/// New values for some of a room's details (at least one).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRoomRequest {
    /// A new name: 1 to 100 characters.
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    pub name: Option<String>,
    /// A new description: up to 5,000 characters.
    #[schema(max_length = 5000)]
    pub description: Option<String>,
    /// A new address: 1 to 500 characters.
    #[schema(min_length = 1, max_length = 500, pattern = r"\S")]
    pub address: Option<String>,
    /// A new nightly price, in the room's currency; above zero.
    pub nightly_price: Option<PriceBody>,
    /// A new capacity, 1 to 16.
    #[schema(minimum = 1, maximum = 16)]
    pub capacity: Option<i64>,
}

/// The answer to a room command.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomAnswer {
    /// The room.
    pub room_id: String,
    /// The feed position of the command's last event.
    pub position: String,
}

/// Register a room; the caller becomes its host.
#[utoipa::path(
    post, path = "/v1/rooms", tag = "rooms", request_body = RegisterRoomRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Registered", body = RoomAnswer, headers(("Location" = String))),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a host", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn register_room(
    State(api): State<CommandApi>,
    caller: Caller<Hosts>,
    Extension(key): Extension<CommandKey>,
    JsonBody(body): JsonBody<RegisterRoomRequest>,
) -> Result<Response, ApiError> {
    let principal = caller.principal;
    let mut check = Check::default();
    let name = check.field("name", RoomName::new(body.name));
    let description = check.field("description", Description::new(body.description.unwrap_or_default()));
    let address = check.field("address", Address::new(body.address));
    let nightly_price = check.field("nightly_price", body.nightly_price.parse());
    let capacity = check.field("capacity", Capacity::new(body.capacity));
    let (Some(name), Some(description), Some(address), Some(nightly_price), Some(capacity)) =
        (name, description, address, nightly_price, capacity)
    else {
        return Err(check.refusal());
    };
    let room_id = RoomId::from(key.derive_id("room"));
    let command = RoomCommand::RegisterRoom {
        room_id,
        host_id: principal.user.clone(),
        name,
        description,
        address,
        nightly_price,
        capacity,
    };
    let position = run(&api.executors().rooms, &room_id.to_string(), command, &context(&principal, &key), &key).await?;
    let answer = RoomAnswer { room_id: room_id.to_string(), position: position.to_string() };
    Ok((StatusCode::CREATED, [(header::LOCATION, format!("/v1/rooms/{room_id}"))], Json(answer)).into_response())
}

/// Change any of a room's details (its host only).
#[utoipa::path(
    patch, path = "/v1/rooms/{room_id}", tag = "rooms", request_body = ChangeRoomRequest,
    params(("room_id" = String, Path, description = "The room")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Changed", body = RoomAnswer),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a host, or not this room's host", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such room", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The room is delisted", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn change_room(
    State(api): State<CommandApi>,
    caller: Caller<Hosts>,
    Extension(key): Extension<CommandKey>,
    IdPath(room_id): IdPath<RoomId>,
    JsonBody(body): JsonBody<ChangeRoomRequest>,
) -> Result<Json<RoomAnswer>, ApiError> {
    let principal = caller.principal;
    let mut check = Check::default();
    let nothing = body.name.is_none()
        && body.description.is_none()
        && body.address.is_none()
        && body.nightly_price.is_none()
        && body.capacity.is_none();
    if nothing {
        check.fail("body", "give at least one of name, description, address, nightly_price, capacity");
        return Err(check.refusal());
    }
    let name = body.name.map(|v| check.field("name", RoomName::new(v)));
    let description = body.description.map(|v| check.field("description", Description::new(v)));
    let address = body.address.map(|v| check.field("address", Address::new(v)));
    let nightly_price = body.nightly_price.map(|v| check.field("nightly_price", v.parse()));
    let capacity = body.capacity.map(|v| check.field("capacity", Capacity::new(v)));
    // Each given field must have parsed; `Some(None)` is one that did not.
    let (Some(name), Some(description), Some(address), Some(nightly_price), Some(capacity)) = (
        name.map_or(Some(None), |v| v.map(Some)),
        description.map_or(Some(None), |v| v.map(Some)),
        address.map_or(Some(None), |v| v.map(Some)),
        nightly_price.map_or(Some(None), |v| v.map(Some)),
        capacity.map_or(Some(None), |v| v.map(Some)),
    ) else {
        return Err(check.refusal());
    };
    let command = RoomCommand::ChangeRoomDetails {
        actor: principal.user.clone(),
        name,
        description,
        address,
        capacity,
        nightly_price,
    };
    let position = run(&api.executors().rooms, &room_id.to_string(), command, &context(&principal, &key), &key).await?;
    Ok(Json(RoomAnswer { room_id: room_id.to_string(), position: position.to_string() }))
}

/// Take a room off the market (its host only); refused while stays are upcoming.
#[utoipa::path(
    delete, path = "/v1/rooms/{room_id}", tag = "rooms",
    params(("room_id" = String, Path, description = "The room")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Delisted", body = RoomAnswer),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a host, or not this room's host", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such room", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`room_has_upcoming_stays`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delist_room(
    State(api): State<CommandApi>,
    caller: Caller<Hosts>,
    Extension(key): Extension<CommandKey>,
    IdPath(room_id): IdPath<RoomId>,
) -> Result<Json<RoomAnswer>, ApiError> {
    let principal = caller.principal;
    let command = RoomCommand::DelistRoom { actor: principal.user.clone() };
    let position = run(&api.executors().rooms, &room_id.to_string(), command, &context(&principal, &key), &key).await?;
    Ok(Json(RoomAnswer { room_id: room_id.to_string(), position: position.to_string() }))
}
