//! `GET /v1/live/rooms`: which rooms changed, live, for the dashboard's rooms screen (public).
//!
//! One server-sent event (`room`) per room whose roomview row changed, sent once roomview has
//! applied the change (so re-reading `GET /v1/rooms/{room_id}` shows it): its id is the feed
//! position of the change, its data `{"room_id","position"}` and nothing else, since anyone may
//! listen. A room changed by several events of one batch is sent once, at the last. Reconnecting
//! with `Last-Event-ID` (or `?after=`) resumes after it; without either the stream starts at the
//! head. A reply to a review is sent too (the room's page shows it), though roomview's counts
//! stay as they were.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use cqrs_es::Aggregate;
use futures::stream::{self, Stream};
use serde::Deserialize;
use stay_domain::{Payment, PaymentEvent, Reservation, ReservationEvent, Review, ReviewEvent, Room};
use stay_http::{ApiError, Problem, QueryParams};
use stay_projections::queries::reservations;
use stay_store::{Position, RecordedEvent, StoreError};
use utoipa::IntoParams;

use crate::applied_feed::{applied, resume_after, AppliedFeed};
use crate::QueryState;

/// `?after` of the room changes.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RoomChangesParams {
    /// Resume after this position (like `Last-Event-ID`, which wins).
    #[param(pattern = "^[0-9]+(-[0-9]+)?$")]
    after: Option<String>,
}

/// Room changes, live, as server-sent events (anyone, no token).
#[utoipa::path(
    get, path = "/v1/live/rooms", tag = "rooms", params(RoomChangesParams),
    responses(
        (status = 200, description = "text/event-stream of `room` events: id = feed position, data `{\"room_id\",\"position\"}`", content_type = "text/event-stream"),
        (status = 422, description = "A bad position in `Last-Event-ID` or `after`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn room_changes(
    State(state): State<QueryState>,
    headers: HeaderMap,
    QueryParams(params): QueryParams<RoomChangesParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let after = resume_after(&state, &headers, params.after).await?;
    let feed = AppliedFeed::new(state, &["roomview"], after);
    Ok(Sse::new(changes(feed)).keep_alive(KeepAlive::default()))
}

/// The room changes of each batch the feed gives, in order.
fn changes(feed: AppliedFeed) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold((feed, VecDeque::<Event>::new()), |(mut feed, mut pending)| async move {
        loop {
            if let Some(event) = pending.pop_front() {
                return Some((Ok(event), (feed, pending)));
            }
            let batch = feed.next_batch().await;
            pending = loop {
                match changed_rooms(feed.state(), &batch.events).await {
                    Ok(changed) => {
                        break changed.iter().map(|(room_id, position)| sse_event(room_id, *position)).collect()
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "the room changes could not be worked out; retrying");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            };
        }
    })
}

fn sse_event(room_id: &str, position: Position) -> Event {
    let data = serde_json::json!({"room_id": room_id, "position": position.to_string()});
    Event::default().event("room").id(position.to_string()).data(data.to_string())
}

/// The rooms `events` changed in roomview, each with the position of its last change, in
/// position order.
async fn changed_rooms(state: &QueryState, events: &[RecordedEvent]) -> Result<Vec<(String, Position)>, StoreError> {
    let mut last_change: HashMap<String, Position> = HashMap::new();
    for event in events {
        if let Some(room_id) = room_of(state, event).await? {
            last_change.insert(room_id, event.position);
        }
    }
    let in_order: BTreeMap<Position, String> = last_change.into_iter().map(|(room, at)| (at, room)).collect();
    Ok(in_order.into_iter().map(|(at, room)| (room, at)).collect())
}

/// The room whose roomview row `event` changes, if any.
async fn room_of(state: &QueryState, event: &RecordedEvent) -> Result<Option<String>, StoreError> {
    let kind = event.aggregate_type.as_str();
    if kind == Room::TYPE {
        return Ok(Some(event.aggregate_id.clone()));
    }
    if kind == Reservation::TYPE {
        return Ok(match event.decode::<Reservation>() {
            Ok(
                ReservationEvent::ReservationRequested { room_id, .. }
                | ReservationEvent::ReservationConfirmed { room_id, .. }
                | ReservationEvent::ReservationRejected { room_id, .. }
                | ReservationEvent::CancellationRequested { room_id, .. }
                | ReservationEvent::ReservationCancelled { room_id, .. },
            ) => Some(room_id.to_string()),
            Err(err) => undecodable(event, &err),
        });
    }
    if kind == Review::TYPE {
        return Ok(match event.decode::<Review>() {
            Ok(ReviewEvent::ReviewPosted { room_id, .. } | ReviewEvent::ReplyPosted { room_id, .. }) => {
                Some(room_id.to_string())
            }
            Err(err) => undecodable(event, &err),
        });
    }
    if kind == Payment::TYPE {
        // Only what moved money shows on the room (its charged and refunded sums).
        let reservation_id = match event.decode::<Payment>() {
            Ok(
                PaymentEvent::ChargeApproved { reservation_id, .. }
                | PaymentEvent::PaymentRefunded { reservation_id, .. },
            ) => reservation_id.to_string(),
            Ok(_) => return Ok(None),
            Err(err) => return Ok(undecodable(event, &err)),
        };
        let version = applied(state, "reservations", event.position).await.version;
        return Ok(reservations::reservation(&state.db, version, &reservation_id).await?.map(|row| row.room_id));
    }
    Ok(None)
}

/// An event the stream cannot read changes no room it can name (roomview parks it as a dead letter).
fn undecodable(event: &RecordedEvent, err: &StoreError) -> Option<String> {
    tracing::debug!(position = %event.position, error = %err, "the room changes skip an event they cannot decode");
    None
}
