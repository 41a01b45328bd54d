//! Stay's write side over HTTP: the command routes of API.md behind bearer auth, idempotency keys
//! and problem+json errors.
//!
//! - [`routes`] — one handler per command route; each runs one command on one aggregate.
//! - [`refusal`] — the aggregates' business refusals as HTTP statuses and codes.
//! - [`idempotency`] — `Idempotency-Key` claims and replays, kept in the SQL database.
//!
//! What every HTTP role shares (auth, problem documents, body parsing, the service endpoints and
//! layers) is in `stay-http`.

pub mod idempotency;
pub mod refusal;
pub mod routes;

use std::sync::Arc;

use axum::middleware;
use axum::Extension;
use stay_domain::{BookingHorizon, Clock, DomainServices};
use stay_store::{AggregateWatch, Executors};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use idempotency::{IdempotencyStore, IDEMPOTENCY_MIGRATIONS};
use stay_http::{auth, BodyLimit, JwtKeys};

/// What the command routes share: the executors and the domain's services.
#[derive(Clone, Debug)]
pub struct CommandApi {
    inner: Arc<Inner>,
}

#[derive(Clone, Debug)]
struct Inner {
    executors: Arc<Executors>,
    services: DomainServices,
    payments: Option<Arc<dyn PaymentsGate>>,
    /// Wakes `Prefer: wait` requests when their own reservation changes.
    watch: AggregateWatch,
    /// How far ahead stays may be booked.
    horizon: BookingHorizon,
}

/// Whether new reservations can be paid for now; the saga's circuit breaker answers it.
pub trait PaymentsGate: Send + Sync + std::fmt::Debug {
    /// `Some(wait)` while the payment provider is failing: refuse new reservations for about `wait`.
    fn unavailable_for(&self) -> Option<std::time::Duration>;
}

impl CommandApi {
    /// The command side over `executors`, with time from `clock`.
    pub fn new(executors: Arc<Executors>, clock: Arc<dyn Clock>) -> Self {
        let watch = AggregateWatch::new(executors.reservations.store().clone());
        let services = DomainServices::new(clock);
        let inner = Inner { executors, services, payments: None, watch, horizon: BookingHorizon::DEFAULT };
        Self { inner: Arc::new(inner) }
    }

    /// The same API, refusing new reservations while `gate` says payments are unavailable.
    pub fn with_payments_gate(self, gate: Arc<dyn PaymentsGate>) -> Self {
        let inner = Inner { payments: Some(gate), ..Inner::clone(&self.inner) };
        Self { inner: Arc::new(inner) }
    }

    /// The same API, refusing stays that end beyond `horizon` (by default two years).
    pub fn with_booking_horizon(self, horizon: BookingHorizon) -> Self {
        Self { inner: Arc::new(Inner { horizon, ..Inner::clone(&self.inner) }) }
    }

    /// How far ahead stays may be booked.
    pub fn booking_horizon(&self) -> BookingHorizon {
        self.inner.horizon
    }

    /// How long new reservations should be refused, if they should.
    pub fn payments_unavailable_for(&self) -> Option<std::time::Duration> {
        self.inner.payments.as_ref().and_then(|gate| gate.unavailable_for())
    }

    /// Wake-ups for requests waiting on one aggregate.
    pub fn watch(&self) -> &AggregateWatch {
        &self.inner.watch
    }

    /// The executors commands go through.
    pub fn executors(&self) -> &Executors {
        &self.inner.executors
    }

    /// The domain's services (for dry runs of commands).
    pub fn services(&self) -> &DomainServices {
        &self.inner.services
    }
}

/// How the command routes guard themselves.
#[derive(Clone, Debug)]
pub struct CommandConfig {
    /// Checks bearer tokens.
    pub keys: JwtKeys,
    /// Keeps idempotency keys.
    pub idempotency: IdempotencyStore,
    /// The largest request body, in bytes.
    pub max_body_bytes: usize,
}

/// The command routes with their OpenAPI description.
pub fn router(api: CommandApi, config: CommandConfig) -> (axum::Router, OpenApi) {
    let idempotency =
        idempotency::IdempotencyState { store: config.idempotency, max_body_bytes: config.max_body_bytes };
    let (router, mut openapi) = OpenApiRouter::new()
        .routes(routes!(routes::rooms::register_room))
        .routes(routes!(routes::rooms::change_room, routes::rooms::delist_room))
        .routes(routes!(routes::reservations::request_reservation))
        .routes(routes!(routes::reservations::cancel_reservation))
        .routes(routes!(routes::reviews::post_review))
        .routes(routes!(routes::reviews::reply_to_review))
        .with_state(api)
        // Layers run bottom-up: limit the body, check the token, then claim the idempotency key.
        .route_layer(middleware::from_fn_with_state(idempotency, idempotency::idempotent))
        .route_layer(middleware::from_fn_with_state(config.keys, auth::require_token))
        .route_layer(Extension(BodyLimit(config.max_body_bytes)))
        .split_for_parts();
    for item in openapi.paths.paths.values_mut() {
        stay_http::openapi::operations_mut(item).for_each(idempotency::document);
    }
    let components = openapi.components.get_or_insert_with(Default::default);
    components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    (router, openapi)
}
