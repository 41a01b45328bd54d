//! `GET /v1/live`: the feed as server-sent events for dashboards.
//!
//! Each event's SSE id is its feed position; a client that reconnects with `Last-Event-ID` (or
//! `?after=`) resumes right after it, losing nothing. Without either, the stream starts at the
//! head: only new events. Browsers' `EventSource` cannot send headers, so the token may also come
//! as `?access_token=`.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::stream::{self, Stream};
use serde::Deserialize;
use stay_http::auth::Role;
use stay_http::QueryParams;
use stay_http::{ApiError, Problem};
use stay_store::{EventStore, Position, RecordedEvent};
use utoipa::IntoParams;

use crate::QueryState;

/// `?after&access_token` of the live feed.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LiveParams {
    /// Resume after this position (like `Last-Event-ID`).
    #[param(pattern = "^[0-9]+(-[0-9]+)?$")]
    after: Option<String>,
    /// A bearer token, for clients that cannot send an Authorization header.
    access_token: Option<String>,
}

/// The feed, live, as server-sent events (admin).
#[utoipa::path(
    get, path = "/v1/live", tag = "admin", security(("bearer" = [])), params(LiveParams),
    responses(
        (status = 200, description = "text/event-stream; each event's id is its position", content_type = "text/event-stream"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad position", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn live(
    State(state): State<QueryState>,
    headers: HeaderMap,
    QueryParams(params): QueryParams<LiveParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
        .or(params.access_token)
        .ok_or_else(|| ApiError::unauthenticated("a bearer token is required (header, or ?access_token=)"))?;
    state.keys.verify(bearer.trim())?.require(&[Role::Admin])?;
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_owned).or(params.after);
    let after = match resume.as_deref() {
        Some(text) => {
            text.parse::<Position>().map_err(|_| ApiError::invalid_field("Last-Event-ID", "not a feed position"))?
        }
        None => state.store.head().await?,
    };
    Ok(Sse::new(events_after(state.store, after)).keep_alive(KeepAlive::default()))
}

fn sse_event(event: &RecordedEvent) -> Event {
    let data = serde_json::json!({
        "position": event.position.to_string(),
        "aggregate_type": event.aggregate_type,
        "aggregate_id": event.aggregate_id,
        "sequence": event.sequence,
        "event_type": event.event_type,
        "recorded_at": event.recorded_at,
        "payload": event.payload,
        "metadata": event.metadata,
    });
    Event::default().id(event.position.to_string()).event(event.event_type.clone()).data(data.to_string())
}

/// Every event after `after`, as it is committed.
fn events_after(store: EventStore, after: Position) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold((store, after, Vec::<RecordedEvent>::new()), |(store, mut after, mut pending)| async move {
        loop {
            if !pending.is_empty() {
                let event = pending.remove(0);
                return Some((Ok(sse_event(&event)), (store, after, pending)));
            }
            match store.read_feed(after, 200).await {
                Ok(batch) if !batch.is_empty() => {
                    after = batch.last().map_or(after, |e| e.position);
                    pending = batch;
                }
                Ok(_) => {
                    let _ = store.wait_for_events(after, Duration::from_secs(10)).await;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "the live feed could not read the store; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    })
}
