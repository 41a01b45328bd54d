//! `GET /v1/rooms`, `GET /v1/rooms/{room_id}`, `GET /v1/rooms/{room_id}/reviews`: public reads of
//! roomview and reviews.

use axum::extract::State;
use axum::Json;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use stay_domain::RoomId;
use stay_http::QueryParams;
use stay_http::{ApiError, Problem};
use stay_http::{IdPath, MoneyBody};
use stay_projections::queries::reviews;
use stay_projections::queries::rooms::{self, RoomRow};
use utoipa::{IntoParams, ToSchema};

use crate::wait::{until_fresh, Freshness};
use crate::QueryState;

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

impl From<RoomRow> for RoomView {
    fn from(row: RoomRow) -> Self {
        let today = Utc::now().date_naive().to_string();
        let count = row.review_count;
        let average_rating = (count > 0).then(|| ((row.rating_sum as f64 / count as f64) * 100.0).round() / 100.0);
        RoomView {
            nightly_price: money(row.price_minor, &row.currency),
            payments: PaymentTotals {
                charged: money(row.charged_minor, &row.currency),
                refunded: money(row.refunded_minor, &row.currency),
            },
            room_id: row.room_id,
            host_id: row.host_id,
            name: row.name,
            description: row.description,
            address: row.address,
            capacity: row.capacity,
            listed: row.listed,
            reservations: Counts {
                pending: row.pending,
                confirmed: row.confirmed,
                cancelled: row.cancelled,
                rejected: row.rejected,
            },
            // Stays that have ended are history, not bookings.
            booked: row
                .booked
                .into_iter()
                .filter(|b| b.check_out > today)
                .map(|b| BookedStay { reservation_id: b.reservation_id, check_in: b.check_in, check_out: b.check_out })
                .collect(),
            reviews: ReviewSummary { count, average_rating },
            updated_at: row.updated_at,
            position: row.position,
        }
    }
}

/// `?limit&cursor&host_id` of the room list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RoomFilter {
    /// At most this many (default 50, at most 500).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
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
        (status = 422, description = "Bad parameters", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "`projection_behind`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_rooms(
    State(state): State<QueryState>,
    QueryParams(filter): QueryParams<RoomFilter>,
    QueryParams(freshness): QueryParams<Freshness>,
) -> Result<Json<RoomPage>, ApiError> {
    let checked = until_fresh(&state.db, "roomview", &freshness).await?;
    let limit = filter.limit.unwrap_or(50).clamp(1, 500);
    let version = state.live_version("roomview", checked).await?;
    let page =
        rooms::RoomPage { host_id: filter.host_id.as_deref(), after: filter.cursor.as_deref().unwrap_or(""), limit };
    let rows = rooms::rooms(&state.db, version, &page).await?;
    let next_cursor = (rows.len() as i64 == limit).then(|| rows.last().map(|r| r.room_id.clone())).flatten();
    Ok(Json(RoomPage { items: rows.into_iter().map(RoomView::from).collect(), next_cursor }))
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
) -> Result<Json<RoomView>, ApiError> {
    let checked = until_fresh(&state.db, "roomview", &freshness).await?;
    let version = state.live_version("roomview", checked).await?;
    rooms::room(&state.db, version, &room_id.to_string())
        .await?
        .map(|row| Json(RoomView::from(row)))
        .ok_or_else(|| ApiError::not_found("room_not_found", format!("no room has the id {room_id}")))
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
    let checked = until_fresh(&state.db, "reviews", &freshness).await?;
    let id = room_id.to_string();
    if !rooms::exists(&state.db, state.live_version("roomview", None).await?, &id).await? {
        return Err(ApiError::not_found("room_not_found", format!("no room has the id {room_id}")));
    }
    let rows = reviews::of_room(&state.db, state.live_version("reviews", checked).await?, &id).await?;
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
