//! `GET /v1/me/live`: what changed for the signed-in user, live, for the dashboard's own page.
//!
//! A server-sent event when something of the caller's changes, sent once the read models show it
//! (so re-reading the JSON routes finds it): `reservation` for a reservation they made or one of
//! their rooms received (its status or payment moved), `notification` for a message to them,
//! `room` for one of their rooms (its details, or a review of it). The data is
//! `{"kind","id","position"}`; nothing of another user's. The event id is the feed position, set
//! on the last event of each position, so reconnecting with `Last-Event-ID` (or `?after=`)
//! resumes after it; without either the stream starts at the head. The token goes in the
//! `Authorization` header, never the URL.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use cqrs_es::Aggregate;
use futures::stream::{self, Stream};
use serde::Deserialize;
use stay_domain::{Payment, PaymentEvent, Reservation, Review, ReviewEvent, Room};
use stay_http::auth::Principal;
use stay_http::{ApiError, Problem, QueryParams};
use stay_projections::queries::{notifications, reservations, rooms};
use stay_store::{Position, RecordedEvent, StoreError};
use utoipa::IntoParams;

use crate::applied_feed::{applied, resume_after, AppliedBatch, AppliedFeed};
use crate::QueryState;

/// The models a batch waits for: those the signals read, and the routes a client reads again.
const MODELS: &[&str] = &["reservations", "notifications"];

/// `?after` of the caller's changes.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MyChangesParams {
    /// Resume after this position (like `Last-Event-ID`, which wins).
    #[param(pattern = "^[0-9]+(-[0-9]+)?$")]
    after: Option<String>,
}

/// What changed: `reservation`, `notification` or `room`, and which.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Change {
    kind: &'static str,
    id: String,
}

/// The caller's changes, live, as server-sent events (any signed-in user).
#[utoipa::path(
    get, path = "/v1/me/live", tag = "reservations", security(("bearer" = [])), params(MyChangesParams),
    responses(
        (status = 200, description = "text/event-stream of `reservation`, `notification` and `room` events: data `{\"kind\",\"id\",\"position\"}`, id = feed position", content_type = "text/event-stream"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad position in `Last-Event-ID` or `after`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn my_changes(
    State(state): State<QueryState>,
    principal: Principal,
    headers: HeaderMap,
    QueryParams(params): QueryParams<MyChangesParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let after = resume_after(&state, &headers, params.after).await?;
    let feed = AppliedFeed::new(state, MODELS, after);
    let user = principal.user.as_str().to_owned();
    Ok(Sse::new(changes(feed, user, after)).keep_alive(KeepAlive::default()))
}

/// The caller's changes of each batch the feed gives, in order.
fn changes(feed: AppliedFeed, user: String, after: Position) -> impl Stream<Item = Result<Event, Infallible>> {
    let start = (feed, user, after, VecDeque::<Event>::new());
    stream::unfold(start, |(mut feed, user, mut after, mut pending)| async move {
        loop {
            if let Some(event) = pending.pop_front() {
                return Some((Ok(event), (feed, user, after, pending)));
            }
            let batch = feed.next_batch().await;
            let changes = loop {
                match my_changes_in(feed.state(), &user, after, &batch).await {
                    Ok(changes) => break changes,
                    Err(err) => {
                        tracing::warn!(error = %err, "the caller's changes could not be worked out; retrying");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            };
            after = batch.events.last().map_or(after, |e| e.position);
            pending = sse_events(changes);
        }
    })
}

/// The events for `changes` (in position order): the id only on the last of each position, so a
/// client that resumes never skips a change sent at the same position as the one it saw last.
fn sse_events(changes: Vec<(Position, Change)>) -> VecDeque<Event> {
    let mut events = VecDeque::with_capacity(changes.len());
    for (i, (position, change)) in changes.iter().enumerate() {
        let data = serde_json::json!({"kind": change.kind, "id": change.id, "position": position.to_string()});
        let mut event = Event::default().event(change.kind).data(data.to_string());
        if changes.get(i + 1).is_none_or(|(next, _)| next != position) {
            event = event.id(position.to_string());
        }
        events.push_back(event);
    }
    events
}

/// What of `user`'s changed in `batch` (whose events come after `after`), each at the position of
/// its last change, in position order.
async fn my_changes_in(
    state: &QueryState,
    user: &str,
    after: Position,
    batch: &AppliedBatch,
) -> Result<Vec<(Position, Change)>, StoreError> {
    let [reservations_at, notifications_at] = [batch.progress[0].version, batch.progress[1].version];
    let last = batch.events.last().map_or(after, |e| e.position);
    let mut lookups = Lookups::default();
    let mut last_change: HashMap<Change, Position> = HashMap::new();
    for event in &batch.events {
        let change = match event.aggregate_type.as_str() {
            kind if kind == Reservation::TYPE => {
                lookups.reservation(state, reservations_at, user, &event.aggregate_id).await?
            }
            kind if kind == Payment::TYPE => match payment_reservation(event) {
                Some(reservation_id) => lookups.reservation(state, reservations_at, user, &reservation_id).await?,
                None => None,
            },
            kind if kind == Room::TYPE => lookups.room(state, last, user, &event.aggregate_id).await?,
            kind if kind == Review::TYPE => match event.decode::<Review>() {
                Ok(ReviewEvent::ReviewPosted { room_id, .. } | ReviewEvent::ReplyPosted { room_id, .. }) => {
                    lookups.room(state, last, user, &room_id.to_string()).await?
                }
                Err(_) => None,
            },
            _ => None,
        };
        if let Some(change) = change {
            last_change.insert(change, event.position);
        }
    }
    // One message per recipient per event at most, so a batch's are far fewer than this bound.
    let marks = notifications::marks_after(&state.db, notifications_at, user, after, 1000).await?;
    for mark in marks.into_iter().filter(|mark| mark.position <= last) {
        last_change.insert(Change { kind: "notification", id: mark.notification_id }, mark.position);
    }
    let in_order: BTreeSet<(Position, Change)> = last_change.into_iter().map(|(change, at)| (at, change)).collect();
    Ok(in_order.into_iter().collect())
}

/// The reservation a payment event is about.
fn payment_reservation(event: &RecordedEvent) -> Option<String> {
    match event.decode::<Payment>().ok()? {
        PaymentEvent::ChargeRequested { reservation_id, .. }
        | PaymentEvent::ChargeApproved { reservation_id, .. }
        | PaymentEvent::ChargeDeclined { reservation_id, .. }
        | PaymentEvent::ChargeFailed { reservation_id, .. }
        | PaymentEvent::PaymentRefunded { reservation_id, .. }
        | PaymentEvent::ChargeVoided { reservation_id, .. } => Some(reservation_id.to_string()),
    }
}

/// Whose reservations and rooms are whose, looked up once per batch.
#[derive(Debug, Default)]
struct Lookups {
    /// Reservation → whether it is the caller's (as guest or host).
    reservations: HashMap<String, bool>,
    /// Room → whether it is the caller's.
    rooms: HashMap<String, bool>,
    /// roomview's version, once a room was looked up in this batch.
    roomview: Option<i64>,
}

impl Lookups {
    async fn reservation(
        &mut self,
        state: &QueryState,
        version: i64,
        user: &str,
        reservation_id: &str,
    ) -> Result<Option<Change>, StoreError> {
        let mine = match self.reservations.get(reservation_id) {
            Some(mine) => *mine,
            None => {
                let row = reservations::reservation(&state.db, version, reservation_id).await?;
                let mine = row.is_some_and(|row| row.guest_id == user || row.host_id == user);
                self.reservations.insert(reservation_id.to_owned(), mine);
                mine
            }
        };
        Ok(mine.then(|| Change { kind: "reservation", id: reservation_id.to_owned() }))
    }

    async fn room(
        &mut self,
        state: &QueryState,
        batch_end: Position,
        user: &str,
        room_id: &str,
    ) -> Result<Option<Change>, StoreError> {
        let mine = match self.rooms.get(room_id) {
            Some(mine) => *mine,
            None => {
                let version = match self.roomview {
                    Some(version) => version,
                    None => {
                        // Rooms are read from roomview, which this stream waits for (to the
                        // batch's end, so a client's re-read shows every change) only when a
                        // batch has room events at all.
                        let version = applied(state, "roomview", batch_end).await.version;
                        self.roomview = Some(version);
                        version
                    }
                };
                let row = rooms::room(&state.db, version, room_id).await?;
                let mine = row.is_some_and(|row| row.host_id == user);
                self.rooms.insert(room_id.to_owned(), mine);
                mine
            }
        };
        Ok(mine.then(|| Change { kind: "room", id: room_id.to_owned() }))
    }
}
