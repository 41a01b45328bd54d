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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::middleware;
use stay_http::auth::require_token;
use stay_http::JwtKeys;
use stay_projections::runner::versions;
use stay_projections::ReadModel;
use stay_store::{EventStore, SqlDatabase, StoreError};
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// How long a model's live version number is reused before it is read again. A query without
/// `min_position` may so read the previous version for this long after a rebuild switches (that
/// version still exists; it has stopped moving); a query with `min_position` always reads it anew.
const VERSION_TTL: Duration = Duration::from_millis(250);

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
    /// Live version numbers recently read, by model.
    pub versions: Arc<Mutex<HashMap<&'static str, (i64, Instant)>>>,
}

impl QueryState {
    /// The state for these stores, models and keys.
    pub fn new(store: EventStore, db: SqlDatabase, models: Vec<Arc<dyn ReadModel>>, keys: JwtKeys) -> Self {
        Self { store, db, models, keys, versions: Arc::default() }
    }

    /// The live version of `model`: the one `min_position` was checked against, or a recent reading.
    pub async fn live_version(&self, model: &'static str, checked: Option<i64>) -> Result<i64, StoreError> {
        if let Some(version) = checked {
            return Ok(version);
        }
        let cached = self.versions.lock().ok().and_then(|cache| cache.get(model).copied());
        if let Some((version, _)) = cached.filter(|(_, at)| at.elapsed() < VERSION_TTL) {
            return Ok(version);
        }
        let version = versions(&self.db, model).await?.live;
        if let Ok(mut cache) = self.versions.lock() {
            cache.insert(model, (version, Instant::now()));
        }
        Ok(version)
    }

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
