//! The operators' routes for sagas: one saga's timeline, resuming a parked saga, and the
//! payment ledger as Stay knows it. All need the `admin` role. The saga list is the query side's
//! (`GET /v1/admin/sagas`, from the `sagas` read model).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{middleware, Json};
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use stay_domain::{Clock, ReservationId};
use stay_http::auth::{require_token, Admins, Caller};
use stay_http::QueryParams;
use stay_http::{ApiError, JwtKeys, Problem};
use stay_store::{CommandContext, EventStore, ExecuteError, Executor, StoreError};
use tokio::sync::Notify;
use utoipa::openapi::OpenApi;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::instance::{ResumeAction, SagaCommand, SagaError, SagaInstance};
use crate::payment_ledger::PaymentLedger;
use crate::schedule::Schedule;

/// What the admin routes need.
#[derive(Clone, Debug)]
pub struct AdminState {
    /// The saga tables (the schedule; the payment ledger lives in the same database).
    pub schedule: Schedule,
    /// The saga instances' executor.
    pub sagas: Arc<Executor<SagaInstance>>,
    /// The event store (for timelines).
    pub store: EventStore,
    /// Wakes the driver after a resume.
    pub waker: Arc<Notify>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
}

/// The admin routes with their OpenAPI description.
pub fn router(state: AdminState, keys: JwtKeys) -> (axum::Router, OpenApi) {
    let (router, openapi) = OpenApiRouter::new()
        .routes(routes!(saga_timeline))
        .routes(routes!(retry_saga))
        .routes(routes!(skip_saga))
        .routes(routes!(list_payments))
        .with_state(state)
        .route_layer(middleware::from_fn_with_state(keys, require_token))
        .split_for_parts();
    (router, openapi)
}

/// A time kept as milliseconds since the epoch; one out of range is a broken row, not 1970.
fn time(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| StoreError::Decode(format!("{ms} ms since the epoch is not a time")))
}

/// One entry of a saga's timeline: an event of its stream.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineEntry {
    position: String,
    sequence: u64,
    at: DateTime<Utc>,
    event_type: String,
    #[schema(value_type = Object)]
    detail: Value,
}

/// A saga with its timeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct SagaDetail {
    saga_id: String,
    reservation_id: String,
    status: String,
    step: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_attempt_at: Option<DateTime<Utc>>,
    timeline: Vec<TimelineEntry>,
}

fn saga_id(text: &str) -> Result<String, ApiError> {
    text.parse::<ReservationId>()
        .map(|id| id.to_string())
        .map_err(|_| ApiError::not_found("saga_not_found", format!("no saga has the id {text:?}")))
}

/// A saga's timeline: every step, outcome, retry, deadline and compensation, with times and positions.
#[utoipa::path(
    get, path = "/v1/admin/sagas/{saga_id}", tag = "admin", security(("bearer" = [])),
    params(("saga_id" = String, Path, description = "The saga (its reservation's id)")),
    responses(
        (status = 200, description = "The saga", body = SagaDetail),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`saga_not_found`", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn saga_timeline(
    State(state): State<AdminState>,
    _caller: Caller<Admins>,
    Path(id): Path<String>,
) -> Result<Json<SagaDetail>, ApiError> {
    let id = saga_id(&id)?;
    let row = state.schedule.get(&id).await?;
    let events = state.store.read_stream(<SagaInstance as cqrs_es::Aggregate>::TYPE, &id).await?;
    let Some(row) = row.filter(|_| !events.is_empty()) else {
        return Err(ApiError::not_found("saga_not_found", format!("no saga has the id {id:?}")));
    };
    let timeline = events
        .into_iter()
        .map(|event| {
            let detail = match event.payload {
                Value::Object(mut map) if map.len() == 1 => map.remove(&event.event_type).unwrap_or(Value::Null),
                other => other,
            };
            TimelineEntry {
                position: event.position.to_string(),
                sequence: event.sequence,
                at: event.recorded_at,
                event_type: event.event_type,
                detail,
            }
        })
        .collect();
    Ok(Json(SagaDetail {
        reservation_id: id.clone(),
        saga_id: id,
        status: row.status,
        step: row.step,
        last_error: row.last_error,
        next_attempt_at: row.due_at_ms.map(time).transpose()?,
        timeline,
    }))
}

/// The answer to a resume.
#[derive(Debug, Serialize, ToSchema)]
pub struct Resumed {
    saga_id: String,
    action: String,
    position: String,
}

async fn resume(
    state: &AdminState,
    caller: &Caller<Admins>,
    id: &str,
    action: ResumeAction,
) -> Result<Resumed, ApiError> {
    let id = saga_id(id)?;
    let by = caller.principal.user.as_str().to_owned();
    let context = CommandContext::new(by.clone()).correlated_to(id.clone());
    let resumed = state.sagas.execute(&id, SagaCommand::Resume { action, by }, &context).await;
    // Wake the saga even when the resume is refused: an earlier resume may have been recorded
    // while its wake-up failed, and waking is harmless.
    if !matches!(resumed, Err(ExecuteError::Rejected(SagaError::NotFound))) {
        state.schedule.wake(&id, state.clock.now().timestamp_millis()).await?;
        state.waker.notify_one();
    }
    let committed = resumed.map_err(|err| match err {
        ExecuteError::Rejected(SagaError::NotFound) => ApiError::not_found("saga_not_found", "no such saga"),
        ExecuteError::Rejected(refusal) => ApiError::new(StatusCode::CONFLICT, refusal.code(), refusal.to_string()),
        ExecuteError::Conflict { .. } => {
            ApiError::new(StatusCode::CONFLICT, "concurrent_modification", "the saga moved; retry").retry_after(1)
        }
        ExecuteError::Store(store) => store.into(),
    })?;
    let position = committed.last_position().map(|p| p.to_string()).unwrap_or_default();
    let action = match action {
        ResumeAction::Retry => "retry",
        ResumeAction::Skip => "skip",
    };
    tracing::info!(saga_id = %id, action, by = %caller.principal.user, %position, "saga resumed by an operator");
    Ok(Resumed { saga_id: id, action: action.to_owned(), position })
}

/// Try a parked saga's step again.
#[utoipa::path(
    post, path = "/v1/admin/sagas/{saga_id}/retry", tag = "admin", security(("bearer" = [])),
    params(("saga_id" = String, Path, description = "The saga")),
    responses(
        (status = 202, description = "Resumed; the driver takes it on", body = Resumed),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`saga_not_found`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`saga_not_parked`", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn retry_saga(
    State(state): State<AdminState>,
    caller: Caller<Admins>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Resumed>), ApiError> {
    Ok((StatusCode::ACCEPTED, Json(resume(&state, &caller, &id, ResumeAction::Retry).await?)))
}

/// Give up a parked saga's step: a compensation step counts as done, a forward step rejects the reservation.
#[utoipa::path(
    post, path = "/v1/admin/sagas/{saga_id}/skip", tag = "admin", security(("bearer" = [])),
    params(("saga_id" = String, Path, description = "The saga")),
    responses(
        (status = 202, description = "Resumed; the driver takes it on", body = Resumed),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`saga_not_found`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`saga_not_parked`", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn skip_saga(
    State(state): State<AdminState>,
    caller: Caller<Admins>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Resumed>), ApiError> {
    Ok((StatusCode::ACCEPTED, Json(resume(&state, &caller, &id, ResumeAction::Skip).await?)))
}

/// `?reservation_id&limit&cursor` of the payment ledger.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PaymentFilter {
    /// Only this reservation's entries.
    reservation_id: Option<String>,
    /// At most this many (default 1000, at most 10000).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Money in minor units.
#[derive(Debug, Serialize, ToSchema)]
pub struct Amount {
    amount_minor: i64,
    currency: String,
}

/// One provider call as Stay knows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentEntry {
    payment_id: String,
    reservation_id: String,
    kind: String,
    amount: Amount,
    status: String,
    provider_ref: Option<String>,
}

/// A page of the ledger.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentPage {
    items: Vec<PaymentEntry>,
    next_cursor: Option<String>,
}

/// The payment provider's charges, refunds and voids as Stay knows them.
#[utoipa::path(
    get, path = "/v1/admin/payments", tag = "admin", params(PaymentFilter), security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of the ledger", body = PaymentPage),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad cursor or reservation id", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_payments(
    State(state): State<AdminState>,
    _caller: Caller<Admins>,
    QueryParams(filter): QueryParams<PaymentFilter>,
) -> Result<Json<PaymentPage>, ApiError> {
    let limit = filter.limit.unwrap_or(1000).clamp(1, 10_000);
    let cursor = match filter.cursor.as_deref() {
        None | Some("") => 0,
        Some(text) => {
            text.parse::<i64>().map_err(|_| ApiError::invalid_field("cursor", "not a cursor from this list"))?
        }
    };
    let reservation = match filter.reservation_id.as_deref() {
        None => None,
        Some(text) => Some(
            text.parse::<ReservationId>()
                .map_err(|_| ApiError::invalid_field("reservation_id", "must be a UUID"))?
                .to_string(),
        ),
    };
    let ledger = PaymentLedger::new(state.schedule.database().clone());
    let rows = ledger.payments(reservation.as_deref(), cursor, limit).await?;
    let next_cursor = (rows.len() as i64 == limit).then(|| rows.last().map(|r| r.entry_id.to_string())).flatten();
    let items = rows
        .into_iter()
        .map(|row| PaymentEntry {
            payment_id: row.payment_id,
            reservation_id: row.reservation_id,
            kind: row.kind,
            amount: Amount { amount_minor: row.amount_minor, currency: row.currency },
            status: row.status,
            provider_ref: row.provider_ref,
        })
        .collect();
    Ok(Json(PaymentPage { items, next_cursor }))
}
