//! The command routes of API.md, one module per resource.
//!
//! Each route turns one request into one command on one aggregate, runs it through the executor
//! and answers with the position of the command's last event.

pub mod reservation_view;
pub mod reservations;
pub mod reviews;
pub mod rooms;

use cqrs_es::Aggregate;
use stay_http::{ApiError, Principal};
use stay_store::{CommandContext, Executor, Position};

use crate::idempotency::CommandKey;
use crate::refusal::{failed, Refusal};

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
    A::Error: Refusal,
{
    if let Some(position) = committed_earlier(executor, aggregate_id, context, key).await? {
        return Ok(position);
    }
    let committed = executor.execute(aggregate_id, command, context).await.map_err(failed)?;
    if let Some(position) = committed.last_position() {
        return Ok(position);
    }
    let stream = executor.store().read_stream(A::TYPE, aggregate_id).await?;
    Ok(stream.last().map_or(Position::START, |e| e.position))
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use stay_domain::{Address, Capacity, CardToken, Description, GuestCount, Rating, ReviewComment, RoomName};
    use utoipa::PartialSchema;

    use super::reservations::{PaymentRequest, RequestReservationRequest};
    use super::reviews::{PostReviewRequest, ReplyRequest};
    use super::rooms::{ChangeRoomRequest, RegisterRoomRequest};

    fn schema<T: PartialSchema>() -> Value {
        serde_json::to_value(T::schema()).expect("a schema serialises")
    }

    /// `field`'s (minimum, maximum) as the schema states them under `min` and `max`.
    fn bounds(schema: &Value, field: &str, min: &str, max: &str) -> (Option<i64>, Option<i64>) {
        let property = &schema["properties"][field];
        (property[min].as_i64(), property[max].as_i64())
    }

    fn chars(min: usize, max: usize) -> (Option<i64>, Option<i64>) {
        let count = |n: usize| i64::try_from(n).expect("small");
        (if min == 0 { None } else { Some(count(min)) }, Some(count(max)))
    }

    fn range(min: u8, max: u8) -> (Option<i64>, Option<i64>) {
        (Some(i64::from(min)), Some(i64::from(max)))
    }

    #[test]
    fn request_schemas_state_the_bounds_the_domain_keeps() {
        for room in [schema::<RegisterRoomRequest>(), schema::<ChangeRoomRequest>()] {
            let text = |field| bounds(&room, field, "minLength", "maxLength");
            assert_eq!(text("name"), chars(RoomName::MIN_CHARS, RoomName::MAX_CHARS), "{room}");
            assert_eq!(text("description"), chars(Description::MIN_CHARS, Description::MAX_CHARS), "{room}");
            assert_eq!(text("address"), chars(Address::MIN_CHARS, Address::MAX_CHARS), "{room}");
            assert_eq!(bounds(&room, "capacity", "minimum", "maximum"), range(Capacity::MIN, Capacity::MAX));
        }
        let reservation = schema::<RequestReservationRequest>();
        assert_eq!(bounds(&reservation, "guests", "minimum", "maximum"), range(GuestCount::MIN, GuestCount::MAX));
        let payment = schema::<PaymentRequest>();
        let card = bounds(&payment, "card_token", "minLength", "maxLength");
        assert_eq!(card, chars(CardToken::MIN_CHARS, CardToken::MAX_CHARS));
        let review = schema::<PostReviewRequest>();
        assert_eq!(bounds(&review, "rating", "minimum", "maximum"), range(Rating::MIN, Rating::MAX));
        for comment in [review, schema::<ReplyRequest>()] {
            let text = bounds(&comment, "comment", "minLength", "maxLength");
            assert_eq!(text, chars(ReviewComment::MIN_CHARS, ReviewComment::MAX_CHARS));
        }
    }
}
