//! Guests review rooms they stayed in; hosts reply.
//!
//! A review needs facts from two other aggregates (the reservation's guest, room and status; the
//! room's host). The route reads them from the write side and hands them to the Review, which
//! decides; it never reads a read model.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use stay_domain::{
    Rating, ReservationError, ReservationFacts, ReservationId, ReservationStatus, ReviewCommand, ReviewComment,
    ReviewError, ReviewId, RoomError, RoomId,
};
use utoipa::ToSchema;

use super::{context, run};
use crate::idempotency::CommandKey;
use crate::refusal::refused;
use crate::CommandApi;
use stay_http::auth::{Caller, Guests, Hosts};
use stay_http::body::{Check, JsonBody};
use stay_http::IdPath;
use stay_http::{ApiError, Problem};

/// A review of a stay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostReviewRequest {
    /// The confirmed reservation the review is for.
    #[schema(format = Uuid)]
    pub reservation_id: String,
    /// Stars, 1 to 5.
    #[schema(minimum = 1, maximum = 5)]
    pub rating: i64,
    /// Up to 2,000 characters.
    #[schema(max_length = 2000)]
    pub comment: String,
}

/// The host's reply.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyRequest {
    /// Up to 2,000 characters.
    #[schema(max_length = 2000)]
    pub comment: String,
}

/// The answer to a review command.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewAnswer {
    /// The review (one per reservation).
    pub review_id: String,
    /// The feed position of the command's last event.
    pub position: String,
}

/// Review a room after a confirmed reservation of it (that reservation's guest, once).
#[utoipa::path(
    post, path = "/v1/rooms/{room_id}/reviews", tag = "reviews", request_body = PostReviewRequest,
    params(("room_id" = String, Path, description = "The room")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Posted", body = ReviewAnswer, headers(("Location" = String))),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a guest, or not this reservation's guest", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`room_not_found`, `reservation_not_found`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`already_reviewed`, `reservation_not_confirmed`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, or `reservation_for_another_room`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn post_review(
    State(api): State<CommandApi>,
    caller: Caller<Guests>,
    Extension(key): Extension<CommandKey>,
    IdPath(room_id): IdPath<RoomId>,
    JsonBody(body): JsonBody<PostReviewRequest>,
) -> Result<Response, ApiError> {
    let principal = caller.principal;
    let mut check = Check::default();
    let reservation_id = check.field("reservation_id", body.reservation_id.parse::<ReservationId>());
    let rating = check.field("rating", Rating::new(body.rating));
    let comment = check.field("comment", ReviewComment::new(body.comment));
    let (Some(reservation_id), Some(rating), Some(comment)) = (reservation_id, rating, comment) else {
        return Err(check.refusal());
    };

    let (room, _) = api.executors().rooms.load(&room_id.to_string()).await?;
    if room.listing().is_none() {
        return Err(refused(RoomError::RoomNotFound));
    }
    let (reservation, _) = api.executors().reservations.load(&reservation_id.to_string()).await?;
    let details = reservation.details().ok_or(ReservationError::ReservationNotFound).map_err(refused)?;
    let facts = ReservationFacts {
        guest_id: details.guest_id.clone(),
        room_id: details.room_id,
        confirmed: details.status == ReservationStatus::Confirmed,
    };
    let review_id = ReviewId::for_reservation(reservation_id);
    let command = ReviewCommand::PostReview {
        review_id,
        room_id,
        reservation_id,
        guest_id: principal.user.clone(),
        rating,
        comment,
        reservation: facts,
    };
    // Correlated to the reservation, so its audit trail shows the review too.
    let context = context(&principal, &key).correlated_to(reservation_id.to_string());
    let position = run(&api.executors().reviews, &review_id.to_string(), command, &context, &key).await?;
    let answer = ReviewAnswer { review_id: review_id.to_string(), position: position.to_string() };
    let location = format!("/v1/rooms/{room_id}/reviews");
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(answer)).into_response())
}

/// Reply to a review of one's room (the room's host, once).
#[utoipa::path(
    post, path = "/v1/reviews/{review_id}/reply", tag = "reviews", request_body = ReplyRequest,
    params(("review_id" = String, Path, description = "The review")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Replied", body = ReviewAnswer),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a host, or not the room's host", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`review_not_found`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`already_replied`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn reply_to_review(
    State(api): State<CommandApi>,
    caller: Caller<Hosts>,
    Extension(key): Extension<CommandKey>,
    IdPath(review_id): IdPath<ReviewId>,
    JsonBody(body): JsonBody<ReplyRequest>,
) -> Result<Json<ReviewAnswer>, ApiError> {
    let principal = caller.principal;
    let comment = ReviewComment::new(body.comment)?;
    let id = review_id.to_string();
    let (review, _) = api.executors().reviews.load(&id).await?;
    let details = review.details().ok_or(ReviewError::ReviewNotFound).map_err(refused)?;
    let (room, _) = api.executors().rooms.load(&details.room_id.to_string()).await?;
    let host = room.listing().ok_or(RoomError::RoomNotFound).map_err(refused)?.host_id.clone();
    let command = ReviewCommand::ReplyToReview { actor: principal.user.clone(), room_host_id: host, comment };
    let context = context(&principal, &key).correlated_to(details.reservation_id.to_string());
    let position = run(&api.executors().reviews, &id, command, &context, &key).await?;
    Ok(Json(ReviewAnswer { review_id: id, position: position.to_string() }))
}
