//! Given/when/then tests of every review rule (DESIGN.md §5.1).

use cqrs_es::test::TestFramework;

use super::*;
use crate::ids::{ReviewId, UserId};
use crate::test_fixtures::{guest, host, other_room_id, reservation, room_id, services, user};
use crate::values::{Rating, ReviewComment};

type ReviewTest = TestFramework<Review>;

fn review_id() -> ReviewId {
    ReviewId::for_reservation(reservation(1))
}

fn five_stars() -> Rating {
    Rating::new(5).expect("valid rating")
}

fn comment(text: &str) -> ReviewComment {
    ReviewComment::new(text).expect("valid comment")
}

fn facts() -> ReservationFacts {
    ReservationFacts { guest_id: guest(), room_id: room_id(), confirmed: true }
}

fn post_with(reservation_facts: ReservationFacts) -> ReviewCommand {
    ReviewCommand::PostReview {
        review_id: review_id(),
        room_id: room_id(),
        reservation_id: reservation(1),
        guest_id: guest(),
        rating: five_stars(),
        comment: comment("Lovely light in the mornings."),
        reservation: reservation_facts,
    }
}

fn posted() -> ReviewEvent {
    ReviewEvent::ReviewPosted {
        review_id: review_id(),
        room_id: room_id(),
        reservation_id: reservation(1),
        guest_id: guest(),
        rating: five_stars(),
        comment: comment("Lovely light in the mornings."),
    }
}

fn reply_by(actor: UserId) -> ReviewCommand {
    ReviewCommand::ReplyToReview { actor, room_host_id: host(), comment: comment("Thank you, come again!") }
}

fn replied() -> ReviewEvent {
    ReviewEvent::ReplyPosted {
        review_id: review_id(),
        room_id: room_id(),
        reservation_id: reservation(1),
        host_id: host(),
        comment: comment("Thank you, come again!"),
    }
}

#[tokio::test]
async fn a_guest_with_a_confirmed_reservation_reviews_the_room() {
    ReviewTest::with(services())
        .given_no_previous_events()
        .when_async(post_with(facts()))
        .await
        .then_expect_events(vec![posted()]);
}

#[tokio::test]
async fn a_reservation_is_reviewed_only_once() {
    ReviewTest::with(services())
        .given(vec![posted()])
        .when_async(post_with(facts()))
        .await
        .then_expect_error(ReviewError::AlreadyReviewed);
}

#[tokio::test]
async fn a_review_under_an_id_not_derived_from_the_reservation_is_refused() {
    let wrong = ReviewId::for_reservation(reservation(2));
    ReviewTest::with(services())
        .given_no_previous_events()
        .when_async(ReviewCommand::PostReview {
            review_id: wrong,
            room_id: room_id(),
            reservation_id: reservation(1),
            guest_id: guest(),
            rating: five_stars(),
            comment: comment("ok"),
            reservation: facts(),
        })
        .await
        .then_expect_error(ReviewError::ReviewIdMismatch { expected: review_id(), actual: wrong });
}

#[tokio::test]
async fn a_reservation_that_is_not_confirmed_cannot_be_reviewed() {
    ReviewTest::with(services())
        .given_no_previous_events()
        .when_async(post_with(ReservationFacts { confirmed: false, ..facts() }))
        .await
        .then_expect_error(ReviewError::ReservationNotConfirmed);
}

#[tokio::test]
async fn only_the_reservations_guest_may_review_it() {
    ReviewTest::with(services())
        .given_no_previous_events()
        .when_async(post_with(ReservationFacts { guest_id: user("guest-2"), ..facts() }))
        .await
        .then_expect_error(ReviewError::NotReservationGuest);
}

#[tokio::test]
async fn a_reservation_of_another_room_cannot_review_this_one() {
    ReviewTest::with(services())
        .given_no_previous_events()
        .when_async(post_with(ReservationFacts { room_id: other_room_id(), ..facts() }))
        .await
        .then_expect_error(ReviewError::WrongRoom);
}

#[tokio::test]
async fn the_rooms_host_may_reply() {
    ReviewTest::with(services())
        .given(vec![posted()])
        .when_async(reply_by(host()))
        .await
        .then_expect_events(vec![replied()]);
}

#[tokio::test]
async fn nobody_but_the_rooms_host_may_reply() {
    for someone in [guest(), user("host-2")] {
        ReviewTest::with(services())
            .given(vec![posted()])
            .when_async(reply_by(someone))
            .await
            .then_expect_error(ReviewError::NotRoomHost);
    }
}

#[tokio::test]
async fn the_host_replies_only_once() {
    ReviewTest::with(services())
        .given(vec![posted(), replied()])
        .when_async(reply_by(host()))
        .await
        .then_expect_error(ReviewError::AlreadyReplied);
}

#[tokio::test]
async fn replying_to_a_review_never_posted_is_refused() {
    ReviewTest::with(services())
        .given_no_previous_events()
        .when_async(reply_by(host()))
        .await
        .then_expect_error(ReviewError::ReviewNotFound);
}

#[test]
fn the_review_keeps_its_reply() {
    let mut review = Review::default();
    for event in [posted(), replied()] {
        cqrs_es::Aggregate::apply(&mut review, event);
    }
    let details = review.details().expect("posted");
    assert_eq!(details.rating, five_stars());
    assert_eq!(details.reply, Some(Reply { host_id: host(), comment: comment("Thank you, come again!") }));
    let json = serde_json::to_value(&review).expect("serializes");
    assert_eq!(serde_json::from_value::<Review>(json).expect("parses"), review);
}
