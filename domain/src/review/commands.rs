//! What can be asked of a review.

use serde::{Deserialize, Serialize};

use crate::ids::{ReservationId, ReviewId, RoomId, UserId};
use crate::values::{Rating, ReviewComment};

/// What the command API read from the reservation being reviewed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationFacts {
    /// The reservation's guest.
    pub guest_id: UserId,
    /// The reservation's room.
    pub room_id: RoomId,
    /// Whether the reservation is confirmed now (not pending, rejected or cancelled).
    pub confirmed: bool,
}

/// A command to a [`Review`](super::Review).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReviewCommand {
    /// A guest reviews a room after a confirmed reservation of it.
    PostReview {
        /// Must be `ReviewId::for_reservation(reservation_id)`.
        review_id: ReviewId,
        /// The room reviewed.
        room_id: RoomId,
        /// The reservation the review is for.
        reservation_id: ReservationId,
        /// The guest reviewing.
        guest_id: UserId,
        /// Stars.
        rating: Rating,
        /// Words.
        comment: ReviewComment,
        /// The reservation as loaded by the caller.
        reservation: ReservationFacts,
    },
    /// The room's host answers the review.
    ReplyToReview {
        /// Who answers.
        actor: UserId,
        /// The reviewed room's host, as loaded by the caller.
        room_host_id: UserId,
        /// The answer.
        comment: ReviewComment,
    },
}
