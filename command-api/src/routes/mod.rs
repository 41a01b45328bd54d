//! The command routes of API.md, one module per resource.
//!
//! Each route turns one request into one command on one aggregate, runs it through the executor
//! and answers with the position of the command's last event.

pub mod reservation_view;
pub mod reservations;
pub mod reviews;
pub mod rooms;

use std::str::FromStr;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use stay_domain::{Currency, Money, ValidationError};
use stay_store::{CommandContext, Executor, Position};
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::idempotency::CommandKey;
use crate::problem::ApiError;

/// An amount of money: integer minor units and an ISO 4217 code.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoneyBody {
    /// Minor units (cents for USD).
    pub amount_minor: i64,
    /// ISO 4217 code, such as `USD`.
    pub currency: String,
}

impl MoneyBody {
    fn parse(&self) -> Result<Money, ValidationError> {
        Money::new(self.amount_minor, Currency::new(&self.currency)?)
    }
}

/// A path's single id segment, parsed; an unparseable id is 404 like an unknown one.
#[derive(Debug)]
pub struct IdPath<T>(pub T);

/// Names the 404 answered for an id of this type.
pub trait NotFoundCode {
    /// The problem code, such as `room_not_found`.
    const CODE: &'static str;
    /// The noun, such as `room`.
    const NOUN: &'static str;
}

impl NotFoundCode for stay_domain::RoomId {
    const CODE: &'static str = "room_not_found";
    const NOUN: &'static str = "room";
}

impl NotFoundCode for stay_domain::ReservationId {
    const CODE: &'static str = "reservation_not_found";
    const NOUN: &'static str = "reservation";
}

impl NotFoundCode for stay_domain::ReviewId {
    const CODE: &'static str = "review_not_found";
    const NOUN: &'static str = "review";
}

impl<S, T> FromRequestParts<S> for IdPath<T>
where
    S: Send + Sync,
    T: FromStr + NotFoundCode + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let not_found = |text: &str| ApiError::not_found(T::CODE, format!("no {} has the id {text:?}", T::NOUN));
        let Path(text) = Path::<String>::from_request_parts(parts, state).await.map_err(|_| not_found("?"))?;
        text.parse().map(IdPath).map_err(|_| not_found(&text))
    }
}

/// The context of a command sent by `principal` under `key`.
pub(crate) fn context(principal: &Principal, key: &CommandKey) -> CommandContext {
    CommandContext::new(principal.user.as_str()).with_command_id(key.command_id.to_string())
}

/// For a recovering request: the position of the events an earlier attempt with the same key
/// committed, if it did. Routes that check things before running their command ask this first,
/// so a retry answers what its first attempt did even when the checks would now refuse it.
pub(crate) async fn committed_earlier<A: Aggregate + 'static>(
    executor: &Executor<A>,
    aggregate_id: &str,
    context: &CommandContext,
    key: &CommandKey,
) -> Result<Option<Position>, ApiError> {
    if !key.recovering {
        return Ok(None);
    }
    let stream = executor.store().read_stream(A::TYPE, aggregate_id).await?;
    let earlier = stream.iter().rev().find(|e| e.metadata_field("command_id") == Some(&context.command_id));
    if earlier.is_some() {
        tracing::info!(aggregate = A::TYPE, aggregate_id, "a retried command had committed; answering from its events");
    }
    Ok(earlier.map(|e| e.position))
}

/// Runs a command and answers the position of its last event.
///
/// A recovering request (an earlier attempt with the same key may have committed) first looks
/// for events carrying its command id and answers from them rather than running it again. A
/// command that changed nothing answers the position of the aggregate's newest event, so a read
/// at that position still sees the state the command found.
pub(crate) async fn run<A>(
    executor: &Executor<A>,
    aggregate_id: &str,
    command: A::Command,
    context: &CommandContext,
    key: &CommandKey,
) -> Result<Position, ApiError>
where
    A: Aggregate + 'static,
    A::Command: Clone,
    A::Error: std::error::Error + Into<ApiError>,
{
    if key.recovering {
        let stream = executor.store().read_stream(A::TYPE, aggregate_id).await?;
        let earlier = stream.iter().rev().find(|e| e.metadata_field("command_id") == Some(&context.command_id));
        if let Some(event) = earlier {
            tracing::info!(
                aggregate = A::TYPE,
                aggregate_id,
                "a retried command had committed; answering from its events"
            );
            return Ok(event.position);
        }
    }
    let committed = executor.execute(aggregate_id, command, context).await?;
    if let Some(position) = committed.last_position() {
        return Ok(position);
    }
    let stream = executor.store().read_stream(A::TYPE, aggregate_id).await?;
    Ok(stream.last().map_or(Position::START, |e| e.position))
}
