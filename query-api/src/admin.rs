//! Operators' reads: projection status and rebuilds, the global feed, and an aggregate's history
//! with its state as of a time. All need the `admin` role.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use stay_domain::{Payment, Reservation, Review, Room};
use stay_http::auth::{Admins, Caller};
use stay_http::QueryParams;
use stay_http::{ApiError, Problem};
use stay_projections::models::sagas::SAGA_TYPE;
use stay_projections::runner::{
    dead_letters, request_dead_letter, request_rebuild, settled, skipped_count, statuses, versions, Action, DeadLetter,
    ProjectionStatus, RequestError, Settled,
};
use stay_projections::ReadModel;
use stay_store::{Position, RecordedEvent};
use utoipa::{IntoParams, ToSchema};

use crate::QueryState;

/// A read model's status with the count of events an operator skipped in it.
#[derive(Debug, Serialize)]
pub struct ProjectionView {
    #[serde(flatten)]
    status: ProjectionStatus,
    /// Events an operator skipped (no version applies them).
    skipped: i64,
}

/// Every read model's position, lag, status, dead letters (parked, retrying and held events) and
/// skipped count.
#[utoipa::path(
    get, path = "/v1/admin/projections", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "The read models", body = [Object]),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn projections(
    State(state): State<QueryState>,
    _caller: Caller<Admins>,
) -> Result<Json<Vec<ProjectionView>>, ApiError> {
    let mut all = Vec::new();
    for status in statuses(&state.store, &state.db, &state.models).await? {
        let skipped = skipped_count(&state.db, &status.name).await?;
        all.push(ProjectionView { status, skipped });
    }
    Ok(Json(all))
}

/// A model's dead letters.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetters {
    /// The model.
    name: String,
    /// Its live version, whose dead letters these are.
    version: i64,
    /// Its dead letters in feed order: each refused one (`retrying` or `parked`) with its error,
    /// attempts, next try and the held events of its aggregate behind it (`followers`), and the
    /// held ones themselves.
    #[schema(value_type = Vec<Object>)]
    items: Vec<DeadLetter>,
    /// Events an operator skipped in this model.
    skipped: i64,
}

/// The model called `name`, or 404.
fn model_named<'a>(state: &'a QueryState, name: &str) -> Result<&'a Arc<dyn ReadModel>, ApiError> {
    state
        .model(name)
        .ok_or_else(|| ApiError::not_found("projection_not_found", format!("no read model is called {name:?}")))
}

/// A read model's dead letters: parked and retrying events with their error, attempts and the
/// followers waiting behind them.
#[utoipa::path(
    get, path = "/v1/admin/projections/{name}/dead-letters", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "The read model")),
    responses(
        (status = 200, description = "Its dead letters", body = DeadLetters),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`projection_not_found`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_dead_letters(
    State(state): State<QueryState>,
    _caller: Caller<Admins>,
    Path(name): Path<String>,
) -> Result<Json<DeadLetters>, ApiError> {
    let model = model_named(&state, &name)?.name();
    let version = versions(&state.db, model).await?.live;
    let items = dead_letters(&state.db, model, version).await?;
    let skipped = skipped_count(&state.db, model).await?;
    Ok(Json(DeadLetters { name, version, items, skipped }))
}

/// How long a retry or skip waits for the model's worker to carry it out before answering 202.
const SETTLE_WAIT: Duration = Duration::from_secs(5);

/// What became of a retry or skip.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterOutcome {
    /// The dead letter's position.
    position: String,
    /// `retry` or `skip`.
    action: String,
    /// `applied`, `skipped`, `parked` (refused again: it stays, with the new `error`) or
    /// `requested` (no worker of this model has carried it out yet; it will, when one runs).
    outcome: String,
    /// The model's error when it refused the event again.
    error: Option<String>,
    /// Its attempts so far, while it is still a dead letter.
    attempts: Option<i64>,
    /// The followers applied after it, in order.
    released: Vec<String>,
}

impl From<Settled> for DeadLetterOutcome {
    fn from(s: Settled) -> Self {
        Self {
            position: s.position,
            action: s.action.as_str().to_owned(),
            outcome: s.outcome,
            error: s.error,
            attempts: s.attempts,
            released: s.released,
        }
    }
}

/// Records `action` on the dead letter at `position` of the model `name`, and waits for the
/// model's worker (in this process or another) to carry it out.
async fn settle_dead_letter(
    state: &QueryState,
    caller: &Caller<Admins>,
    name: &str,
    position: &str,
    action: Action,
) -> Result<(StatusCode, Json<DeadLetterOutcome>), ApiError> {
    let model = model_named(state, name)?.name();
    let at: Position = position.parse().map_err(|_| ApiError::invalid_field("position", "not a feed position"))?;
    let requested = request_dead_letter(&state.db, model, at, action).await.map_err(|err| match err {
        RequestError::UnknownPosition => ApiError::not_found(
            "dead_letter_not_found",
            format!("the {model} read model keeps no dead letter at {position}"),
        ),
        RequestError::Held(head) => ApiError::new(
            StatusCode::CONFLICT,
            "dead_letter_not_parked",
            match head {
                Some(head) => format!("the event at {position} is held behind {head}; retry or skip that one"),
                None => format!("the event at {position} is held behind an earlier dead letter of its aggregate"),
            },
        ),
        RequestError::Store(err) => err.into(),
    })?;
    tracing::info!(projection = model, %position, action = action.as_str(), by = %caller.principal.user, "dead letter: operator's request recorded");
    let done = settled(&state.db, &requested, SETTLE_WAIT).await?;
    let status = if done.outcome == "requested" { StatusCode::ACCEPTED } else { StatusCode::OK };
    Ok((status, Json(done.into())))
}

/// Apply a dead letter again; on success its followers are applied in order. The model's worker
/// carries it out; refused again, it stays parked and the answer says so (`outcome: parked`).
#[utoipa::path(
    post, path = "/v1/admin/projections/{name}/dead-letters/{position}/retry", tag = "admin", security(("bearer" = [])),
    params(
        ("name" = String, Path, description = "The read model"),
        ("position" = String, Path, description = "The dead letter's feed position"),
    ),
    responses(
        (status = 200, description = "Carried out: `applied`, or `parked` with the new error", body = DeadLetterOutcome),
        (status = 202, description = "Recorded; no worker has carried it out yet", body = DeadLetterOutcome),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`projection_not_found` or `dead_letter_not_found`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`dead_letter_not_parked`: held behind an earlier dead letter", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad position", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn retry_dead_letter(
    State(state): State<QueryState>,
    caller: Caller<Admins>,
    Path((name, position)): Path<(String, String)>,
) -> Result<(StatusCode, Json<DeadLetterOutcome>), ApiError> {
    settle_dead_letter(&state, &caller, &name, &position, Action::Retry).await
}

/// Skip a dead letter: it is recorded and never applied (a rebuilt version passes over it too);
/// its followers are applied in order.
#[utoipa::path(
    post, path = "/v1/admin/projections/{name}/dead-letters/{position}/skip", tag = "admin", security(("bearer" = [])),
    params(
        ("name" = String, Path, description = "The read model"),
        ("position" = String, Path, description = "The dead letter's feed position"),
    ),
    responses(
        (status = 200, description = "Skipped", body = DeadLetterOutcome),
        (status = 202, description = "Recorded; no worker has carried it out yet", body = DeadLetterOutcome),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`projection_not_found` or `dead_letter_not_found`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`dead_letter_not_parked`: held behind an earlier dead letter", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad position", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn skip_dead_letter(
    State(state): State<QueryState>,
    caller: Caller<Admins>,
    Path((name, position)): Path<(String, String)>,
) -> Result<(StatusCode, Json<DeadLetterOutcome>), ApiError> {
    settle_dead_letter(&state, &caller, &name, &position, Action::Skip).await
}

/// The answer to a rebuild request.
#[derive(Debug, Serialize, ToSchema)]
pub struct RebuildStarted {
    name: String,
    version: i64,
}

/// Rebuild a read model beside the live one; it goes live once it has caught up.
#[utoipa::path(
    post, path = "/v1/admin/projections/{name}/rebuild", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "The read model")),
    responses(
        (status = 202, description = "Rebuilding; progress in the list", body = RebuildStarted),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`projection_not_found`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn rebuild(
    State(state): State<QueryState>,
    _caller: Caller<Admins>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<RebuildStarted>), ApiError> {
    let model = state
        .model(&name)
        .ok_or_else(|| ApiError::not_found("projection_not_found", format!("no read model is called {name:?}")))?;
    let version = request_rebuild(&state.db, model.as_ref()).await?;
    Ok((StatusCode::ACCEPTED, Json(RebuildStarted { name, version })))
}

/// `?after&limit` of the feed.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedWindow {
    /// Events after this position (default: from the start).
    #[param(pattern = "^([0-9]+(-[0-9]+)?)?$")]
    after: Option<String>,
    /// At most this many (default 100; 0 counts as 1, above 1000 as 1000).
    limit: Option<usize>,
}

/// A page of the feed.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeedPage {
    #[schema(value_type = Vec<Object>)]
    items: Vec<RecordedEvent>,
    next: Option<String>,
    /// The feed's last position when the page was read (`0` for an empty feed): how far behind
    /// the head a page is.
    head: String,
}

/// The global event feed, in order.
#[utoipa::path(
    get, path = "/v1/admin/feed", tag = "admin", security(("bearer" = [])), params(FeedWindow),
    responses(
        (status = 200, description = "A page of the feed", body = FeedPage),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad position", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn feed(
    State(state): State<QueryState>,
    _caller: Caller<Admins>,
    QueryParams(window): QueryParams<FeedWindow>,
) -> Result<Json<FeedPage>, ApiError> {
    let after = match window.after.as_deref() {
        None | Some("") => Position::START,
        Some(text) => text.parse().map_err(|_| ApiError::invalid_field("after", "not a feed position"))?,
    };
    let limit = window.limit.unwrap_or(100).clamp(1, 1000);
    let head = state.store.head().await?;
    let items = state.store.read_feed(after, limit).await?;
    let next = items.last().map(|e| e.position.to_string());
    Ok(Json(FeedPage { items, next, head: head.to_string() }))
}

/// `?as_of&until_sequence` of a stream.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AsOf {
    /// The state as it was at this time (RFC 3339); default now.
    #[param(format = DateTime)]
    as_of: Option<String>,
    /// The state folded from the stream's first N events only (events recorded in one commit
    /// share a time, so `as_of` cannot tell them apart); with `as_of`, both apply.
    #[param(minimum = 1)]
    until_sequence: Option<u64>,
}

/// An aggregate's events and state.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamView {
    /// The stream's events, oldest first.
    #[schema(value_type = Vec<Object>)]
    events: Vec<RecordedEvent>,
    /// The state they fold into; null for a `ReservationSaga`, whose state is its timeline at
    /// `/v1/admin/sagas/{saga_id}`.
    #[schema(value_type = Option<Object>)]
    state: Option<Value>,
}

fn fold<A: Aggregate>(events: &[RecordedEvent]) -> Result<Value, ApiError> {
    let mut aggregate = A::default();
    for event in events {
        let decoded =
            event.decode::<A>().map_err(|err| ApiError::internal("an event in the log does not decode", &err))?;
        aggregate.apply(decoded);
    }
    serde_json::to_value(&aggregate).map_err(|err| ApiError::internal("cannot show an aggregate", &err))
}

/// An aggregate's history, and its state then.
#[utoipa::path(
    get, path = "/v1/admin/streams/{aggregate_type}/{aggregate_id}", tag = "admin", security(("bearer" = [])),
    params(
        ("aggregate_type" = String, Path, description = "Room, Reservation, Payment, Review or ReservationSaga"),
        ("aggregate_id" = String, Path, description = "Its id"),
        AsOf
    ),
    responses(
        (status = 200, description = "Events and state", body = StreamView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`stream_not_found`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad time or `until_sequence`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn stream(
    State(state): State<QueryState>,
    _caller: Caller<Admins>,
    Path((aggregate_type, aggregate_id)): Path<(String, String)>,
    QueryParams(as_of): QueryParams<AsOf>,
) -> Result<Json<StreamView>, ApiError> {
    let until: Option<DateTime<Utc>> = match as_of.as_of.as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            DateTime::parse_from_rfc3339(text)
                .map_err(|_| ApiError::invalid_field("as_of", "must be an RFC 3339 time"))?
                .with_timezone(&Utc),
        ),
    };
    if as_of.until_sequence == Some(0) {
        return Err(ApiError::invalid_field("until_sequence", "must be at least 1 (the first event)"));
    }
    let known = [Room::TYPE, Reservation::TYPE, Payment::TYPE, Review::TYPE, SAGA_TYPE];
    if !known.contains(&aggregate_type.as_str()) {
        return Err(ApiError::not_found("stream_not_found", format!("no aggregate type is called {aggregate_type:?}")));
    }
    let mut events = state.store.read_stream(&aggregate_type, &aggregate_id).await?;
    if events.is_empty() {
        return Err(ApiError::not_found("stream_not_found", format!("{aggregate_type} {aggregate_id} has no events")));
    }
    if let Some(until) = until {
        events.retain(|e| e.recorded_at <= until);
    }
    if let Some(count) = as_of.until_sequence {
        events.retain(|e| e.sequence <= count);
    }
    let state = match aggregate_type.as_str() {
        t if t == Room::TYPE => Some(fold::<Room>(&events)?),
        t if t == Reservation::TYPE => Some(fold::<Reservation>(&events)?),
        t if t == Payment::TYPE => Some(fold::<Payment>(&events)?),
        t if t == Review::TYPE => Some(fold::<Review>(&events)?),
        // The saga's state lives in its crate; its timeline is at /v1/admin/sagas/{id}.
        _ => None,
    };
    Ok(Json(StreamView { events, state }))
}
