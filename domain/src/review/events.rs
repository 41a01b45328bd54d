//! What happened to a review, as stored in its stream.
//!
//! Every variant is renamed explicitly so a Rust rename never changes stored JSON; the JSON of each
//! is pinned by `tests/event_json.rs`.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::ids::{ReservationId, ReviewId, RoomId, UserId};
use crate::values::{Rating, ReviewComment};
use crate::EVENT_VERSION;

/// An event of a [`Review`](super::Review).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReviewEvent {
    /// A guest reviewed a room.
    #[serde(rename = "ReviewPosted")]
    ReviewPosted {
        /// The review.
        review_id: ReviewId,
        /// The room reviewed.
        room_id: RoomId,
        /// The reservation it is for.
        reservation_id: ReservationId,
        /// The guest.
        guest_id: UserId,
        /// Stars.
        rating: Rating,
        /// Words.
        comment: ReviewComment,
    },
    /// The room's host answered the review.
    #[serde(rename = "ReplyPosted")]
    ReplyPosted {
        /// The review.
        review_id: ReviewId,
        /// The room reviewed.
        room_id: RoomId,
        /// The reservation it is for.
        reservation_id: ReservationId,
        /// The host who answered.
        host_id: UserId,
        /// The answer.
        comment: ReviewComment,
    },
}

impl DomainEvent for ReviewEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ReviewPosted { .. } => "ReviewPosted",
            Self::ReplyPosted { .. } => "ReplyPosted",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        EVENT_VERSION.to_owned()
    }
}
