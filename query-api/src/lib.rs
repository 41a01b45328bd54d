//! Stay's read side over HTTP: the query routes of API.md, answered from the read models only.
//!
//! - [`rooms`] — roomview and reviews, public.
//! - [`reservations`] — a reservation, a guest's history, anyone's notifications.
//! - [`admin`] — projection status and rebuilds, the global feed, an aggregate's history.
//! - [`live`] — `GET /v1/live`, the feed as server-sent events.
//! - [`wait`] — `min_position`: answer only once the read model has reached a position.

pub mod admin;
pub mod live;
pub mod reservations;
pub mod rooms;
pub mod wait;

use std::sync::Arc;

use axum::middleware;
use stay_command_api::auth::require_token;
use stay_command_api::JwtKeys;
use stay_projections::ReadModel;
use stay_store::{EventStore, SqlDatabase};
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What the query routes share.
#[derive(Clone, Debug)]
pub struct QueryState {
    /// The event store (feed, streams, live updates).
    pub store: EventStore,
    /// The database holding the read models.
    pub db: SqlDatabase,
    /// The read models (for status and rebuilds).
    pub models: Vec<Arc<dyn ReadModel>>,
    /// Checks tokens (for `/v1/live`, which browsers open without headers).
    pub keys: JwtKeys,
}

impl QueryState {
    /// The read model called `name`.
    pub fn model(&self, name: &str) -> Option<&Arc<dyn ReadModel>> {
        self.models.iter().find(|m| m.name() == name)
    }
}

/// The query routes with their OpenAPI description.
pub fn router(state: QueryState) -> (axum::Router, OpenApi) {
    let keys = state.keys.clone();
    let (public, mut openapi) = OpenApiRouter::new()
        .routes(routes!(rooms::list_rooms))
        .routes(routes!(rooms::get_room))
        .routes(routes!(rooms::room_reviews))
        .routes(routes!(live::live))
        .with_state(state.clone())
        .split_for_parts();
    let (private, private_doc) = OpenApiRouter::new()
        .routes(routes!(reservations::get_reservation))
        .routes(routes!(reservations::my_reservations))
        .routes(routes!(reservations::my_notifications))
        .routes(routes!(admin::projections))
        .routes(routes!(admin::rebuild))
        .routes(routes!(admin::feed))
        .routes(routes!(admin::stream))
        .with_state(state)
        .route_layer(middleware::from_fn_with_state(keys, require_token))
        .split_for_parts();
    openapi.merge(private_doc);
    (public.merge(private), openapi)
}
