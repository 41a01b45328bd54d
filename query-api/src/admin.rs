//! Operators' reads: projection status and rebuilds, the global feed, and an aggregate's history
//! with its state as of a time. All need the `admin` role.

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
use stay_projections::runner::{request_rebuild, statuses, ProjectionStatus};
use stay_store::{Position, RecordedEvent};
use utoipa::{IntoParams, ToSchema};

use crate::QueryState;

/// Every read model's position, lag, status and parked events.
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
) -> Result<Json<Vec<ProjectionStatus>>, ApiError> {
    Ok(Json(statuses(&state.store, &state.db, &state.models).await?))
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
    let items = state.store.read_feed(after, limit).await?;
    let next = items.last().map(|e| e.position.to_string());
    Ok(Json(FeedPage { items, next }))
}

/// `?as_of` of a stream.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AsOf {
    /// The state as it was at this time (RFC 3339); default now.
    #[param(format = DateTime)]
    as_of: Option<String>,
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
        (status = 422, description = "A bad time", body = Problem, content_type = "application/problem+json"),
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
    let known = ["Room", "Reservation", "Payment", "Review", "ReservationSaga"];
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
    let state = match aggregate_type.as_str() {
        "Room" => Some(fold::<Room>(&events)?),
        "Reservation" => Some(fold::<Reservation>(&events)?),
        "Payment" => Some(fold::<Payment>(&events)?),
        "Review" => Some(fold::<Review>(&events)?),
        // The saga's state lives in its crate; its timeline is at /v1/admin/sagas/{id}.
        _ => None,
    };
    Ok(Json(StreamView { events, state }))
}
