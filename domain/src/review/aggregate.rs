//! The review's state and its rules.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::commands::ReviewCommand;
use super::error::ReviewError;
use super::events::ReviewEvent;
use crate::ids::{ReservationId, ReviewId, RoomId, UserId};
use crate::services::DomainServices;
use crate::values::{Rating, ReviewComment};

/// The one review of a reservation.
///
/// Both commands are refused on repeat (`AlreadyReviewed`, `AlreadyReplied`) rather than ignored:
/// they come from people, not from a retrying saga, and the HTTP layer's idempotency keys already
/// make a client's retry replay the first answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Review {
    details: Option<ReviewDetails>,
}

/// A posted review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewDetails {
    /// The review.
    pub review_id: ReviewId,
    /// The room reviewed.
    pub room_id: RoomId,
    /// The reservation it is for.
    pub reservation_id: ReservationId,
    /// The guest.
    pub guest_id: UserId,
    /// Stars.
    pub rating: Rating,
    /// Words.
    pub comment: ReviewComment,
    /// The host's answer, if any.
    pub reply: Option<Reply>,
}

/// The host's answer to a review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The host.
    pub host_id: UserId,
    /// The answer.
    pub comment: ReviewComment,
}

impl Review {
    /// The review, once posted.
    pub fn details(&self) -> Option<&ReviewDetails> {
        self.details.as_ref()
    }

    /// Decides the events a command leads to, without changing the review.
    fn decide(&self, command: ReviewCommand) -> Result<Vec<ReviewEvent>, ReviewError> {
        match command {
            ReviewCommand::PostReview {
                review_id,
                room_id,
                reservation_id,
                guest_id,
                rating,
                comment,
                reservation,
            } => {
                let expected = ReviewId::for_reservation(reservation_id);
                if review_id != expected {
                    return Err(ReviewError::ReviewIdMismatch { expected, actual: review_id });
                }
                if self.details.is_some() {
                    return Err(ReviewError::AlreadyReviewed);
                }
                if reservation.guest_id != guest_id {
                    return Err(ReviewError::NotReservationGuest);
                }
                if reservation.room_id != room_id {
                    return Err(ReviewError::WrongRoom);
                }
                if !reservation.confirmed {
                    return Err(ReviewError::ReservationNotConfirmed);
                }
                Ok(vec![ReviewEvent::ReviewPosted { review_id, room_id, reservation_id, guest_id, rating, comment }])
            }
            ReviewCommand::ReplyToReview { actor, room_host_id, comment } => {
                let details = self.details.as_ref().ok_or(ReviewError::ReviewNotFound)?;
                if actor != room_host_id {
                    return Err(ReviewError::NotRoomHost);
                }
                if details.reply.is_some() {
                    return Err(ReviewError::AlreadyReplied);
                }
                Ok(vec![ReviewEvent::ReplyPosted {
                    review_id: details.review_id,
                    room_id: details.room_id,
                    reservation_id: details.reservation_id,
                    host_id: actor,
                    comment,
                }])
            }
        }
    }
}

impl Aggregate for Review {
    const TYPE: &'static str = "Review";
    type Command = ReviewCommand;
    type Event = ReviewEvent;
    type Error = ReviewError;
    type Services = DomainServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ReviewEvent::ReviewPosted { review_id, room_id, reservation_id, guest_id, rating, comment } => {
                self.details =
                    Some(ReviewDetails { review_id, room_id, reservation_id, guest_id, rating, comment, reply: None });
            }
            ReviewEvent::ReplyPosted { host_id, comment, .. } => {
                if let Some(details) = &mut self.details {
                    details.reply = Some(Reply { host_id, comment });
                }
            }
        }
    }
}
