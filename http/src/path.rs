//! Ids in paths: a segment that does not parse as the id is answered like an id nobody has (404).

use std::str::FromStr;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

use crate::problem::ApiError;

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

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use axum::Router;
    use stay_domain::RoomId;
    use tower::ServiceExt;

    use super::*;

    async fn get_room(uri: &str) -> (StatusCode, String) {
        let app = Router::new().route("/rooms/{id}", get(|IdPath(id): IdPath<RoomId>| async move { id.to_string() }));
        let request = Request::get(uri).body(Body::empty()).expect("request");
        let response = app.oneshot(request).await.expect("answer");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn an_id_parses_into_its_type() {
        let id = "0191e3a2-7c4e-7b7a-9f00-000000000001";
        assert_eq!(get_room(&format!("/rooms/{id}")).await, (StatusCode::OK, id.to_owned()));
    }

    #[tokio::test]
    async fn an_id_that_does_not_parse_is_not_found_with_its_code() {
        let (status, body) = get_room("/rooms/not-a-uuid").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("room_not_found"), "{body}");
    }
}
