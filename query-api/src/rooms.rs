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
use stay_projections::models::reviews;
use stay_projections::models::roomview::{self, Booked};
use stay_store::{Arg, Cells};
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

const COLUMNS: &str = "room_id, host_id, name, description, address, price_minor, currency, capacity, listed, \
    pending, confirmed, cancelled, rejected, booked, charged_minor, refunded_minor, review_count, rating_sum, \
    updated_at, position";

fn money(amount_minor: i64, currency: &str) -> MoneyBody {
    MoneyBody { amount_minor, currency: currency.to_owned() }
}

fn room_view(row: &Cells) -> RoomView {
    let currency = row[6].text();
    let today = Utc::now().date_naive().to_string();
    let booked: Vec<Booked> = serde_json::from_str(row[13].text()).unwrap_or_default();
    let count = row[16].int();
    let average_rating = (count > 0).then(|| ((row[17].int() as f64 / count as f64) * 100.0).round() / 100.0);
    RoomView {
        room_id: row[0].text().to_owned(),
        host_id: row[1].text().to_owned(),
        name: row[2].text().to_owned(),
        description: row[3].text().to_owned(),
        address: row[4].text().to_owned(),
        nightly_price: money(row[5].int(), currency),
        capacity: row[7].int(),
        listed: row[8].int() != 0,
        reservations: Counts {
            pending: row[9].int(),
            confirmed: row[10].int(),
            cancelled: row[11].int(),
            rejected: row[12].int(),
        },
        // Stays that have ended are history, not bookings.
        booked: booked
            .into_iter()
            .filter(|b| b.check_out > today)
            .map(|b| BookedStay { reservation_id: b.reservation_id, check_in: b.check_in, check_out: b.check_out })
            .collect(),
        payments: PaymentTotals { charged: money(row[14].int(), currency), refunded: money(row[15].int(), currency) },
        reviews: ReviewSummary { count, average_rating },
        updated_at: row[18].text().to_owned(),
        position: row[19].text().to_owned(),
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
    let table = roomview::table(state.live_version("roomview", checked).await?);
    let cursor = filter.cursor.unwrap_or_default();
    let rows = match filter.host_id {
        Some(host) => {
            let sql =
                format!("SELECT {COLUMNS} FROM {table} WHERE host_id = $1 AND room_id > $2 ORDER BY room_id LIMIT $3");
            state.db.rows(&sql, &[host.into(), cursor.into(), limit.into()]).await?
        }
        None => {
            let sql = format!("SELECT {COLUMNS} FROM {table} WHERE room_id > $1 ORDER BY room_id LIMIT $2");
            state.db.rows(&sql, &[cursor.into(), limit.into()]).await?
        }
    };
    let next_cursor = (rows.len() as i64 == limit).then(|| rows.last().map(|r| r[0].text().to_owned())).flatten();
    Ok(Json(RoomPage { items: rows.iter().map(room_view).collect(), next_cursor }))
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
    let table = roomview::table(state.live_version("roomview", checked).await?);
    let rows = state
        .db
        .rows(&format!("SELECT {COLUMNS} FROM {table} WHERE room_id = $1"), &[room_id.to_string().into()])
        .await?;
    rows.first()
        .map(|row| Json(room_view(row)))
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
    let rooms = roomview::table(state.live_version("roomview", None).await?);
    let id: Arg = room_id.to_string().into();
    if state.db.rows(&format!("SELECT 1 FROM {rooms} WHERE room_id = $1"), std::slice::from_ref(&id)).await?.is_empty()
    {
        return Err(ApiError::not_found("room_not_found", format!("no room has the id {room_id}")));
    }
    let table = reviews::table(state.live_version("reviews", checked).await?);
    let rows = state
        .db
        .rows(
            &format!(
                "SELECT review_id, reservation_id, guest_id, rating, comment, reply, created_at FROM {table} \
                 WHERE room_id = $1 ORDER BY position_major, position_minor"
            ),
            &[id],
        )
        .await?;
    let items = rows
        .iter()
        .map(|row| ReviewView {
            review_id: row[0].text().to_owned(),
            reservation_id: row[1].text().to_owned(),
            guest_id: row[2].text().to_owned(),
            rating: row[3].int(),
            comment: row[4].text().to_owned(),
            reply: row[5].opt_text().map(str::to_owned),
            created_at: row[6].text().to_owned(),
        })
        .collect();
    Ok(Json(ReviewList { items }))
}
