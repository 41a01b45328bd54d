//! `GET /v1/admin/correlations/{correlation_id}`: everything one correlation caused across
//! aggregates, for audit. A reservation's id is the correlation of every command its request,
//! its saga, its cancellation and its review sent, so this shows what one reservation caused.
//!
//! The events come from the `correlations` read model (an index by correlation id), never from a
//! scan of the log. Each event names its parent: the event its `causation_id` points at
//! (`Type:id@sequence`) when that event is in the same correlation; a root's cause is a request.

use std::collections::HashSet;
use std::str::FromStr;

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use stay_domain::ReservationId;
use stay_http::auth::{Admins, Caller};
use stay_http::{ApiError, IdPath, NotFoundCode, Problem, QueryParams};
use stay_projections::queries::correlations::{self, CorrelatedEvent};
use utoipa::ToSchema;

use crate::wait::Freshness;
use crate::QueryState;

/// A correlation id in a path: the id of a reservation (or of the one command that began the
/// correlation). Anything that is not such an id is answered like an unknown one.
#[derive(Debug)]
pub struct CorrelationId(String);

impl FromStr for CorrelationId {
    type Err = <ReservationId as FromStr>::Err;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.parse::<ReservationId>().map(|id| Self(id.to_string()))
    }
}

impl NotFoundCode for CorrelationId {
    const CODE: &'static str = "correlation_not_found";
    const NOUN: &'static str = "correlation";
}

/// One event of a correlation, with the link to the event that caused it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CorrelatedEventView {
    /// The event as other events' `causation_id` names it: `Type:id@sequence`.
    id: String,
    /// Its feed position.
    position: String,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    /// When it was recorded (RFC 3339).
    recorded_at: String,
    /// What caused the command that wrote it: another event's `id`, or a request's id.
    causation_id: Option<String>,
    /// The command that wrote it.
    command_id: Option<String>,
    /// Who sent that command (a user, or `saga`).
    actor: Option<String>,
    /// The `id` of the event in this correlation that caused it; null for a root (caused by a request).
    parent: Option<String>,
}

/// An aggregate a correlation touched.
#[derive(Debug, Serialize, ToSchema)]
pub struct TouchedAggregate {
    aggregate_type: String,
    aggregate_id: String,
    /// How many of its events belong to the correlation.
    events: usize,
}

/// Everything one correlation caused.
#[derive(Debug, Serialize, ToSchema)]
pub struct CorrelationView {
    correlation_id: String,
    /// Its events in feed order; `parent` links make the causation tree.
    events: Vec<CorrelatedEventView>,
    /// Every aggregate it touched, in the order it first touched them.
    aggregates: Vec<TouchedAggregate>,
}

/// The name other events' `causation_id` gives an event.
fn event_name(event: &CorrelatedEvent) -> String {
    format!("{}:{}@{}", event.aggregate_type, event.aggregate_id, event.sequence)
}

/// The view of a correlation's events (in feed order): each linked to its parent.
fn view(correlation_id: String, rows: Vec<CorrelatedEvent>) -> CorrelationView {
    let names: HashSet<String> = rows.iter().map(event_name).collect();
    let mut aggregates: Vec<TouchedAggregate> = Vec::new();
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        match aggregates
            .iter_mut()
            .find(|a| a.aggregate_type == row.aggregate_type && a.aggregate_id == row.aggregate_id)
        {
            Some(touched) => touched.events += 1,
            None => aggregates.push(TouchedAggregate {
                aggregate_type: row.aggregate_type.clone(),
                aggregate_id: row.aggregate_id.clone(),
                events: 1,
            }),
        }
        let id = event_name(&row);
        let parent = row.causation_id.clone().filter(|cause| *cause != id && names.contains(cause));
        events.push(CorrelatedEventView {
            id,
            position: row.position,
            aggregate_type: row.aggregate_type,
            aggregate_id: row.aggregate_id,
            sequence: row.sequence,
            event_type: row.event_type,
            recorded_at: row.recorded_at,
            causation_id: row.causation_id,
            command_id: row.command_id,
            actor: row.actor,
            parent,
        });
    }
    CorrelationView { correlation_id, events, aggregates }
}

/// Everything one correlation (a reservation) caused across aggregates, with causation links.
#[utoipa::path(
    get, path = "/v1/admin/correlations/{correlation_id}", tag = "admin", security(("bearer" = [])),
    params(("correlation_id" = String, Path, description = "The correlation: a reservation's id"), Freshness),
    responses(
        (status = 200, description = "Its events in feed order, each with its parent", body = CorrelationView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`correlation_not_found`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad `min_position`", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "`projection_behind`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn correlation(
    State(state): State<QueryState>,
    _caller: Caller<Admins>,
    IdPath(CorrelationId(correlation_id)): IdPath<CorrelationId>,
    QueryParams(freshness): QueryParams<Freshness>,
) -> Result<Json<CorrelationView>, ApiError> {
    let version = state.read_at("correlations", &freshness).await?.version;
    let rows = correlations::of_correlation(&state.db, version, &correlation_id).await?;
    if rows.is_empty() {
        return Err(ApiError::not_found(
            "correlation_not_found",
            format!("no event is correlated to {correlation_id} (yet)"),
        ));
    }
    Ok(Json(view(correlation_id, rows)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(aggregate_type: &str, sequence: i64, causation_id: &str) -> CorrelatedEvent {
        CorrelatedEvent {
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: "r1".to_owned(),
            sequence,
            position: format!("{sequence}"),
            event_type: "Something".to_owned(),
            recorded_at: "2026-01-01T00:00:00Z".to_owned(),
            causation_id: Some(causation_id.to_owned()),
            command_id: None,
            actor: None,
        }
    }

    #[test]
    fn each_event_names_the_event_that_caused_it_and_a_request_makes_a_root() {
        let rows = vec![
            event("Reservation", 1, "request-1"),
            event("ReservationSaga", 1, "Reservation:r1@1"),
            event("Room", 1, "ReservationSaga:r1@1"),
            event("Room", 2, "ReservationSaga:r1@9"),
        ];
        let view = view("r1".to_owned(), rows);
        let parents: Vec<Option<&str>> = view.events.iter().map(|e| e.parent.as_deref()).collect();
        assert_eq!(parents, [None, Some("Reservation:r1@1"), Some("ReservationSaga:r1@1"), None]);
        let touched: Vec<(&str, usize)> =
            view.aggregates.iter().map(|a| (a.aggregate_type.as_str(), a.events)).collect();
        assert_eq!(touched, [("Reservation", 1), ("ReservationSaga", 1), ("Room", 2)]);
    }
}
