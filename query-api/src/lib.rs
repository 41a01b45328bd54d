//! Stay's read side over HTTP: the query routes of API.md, answered from the read models only.
//!
//! - [`rooms`] — roomview and reviews, public.
//! - [`reservations`] — a reservation, a guest's history, anyone's notifications.
//! - [`admin`] — projection status and rebuilds, the global feed, an aggregate's history.
//! - [`correlations`] — everything one correlation (a reservation) caused, as a causation tree.
//! - [`sagas`] — `GET /v1/admin/sagas`, the saga overview.
//! - [`live`] — `GET /v1/live`, the feed as server-sent events.
//! - [`wait`] — `min_position`: answer only once the read model has reached a position.
//! - [`progress`] — one task per read model watches its version and checkpoint for every query.
//! - [`room_cache`] — roomview's answers kept while the model stands still.
//! - [`dashboard`] — `GET /` and `GET /assets/{file}`, the dashboard's files.

pub mod admin;
pub mod correlations;
pub mod dashboard;
pub mod live;
pub mod progress;
pub mod reservations;
pub mod room_cache;
pub mod rooms;
pub mod sagas;
pub mod wait;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::middleware;
use stay_http::auth::require_token;
use stay_http::{ApiError, JwtKeys};
use stay_projections::runner::Committed;
use stay_projections::ReadModel;
use stay_store::{EventStore, SqlDatabase};
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::dashboard::DashboardFiles;
use crate::progress::{Progress, ProgressWatch, WatchTiming};
use crate::room_cache::RoomCache;
use crate::wait::{until_fresh, Freshness};

/// What the query routes share.
#[derive(Clone, Debug)]
pub struct QueryState {
    /// The event store (feed, streams, live updates).
    pub store: EventStore,
    /// The database holding the read models.
    pub db: SqlDatabase,
    /// The read models (for status and rebuilds).
    pub models: Arc<[Arc<dyn ReadModel>]>,
    /// Checks tokens (for `/v1/live`, which browsers open without headers). Behind an `Arc`:
    /// every request clones the state, and the keys are several allocations.
    pub keys: Arc<JwtKeys>,
    /// One progress watcher per read model, made by the first query of the model.
    watchers: Arc<Watchers>,
    /// roomview's answers at the current progress.
    room_cache: Arc<RoomCache>,
    /// Where the dashboard's files come from.
    dashboard: Arc<DashboardFiles>,
}

/// The progress watchers of this process, by model.
#[derive(Debug)]
struct Watchers {
    timing: WatchTiming,
    /// This process's projector's commits, if it runs one.
    committed: Mutex<Option<Committed>>,
    by_model: Mutex<HashMap<&'static str, ProgressWatch>>,
}

impl QueryState {
    /// The state for these stores, models and keys.
    pub fn new(store: EventStore, db: SqlDatabase, models: Vec<Arc<dyn ReadModel>>, keys: JwtKeys) -> Self {
        Self::with_timing(store, db, models, keys, WatchTiming::default())
    }

    /// The same, with the progress watchers paced by `timing` (tests shorten it).
    pub fn with_timing(
        store: EventStore,
        db: SqlDatabase,
        models: Vec<Arc<dyn ReadModel>>,
        keys: JwtKeys,
        timing: WatchTiming,
    ) -> Self {
        let watchers = Arc::new(Watchers { timing, committed: Mutex::default(), by_model: Mutex::default() });
        Self {
            store,
            db,
            models: models.into(),
            keys: Arc::new(keys),
            watchers,
            room_cache: Arc::default(),
            dashboard: Arc::default(),
        }
    }

    /// The same, with the dashboard's files read from `dir` at each request instead of the copies
    /// built into the binary (a development aid: edit them without rebuilding).
    #[must_use]
    pub fn serving_dashboard_from(mut self, dir: std::path::PathBuf) -> Self {
        self.dashboard = Arc::new(DashboardFiles::Folder(dir));
        self
    }

    /// The same, with the progress watchers woken by the commits of this process's projector
    /// rather than polling while a model is behind. Set before the first query.
    #[must_use]
    pub fn woken_by(self, committed: Committed) -> Self {
        *self.watchers.committed.lock().unwrap_or_else(PoisonError::into_inner) = Some(committed);
        self
    }

    /// The progress watcher of `model` (its task starts with the first query that asks it).
    pub fn progress(&self, model: &'static str) -> ProgressWatch {
        let signal = self
            .watchers
            .committed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(|c| c.subscribe(model));
        let mut by_model = self.watchers.by_model.lock().unwrap_or_else(PoisonError::into_inner);
        by_model
            .entry(model)
            .or_insert_with(|| {
                ProgressWatch::woken_by(model, self.store.clone(), self.db.clone(), self.watchers.timing, signal)
            })
            .clone()
    }

    /// roomview's kept answers.
    pub fn room_cache(&self) -> &RoomCache {
        &self.room_cache
    }

    /// The progress a query of `model` reads at (its version is the one to read): with
    /// `min_position`, the progress that reached it (after waiting for it); otherwise the
    /// watcher's current progress; when the watcher has none to give (it has just started, or the
    /// database fails), the progress read now. Each was read from the database before the query
    /// reads its rows, so each may stamp the answers kept in the room cache.
    pub async fn read_at(&self, model: &'static str, freshness: &Freshness) -> Result<Progress, ApiError> {
        let watch = self.progress(model);
        if let Some(reached) = until_fresh(&watch, freshness).await? {
            return Ok(reached);
        }
        match watch.current() {
            Some(current) => Ok(current),
            None => Ok(watch.read_now().await?),
        }
    }

    /// The read model called `name`.
    pub fn model(&self, name: &str) -> Option<&Arc<dyn ReadModel>> {
        self.models.iter().find(|m| m.name() == name)
    }
}

/// The query routes with their OpenAPI description.
pub fn router(state: QueryState) -> (axum::Router, OpenApi) {
    let keys = JwtKeys::clone(&state.keys);
    let (public, mut openapi) = OpenApiRouter::new()
        .routes(routes!(rooms::list_rooms))
        .routes(routes!(rooms::get_room))
        .routes(routes!(rooms::room_reviews))
        .routes(routes!(live::live))
        .routes(routes!(dashboard::index))
        .routes(routes!(dashboard::asset))
        .with_state(state.clone())
        .split_for_parts();
    let (private, private_doc) = OpenApiRouter::new()
        .routes(routes!(reservations::get_reservation))
        .routes(routes!(reservations::my_reservations))
        .routes(routes!(reservations::my_notifications))
        .routes(routes!(admin::projections))
        .routes(routes!(admin::rebuild))
        .routes(routes!(admin::list_dead_letters))
        .routes(routes!(admin::retry_dead_letter))
        .routes(routes!(admin::skip_dead_letter))
        .routes(routes!(admin::feed))
        .routes(routes!(admin::stream))
        .routes(routes!(correlations::correlation))
        .routes(routes!(sagas::list_sagas))
        .with_state(state)
        .route_layer(middleware::from_fn_with_state(keys, require_token))
        .split_for_parts();
    openapi.merge(private_doc);
    (public.merge(private), openapi)
}
