//! `GET /v1/rooms`, `GET /v1/rooms/{room_id}`, `GET /v1/rooms/{room_id}/reviews`: public reads of
//! roomview and reviews.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use stay_domain::RoomId;
use stay_http::QueryParams;
use stay_http::{ApiError, Problem};
use stay_http::{IdPath, MoneyBody};
use stay_projections::queries::reviews;
use stay_projections::queries::rooms::{self, RoomRow};
use utoipa::{IntoParams, ToSchema};

use crate::room_cache::{FirstPage, RoomAnswer, Stamp};
use crate::wait::Freshness;
use crate::QueryState;

/// The read model of rooms.
const ROOMVIEW: &str = "roomview";
/// The read model of reviews.
const REVIEWS: &str = "reviews";

/// Reservation counts by status.
#[derive(Debug, Serialize, ToSchema)]
pub struct Counts {
    pending: i64,
    confirmed: i64,
    cancelled: i64,
    rejected: i64,
}

/// Money taken and given back.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentTotals {
    charged: MoneyBody,
    refunded: MoneyBody,
}

/// Review count and average.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewSummary {
    count: i64,
    average_rating: Option<f64>,
}

/// A stay booked in the room.
#[derive(Debug, Serialize, ToSchema)]
pub struct BookedStay {
    reservation_id: String,
    check_in: String,
    check_out: String,
}

/// One row of roomview (API.md `RoomView`).
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomView {
    room_id: String,
    host_id: String,
    name: String,
    description: String,
    address: String,
    nightly_price: MoneyBody,
    capacity: i64,
    listed: bool,
    reservations: Counts,
    booked: Vec<BookedStay>,
    payments: PaymentTotals,
    reviews: ReviewSummary,
    updated_at: String,
    position: String,
}

fn money(amount_minor: i64, currency: &str) -> MoneyBody {
    MoneyBody { amount_minor, currency: currency.to_owned() }
}

impl RoomView {
    /// The view of a row on `today` (`YYYY-MM-DD`): stays that have ended are history, not bookings.
    fn render(row: &RoomRow, today: &str) -> Self {
        let count = row.review_count;
        let average_rating = (count > 0).then(|| ((row.rating_sum as f64 / count as f64) * 100.0).round() / 100.0);
        RoomView {
            nightly_price: money(row.price_minor, &row.currency),
            payments: PaymentTotals {
                charged: money(row.charged_minor, &row.currency),
                refunded: money(row.refunded_minor, &row.currency),
            },
            room_id: row.room_id.clone(),
            host_id: row.host_id.clone(),
            name: row.name.clone(),
            description: row.description.clone(),
            address: row.address.clone(),
            capacity: row.capacity,
            listed: row.listed,
            reservations: Counts {
                pending: row.pending,
                confirmed: row.confirmed,
                cancelled: row.cancelled,
                rejected: row.rejected,
            },
            booked: row
                .booked
                .iter()
                .filter(|b| b.check_out.as_str() > today)
                .map(|b| BookedStay {
                    reservation_id: b.reservation_id.clone(),
                    check_in: b.check_in.clone(),
                    check_out: b.check_out.clone(),
                })
                .collect(),
            reviews: ReviewSummary { count, average_rating },
            updated_at: row.updated_at.clone(),
            position: row.position.clone(),
        }
    }
}

/// Today's date, as `booked` is filtered by.
fn today() -> NaiveDate {
    Utc::now().date_naive()
}

/// A room's `RoomView` on `today`, as JSON.
fn room_answer(row: &RoomRow, today: NaiveDate) -> Result<RoomAnswer, ApiError> {
    let view = RoomView::render(row, &today.to_string());
    let json = serde_json::to_vec(&view).map_err(|err| ApiError::internal("could not render a room", &err))?;
    Ok(RoomAnswer { room_id: row.room_id.clone(), position: row.position.parse().ok(), json: json.into() })
}

/// A [`RoomPage`] made of rooms already rendered: the same JSON as serialising the page whole.
fn page_json(rooms: &[RoomAnswer], next_cursor: Option<&str>) -> Result<Bytes, ApiError> {
    let cursor =
        serde_json::to_vec(&next_cursor).map_err(|err| ApiError::internal("could not render a cursor", &err))?;
    let size = rooms.iter().map(|room| room.json.len() + 1).sum::<usize>() + cursor.len() + 32;
    let mut json = Vec::with_capacity(size);
    json.extend_from_slice(br#"{"items":["#);
    for (i, room) in rooms.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        json.extend_from_slice(&room.json);
    }
    json.extend_from_slice(br#"],"next_cursor":"#);
    json.extend_from_slice(&cursor);
    json.push(b'}');
    Ok(json.into())
}

/// JSON rendered beforehand (kept in the cache, or just made), answered as `Json` would be.
#[derive(Debug)]
pub struct JsonAnswer(Bytes);

impl IntoResponse for JsonAnswer {
    fn into_response(self) -> Response {
        ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], self.0).into_response()
    }
}

/// `?limit&cursor&host_id` of the room list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RoomFilter {
    /// At most this many (default 50; below 1 counts as 1, above 500 as 500).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$")]
    cursor: Option<String>,
    /// Only this host's rooms.
    host_id: Option<String>,
}

/// A page of rooms.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomPage {
    items: Vec<RoomView>,
    next_cursor: Option<String>,
}

/// Every room, one page at a time.
#[utoipa::path(
    get, path = "/v1/rooms", tag = "rooms", params(RoomFilter, Freshness),
    responses(
        (status = 200, description = "A page of roomview", body = RoomPage),
        (status = 422, description = "Bad parameters: a `cursor` not from this list", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "`projection_behind`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_rooms(
    State(state): State<QueryState>,
    QueryParams(filter): QueryParams<RoomFilter>,
    QueryParams(freshness): QueryParams<Freshness>,
) -> Result<JsonAnswer, ApiError> {
    // A cursor is the last room id of a page; anything else was not made by this list.
    let after = match filter.cursor.as_deref() {
        None | Some("") => String::new(),
        Some(text) => text.parse::<RoomId>().map_err(|_| ApiError::invalid_cursor())?.to_string(),
    };
    let at = state.read_at(ROOMVIEW, &freshness).await?;
    let today = today();
    let stamp = Stamp { progress: at, today };
    let limit = filter.limit.unwrap_or(50).clamp(1, 500);
    // Only first pages are kept: they are what dashboards and people open again and again.
    let first_page = after.is_empty().then(|| FirstPage { host_id: filter.host_id.clone(), limit });
    if let Some(json) = first_page.as_ref().and_then(|page| state.room_cache().first_page(stamp, page)) {
        return Ok(JsonAnswer(json));
    }
    let page = rooms::RoomPage { host_id: filter.host_id.as_deref(), after: &after, limit };
    let rows = rooms::rooms(&state.db, at.version, &page).await?;
    let next_cursor = (rows.len() as i64 == limit).then(|| rows.last().map(|r| r.room_id.clone())).flatten();
    let answers = rows.iter().map(|row| room_answer(row, today)).collect::<Result<Vec<_>, _>>()?;
    let json = page_json(&answers, next_cursor.as_deref())?;
    if let Some(page) = first_page {
        state.room_cache().keep_first_page(stamp, page, &json, &answers);
    }
    Ok(JsonAnswer(json))
}

/// One room's roomview.
#[utoipa::path(
    get, path = "/v1/rooms/{room_id}", tag = "rooms", params(("room_id" = String, Path, description = "The room"), Freshness),
    responses(
        (status = 200, description = "The room", body = RoomView),
        (status = 404, description = "`room_not_found`", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "`projection_behind`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_room(
    State(state): State<QueryState>,
    IdPath(room_id): IdPath<RoomId>,
    QueryParams(freshness): QueryParams<Freshness>,
) -> Result<JsonAnswer, ApiError> {
    let at = state.read_at(ROOMVIEW, &freshness).await?;
    let today = today();
    let stamp = Stamp { progress: at, today };
    let id = room_id.to_string();
    if let Some(json) = state.room_cache().room(stamp, &id) {
        return Ok(JsonAnswer(json));
    }
    let row = rooms::room(&state.db, at.version, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("room_not_found", format!("no room has the id {room_id}")))?;
    let answer = room_answer(&row, today)?;
    state.room_cache().keep_room(stamp, &answer);
    Ok(JsonAnswer(answer.json))
}

/// A review of a room.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewView {
    review_id: String,
    reservation_id: String,
    guest_id: String,
    rating: i64,
    comment: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply: Option<String>,
    created_at: String,
}

/// A room's reviews.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewList {
    items: Vec<ReviewView>,
}

/// A room's reviews, oldest first.
#[utoipa::path(
    get, path = "/v1/rooms/{room_id}/reviews", tag = "reviews",
    params(("room_id" = String, Path, description = "The room"), Freshness),
    responses(
        (status = 200, description = "The reviews", body = ReviewList),
        (status = 404, description = "`room_not_found`", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "`projection_behind`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn room_reviews(
    State(state): State<QueryState>,
    IdPath(room_id): IdPath<RoomId>,
    QueryParams(freshness): QueryParams<Freshness>,
) -> Result<Json<ReviewList>, ApiError> {
    let reviews_at = state.read_at(REVIEWS, &freshness).await?;
    let id = room_id.to_string();
    let rooms_at = state.read_at(ROOMVIEW, &Freshness::default()).await?;
    if !rooms::exists(&state.db, rooms_at.version, &id).await? {
        return Err(ApiError::not_found("room_not_found", format!("no room has the id {room_id}")));
    }
    let rows = reviews::of_room(&state.db, reviews_at.version, &id).await?;
    let items = rows
        .into_iter()
        .map(|row| ReviewView {
            review_id: row.review_id,
            reservation_id: row.reservation_id,
            guest_id: row.guest_id,
            rating: row.rating,
            comment: row.comment,
            reply: row.reply,
            created_at: row.created_at,
        })
        .collect();
    Ok(Json(ReviewList { items }))
}

#[cfg(test)]
mod tests {
    use stay_projections::models::roomview::Booked;

    use super::*;

    fn row(room_id: &str, booked: Vec<Booked>) -> RoomRow {
        RoomRow {
            room_id: room_id.into(),
            host_id: "host-1".into(),
            name: "A \"quoted\" name".into(),
            description: "Line one\nline two".into(),
            address: "1 Main St".into(),
            price_minor: 9_000,
            currency: "EUR".into(),
            capacity: 2,
            listed: true,
            pending: 1,
            confirmed: 2,
            cancelled: 0,
            rejected: 0,
            booked,
            charged_minor: 18_000,
            refunded_minor: 0,
            review_count: 3,
            rating_sum: 13,
            updated_at: "2030-01-01T00:00:00.000000Z".into(),
            position: "42".into(),
        }
    }

    fn stay(reservation_id: &str, check_in: &str, check_out: &str) -> Booked {
        Booked { reservation_id: reservation_id.into(), check_in: check_in.into(), check_out: check_out.into() }
    }

    #[test]
    fn a_page_made_of_rendered_rooms_is_the_json_of_the_page_rendered_whole() {
        let today = NaiveDate::from_ymd_opt(2030, 6, 1).expect("a date");
        let rows = [
            row("a", vec![stay("r1", "2030-05-01", "2030-05-03"), stay("r2", "2030-06-01", "2030-06-04")]),
            row("b", Vec::new()),
        ];
        for next_cursor in [None, Some("b")] {
            let answers: Vec<RoomAnswer> = rows.iter().map(|r| room_answer(r, today).expect("rendered")).collect();
            let made = page_json(&answers, next_cursor).expect("a page");
            let whole = RoomPage {
                items: rows.iter().map(|r| RoomView::render(r, "2030-06-01")).collect(),
                next_cursor: next_cursor.map(str::to_owned),
            };
            assert_eq!(made, serde_json::to_vec(&whole).expect("serialised"));
        }
        assert_eq!(
            page_json(&[], None).expect("a page"),
            serde_json::to_vec(&RoomPage { items: vec![], next_cursor: None }).expect("serialised")
        );
    }

    #[test]
    fn booked_lists_only_stays_that_have_not_ended_on_the_day_rendered() {
        let row = row("a", vec![stay("r1", "2030-05-01", "2030-05-03"), stay("r2", "2030-06-01", "2030-06-04")]);
        let view = serde_json::to_value(RoomView::render(&row, "2030-06-01")).expect("json");
        assert_eq!(
            view["booked"],
            serde_json::json!([{"reservation_id": "r2", "check_in": "2030-06-01", "check_out": "2030-06-04"}])
        );
        let later = serde_json::to_value(RoomView::render(&row, "2030-06-04")).expect("json");
        assert_eq!(later["booked"], serde_json::json!([]));
    }
}
