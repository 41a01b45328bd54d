//! The command routes of API.md against a real `stay serve`, on SQLite and on PostgreSQL: every
//! route's success and each refusal it can give (401, 403, 404, 409, 413, 422).
//!
//! Where a route needs a confirmed or rejected reservation, the server's own saga makes one
//! (`Prefer: wait` with the simulator's card tokens).

use chrono::Utc;
use reqwest::Method;
use serde_json::{json, Value};
use stay_domain::RoomId;
use stay_tests::bodies::{day, room_body};
use stay_tests::{Answer, Backend, StayServer};

/// Runs each listed test on SQLite and on PostgreSQL.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(stay_tests::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(stay_tests::Backend::Postgres).await })*
        }
    };
}

on_both_backends!(
    registering_a_room,
    changing_a_room,
    delisting_a_room,
    requesting_a_reservation,
    cancelling_a_reservation,
    posting_a_review,
    replying_to_a_review,
    tokens_are_checked,
);

fn reservation_body(room_id: &str, from: u64, to: u64) -> Value {
    json!({
        "room_id": room_id,
        "check_in": day(from).to_string(),
        "check_out": day(to).to_string(),
        "guests": 2,
        "payment": {"card_token": "tok_visa"}
    })
}

fn assert_refused(answer: &Answer, status: u16, code: &str) {
    assert_eq!((answer.status, answer.code()), (status, code), "{}", answer.text);
    assert!(answer.is_problem(), "not a problem document: {:?} {}", answer.headers, answer.text);
}

async fn register_room(server: &StayServer, host: &str) -> String {
    let answer = server.post("/v1/rooms", host, &room_body()).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    answer.field("room_id").to_owned()
}

async fn request_reservation(server: &StayServer, guest: &str, room_id: &str, from: u64, to: u64) -> String {
    let answer = server.post("/v1/reservations", guest, &reservation_body(room_id, from, to)).await;
    assert_eq!(answer.status, 202, "{}", answer.text);
    answer.field("reservation_id").to_owned()
}

/// Requests a reservation with `card` and waits for the saga to settle it; its id and status.
async fn reserve_and_settle(
    server: &StayServer,
    guest: &str,
    room_id: &str,
    from: u64,
    to: u64,
    card: &str,
) -> (String, String) {
    let mut body = reservation_body(room_id, from, to);
    body["payment"]["card_token"] = json!(card);
    let answer =
        server.send(Method::POST, "/v1/reservations", Some(guest), Some(&body), &[("prefer", "wait=20")]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    (answer.field("reservation_id").to_owned(), answer.field("status").to_owned())
}

async fn registering_a_room(backend: Backend) {
    let server = StayServer::start(backend).await;
    let host = server.token("host-1", "host");

    let answer = server.post("/v1/rooms", &host, &room_body()).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let room_id = answer.field("room_id");
    assert!(room_id.parse::<RoomId>().is_ok(), "{room_id}");
    assert_eq!(answer.header("location"), format!("/v1/rooms/{room_id}"));
    assert!(!answer.field("position").is_empty());
    let events = server.open_store().await.read_stream("Room", room_id).await.expect("stream");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "RoomRegistered");
    assert_eq!(events[0].position.to_string(), answer.field("position"));
    assert_eq!(events[0].metadata_field("actor"), Some("host-1"));

    // No description is an empty one.
    let mut body = room_body();
    body.as_object_mut().expect("object").remove("description");
    assert_eq!(server.post("/v1/rooms", &host, &body).await.status, 201);

    let guest = server.token("guest-1", "guest");
    assert_refused(&server.post("/v1/rooms", &guest, &room_body()).await, 403, "forbidden_role");
    // The role is checked before the body is read.
    assert_refused(&server.post("/v1/rooms", &guest, &json!({})).await, 403, "forbidden_role");

    let invalid = json!({
        "name": "",
        "address": "1 Quay Street",
        "nightly_price": {"amount_minor": 0, "currency": "eur"},
        "capacity": 40
    });
    let answer = server.post("/v1/rooms", &host, &invalid).await;
    assert_refused(&answer, 422, "validation_failed");
    let fields: Vec<&str> =
        answer.body["errors"].as_array().expect("errors").iter().map(|e| e["field"].as_str().expect("field")).collect();
    assert_eq!(fields, ["name", "nightly_price", "capacity"], "{}", answer.text);

    let wrong_type = json!({"name": "A", "address": "B", "nightly_price": {"amount_minor": "ten", "currency": "EUR"}, "capacity": 2});
    let answer = server.post("/v1/rooms", &host, &wrong_type).await;
    assert_refused(&answer, 422, "validation_failed");
    assert_eq!(answer.body["errors"][0]["field"], "nightly_price.amount_minor");

    let mut unknown = room_body();
    unknown["colour"] = json!("blue");
    assert_refused(&server.post("/v1/rooms", &host, &unknown).await, 422, "validation_failed");

    let answer = server.send_raw(Method::POST, "/v1/rooms", Some(&host), Some(b"{\"name\":".to_vec()), &[]).await;
    assert_refused(&answer, 400, "malformed_json");

    let answer = server
        .send_raw(Method::POST, "/v1/rooms", Some(&host), Some(b"name=x".to_vec()), &[("content-type", "text/plain")])
        .await;
    assert_refused(&answer, 415, "unsupported_media_type");

    let mut huge = room_body();
    huge["description"] = json!("x".repeat(100 * 1024));
    assert_refused(&server.post("/v1/rooms", &host, &huge).await, 413, "body_too_large");
}

async fn changing_a_room(backend: Backend) {
    let server = StayServer::start(backend).await;
    let host = server.token("host-1", "host");
    let room_id = register_room(&server, &host).await;
    let path = format!("/v1/rooms/{room_id}");

    let change = json!({"name": "Loft with a view", "nightly_price": {"amount_minor": 15000, "currency": "EUR"}});
    let answer = server.send(Method::PATCH, &path, Some(&host), Some(&change), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.field("room_id"), room_id);
    let events = server.open_store().await.read_stream("Room", &room_id).await.expect("stream");
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["RoomRegistered", "RoomDetailsChanged", "NightlyPriceChanged"]);
    assert_eq!(answer.field("position"), events[2].position.to_string());

    // The same values again change nothing, and answer where the room stands.
    let again = server.send(Method::PATCH, &path, Some(&host), Some(&change), &[]).await;
    assert_eq!((again.status, again.field("position")), (200, answer.field("position")));

    let other_host = server.token("host-2", "host");
    let answer = server.send(Method::PATCH, &path, Some(&other_host), Some(&change), &[]).await;
    assert_refused(&answer, 403, "not_owner");
    let guest = server.token("guest-1", "guest");
    assert_refused(&server.send(Method::PATCH, &path, Some(&guest), Some(&change), &[]).await, 403, "forbidden_role");

    let unknown = format!("/v1/rooms/{}", uuid::Uuid::new_v4());
    assert_refused(&server.send(Method::PATCH, &unknown, Some(&host), Some(&change), &[]).await, 404, "room_not_found");
    let not_an_id = server.send(Method::PATCH, "/v1/rooms/not-a-uuid", Some(&host), Some(&change), &[]).await;
    assert_refused(&not_an_id, 404, "room_not_found");

    assert_refused(
        &server.send(Method::PATCH, &path, Some(&host), Some(&json!({})), &[]).await,
        422,
        "validation_failed",
    );
    let other_currency = json!({"nightly_price": {"amount_minor": 100, "currency": "USD"}});
    let answer = server.send(Method::PATCH, &path, Some(&host), Some(&other_currency), &[]).await;
    assert_refused(&answer, 422, "currency_change");

    assert_eq!(server.send(Method::DELETE, &path, Some(&host), None, &[]).await.status, 200);
    let answer = server.send(Method::PATCH, &path, Some(&host), Some(&json!({"capacity": 3})), &[]).await;
    assert_refused(&answer, 409, "room_delisted");
}

async fn delisting_a_room(backend: Backend) {
    let server = StayServer::start(backend).await;
    let host = server.token("host-1", "host");
    let guest = server.token("guest-1", "guest");
    let room_id = register_room(&server, &host).await;
    let path = format!("/v1/rooms/{room_id}");

    let (_, status) = reserve_and_settle(&server, &guest, &room_id, 10, 12, "tok_visa").await;
    assert_eq!(status, "confirmed");
    assert_refused(&server.send(Method::DELETE, &path, Some(&host), None, &[]).await, 409, "room_has_upcoming_stays");

    let other_host = server.token("host-2", "host");
    assert_refused(&server.send(Method::DELETE, &path, Some(&other_host), None, &[]).await, 403, "not_owner");
    assert_refused(&server.send(Method::DELETE, &path, Some(&guest), None, &[]).await, 403, "forbidden_role");
    let unknown = format!("/v1/rooms/{}", uuid::Uuid::new_v4());
    assert_refused(&server.send(Method::DELETE, &unknown, Some(&host), None, &[]).await, 404, "room_not_found");

    let free_room = register_room(&server, &host).await;
    let answer = server.send(Method::DELETE, &format!("/v1/rooms/{free_room}"), Some(&host), None, &[]).await;
    assert_eq!((answer.status, answer.field("room_id")), (200, free_room.as_str()), "{}", answer.text);
    let events = server.open_store().await.read_stream("Room", &free_room).await.expect("stream");
    assert_eq!(events.last().map(|e| e.event_type.as_str()), Some("RoomDelisted"));
}

async fn requesting_a_reservation(backend: Backend) {
    let server = StayServer::start(backend).await;
    let host = server.token("host-1", "host");
    let guest = server.token("guest-1", "guest");
    let room_id = register_room(&server, &host).await;

    let answer = server.post("/v1/reservations", &guest, &reservation_body(&room_id, 5, 8)).await;
    assert_eq!(answer.status, 202, "{}", answer.text);
    assert_eq!(answer.field("status"), "pending");
    let reservation_id = answer.field("reservation_id");
    assert_eq!(answer.header("location"), format!("/v1/reservations/{reservation_id}"));
    let events = server.open_store().await.read_stream("Reservation", reservation_id).await.expect("stream");
    assert_eq!(events[0].event_type, "ReservationRequested");
    assert_eq!(events[0].payload["ReservationRequested"]["card_token"], "tok_visa");
    assert_eq!(events[0].metadata_field("correlation_id"), Some(reservation_id));
    assert_eq!(events[0].metadata_field("actor"), Some("guest-1"));

    assert_refused(
        &server.post("/v1/reservations", &host, &reservation_body(&room_id, 5, 8)).await,
        403,
        "forbidden_role",
    );
    let unknown_room = reservation_body(&uuid::Uuid::new_v4().to_string(), 5, 8);
    assert_refused(&server.post("/v1/reservations", &guest, &unknown_room).await, 404, "room_not_found");

    let mut too_many = reservation_body(&room_id, 5, 8);
    too_many["guests"] = json!(3);
    assert_refused(&server.post("/v1/reservations", &guest, &too_many).await, 409, "too_many_guests");

    let mut past = reservation_body(&room_id, 5, 8);
    past["check_in"] = json!(Utc::now().date_naive().pred_opt().expect("yesterday").to_string());
    assert_refused(&server.post("/v1/reservations", &guest, &past).await, 409, "stay_in_past");

    let invalid = json!({"room_id": "nope", "check_in": "2026-02-30", "check_out": "soon", "guests": 0, "payment": {"card_token": ""}});
    let answer = server.post("/v1/reservations", &guest, &invalid).await;
    assert_refused(&answer, 422, "validation_failed");
    assert_eq!(answer.body["errors"].as_array().map(Vec::len), Some(5), "{}", answer.text);
    let backwards = reservation_body(&room_id, 8, 5);
    assert_refused(&server.post("/v1/reservations", &guest, &backwards).await, 422, "validation_failed");
    let too_long = reservation_body(&room_id, 5, 45);
    assert_refused(&server.post("/v1/reservations", &guest, &too_long).await, 422, "validation_failed");

    // Nights another reservation holds are refused at once.
    let (_, status) = reserve_and_settle(&server, &guest, &room_id, 20, 24, "tok_visa").await;
    assert_eq!(status, "confirmed");
    let overlapping = reservation_body(&room_id, 22, 26);
    assert_refused(&server.post("/v1/reservations", &guest, &overlapping).await, 409, "dates_unavailable");
}

async fn cancelling_a_reservation(backend: Backend) {
    let server = StayServer::start(backend).await;
    let host = server.token("host-1", "host");
    let guest = server.token("guest-1", "guest");
    let room_id = register_room(&server, &host).await;

    let pending = request_reservation(&server, &guest, &room_id, 5, 7).await;
    let path = format!("/v1/reservations/{pending}/cancel");
    let other_guest = server.token("guest-2", "guest");
    assert_refused(&server.send(Method::POST, &path, Some(&other_guest), None, &[]).await, 403, "not_owner");
    assert_refused(&server.send(Method::POST, &path, Some(&host), None, &[]).await, 403, "forbidden_role");
    let answer = server.send(Method::POST, &path, Some(&guest), None, &[]).await;
    assert_eq!(answer.status, 202, "{}", answer.text);
    assert_eq!((answer.field("reservation_id"), answer.field("status")), (pending.as_str(), "cancelling"));
    let events = server.open_store().await.read_stream("Reservation", &pending).await.expect("stream");
    assert!(events.iter().any(|e| e.event_type == "CancellationRequested"), "{events:?}");

    // An admin may cancel anyone's reservation.
    let (confirmed, status) = reserve_and_settle(&server, &guest, &room_id, 10, 12, "tok_visa").await;
    assert_eq!(status, "confirmed");
    let admin = server.token("ops-1", "admin");
    let answer =
        server.send(Method::POST, &format!("/v1/reservations/{confirmed}/cancel"), Some(&admin), None, &[]).await;
    assert_eq!(answer.status, 202, "{}", answer.text);

    let (rejected, status) = reserve_and_settle(&server, &guest, &room_id, 20, 22, "tok_declined").await;
    assert_eq!(status, "rejected");
    let answer =
        server.send(Method::POST, &format!("/v1/reservations/{rejected}/cancel"), Some(&guest), None, &[]).await;
    assert_refused(&answer, 409, "reservation_status_conflict");

    let unknown = format!("/v1/reservations/{}/cancel", uuid::Uuid::new_v4());
    assert_refused(&server.send(Method::POST, &unknown, Some(&guest), None, &[]).await, 404, "reservation_not_found");
}

async fn posting_a_review(backend: Backend) {
    let server = StayServer::start(backend).await;
    let host = server.token("host-1", "host");
    let guest = server.token("guest-1", "guest");
    let room_id = register_room(&server, &host).await;
    let path = format!("/v1/rooms/{room_id}/reviews");
    let (declined, _) = reserve_and_settle(&server, &guest, &room_id, 8, 9, "tok_declined").await;
    let unconfirmed = json!({"reservation_id": declined, "rating": 5, "comment": "Never went."});
    assert_refused(&server.post(&path, &guest, &unconfirmed).await, 409, "reservation_not_confirmed");
    let (reservation_id, status) = reserve_and_settle(&server, &guest, &room_id, 3, 5, "tok_visa").await;
    assert_eq!(status, "confirmed");
    let review = json!({"reservation_id": reservation_id, "rating": 5, "comment": "Lovely light."});

    assert_refused(&server.post(&path, &host, &review).await, 403, "forbidden_role");
    let other_guest = server.token("guest-2", "guest");
    assert_refused(&server.post(&path, &other_guest, &review).await, 403, "not_owner");
    let other_room = register_room(&server, &host).await;
    let answer = server.post(&format!("/v1/rooms/{other_room}/reviews"), &guest, &review).await;
    assert_refused(&answer, 422, "reservation_for_another_room");
    let unknown_room = format!("/v1/rooms/{}/reviews", uuid::Uuid::new_v4());
    assert_refused(&server.post(&unknown_room, &guest, &review).await, 404, "room_not_found");
    let unknown_reservation = json!({"reservation_id": uuid::Uuid::new_v4(), "rating": 4, "comment": "?"});
    assert_refused(&server.post(&path, &guest, &unknown_reservation).await, 404, "reservation_not_found");
    let invalid = json!({"reservation_id": reservation_id, "rating": 6, "comment": "x".repeat(2001)});
    let answer = server.post(&path, &guest, &invalid).await;
    assert_refused(&answer, 422, "validation_failed");
    assert_eq!(answer.body["errors"].as_array().map(Vec::len), Some(2), "{}", answer.text);

    let answer = server.post(&path, &guest, &review).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let review_id = answer.field("review_id");
    let expected = stay_domain::ReviewId::for_reservation(reservation_id.parse().expect("id")).to_string();
    assert_eq!(review_id, expected);
    let events = server.open_store().await.read_stream("Review", review_id).await.expect("stream");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].payload["ReviewPosted"]["rating"], 5);

    assert_refused(&server.post(&path, &guest, &review).await, 409, "already_reviewed");
}

async fn replying_to_a_review(backend: Backend) {
    let server = StayServer::start(backend).await;
    let host = server.token("host-1", "host");
    let guest = server.token("guest-1", "guest");
    let room_id = register_room(&server, &host).await;
    let (reservation_id, _) = reserve_and_settle(&server, &guest, &room_id, 3, 5, "tok_visa").await;
    let review = json!({"reservation_id": reservation_id, "rating": 4, "comment": "Good."});
    let review_id =
        server.post(&format!("/v1/rooms/{room_id}/reviews"), &guest, &review).await.field("review_id").to_owned();
    let path = format!("/v1/reviews/{review_id}/reply");
    let reply = json!({"comment": "Thank you, come again."});

    assert_refused(&server.post(&path, &guest, &reply).await, 403, "forbidden_role");
    let other_host = server.token("host-2", "host");
    assert_refused(&server.post(&path, &other_host, &reply).await, 403, "not_room_host");
    let unknown = format!("/v1/reviews/{}/reply", uuid::Uuid::new_v4());
    assert_refused(&server.post(&unknown, &host, &reply).await, 404, "review_not_found");
    let too_long = json!({"comment": "x".repeat(2001)});
    assert_refused(&server.post(&path, &host, &too_long).await, 422, "validation_failed");

    let answer = server.post(&path, &host, &reply).await;
    assert_eq!((answer.status, answer.field("review_id")), (200, review_id.as_str()), "{}", answer.text);
    let events = server.open_store().await.read_stream("Review", &review_id).await.expect("stream");
    assert_eq!(events.last().map(|e| e.event_type.as_str()), Some("ReplyPosted"));

    assert_refused(&server.post(&path, &host, &json!({"comment": "Again?"})).await, 409, "already_replied");
}

async fn tokens_are_checked(backend: Backend) {
    let server = StayServer::start(backend).await;
    let body = room_body();
    let no_token = server.send(Method::POST, "/v1/rooms", None, Some(&body), &[]).await;
    assert_refused(&no_token, 401, "unauthenticated");

    let valid = server.token("host-1", "host");
    let forged = format!("{}x", &valid[..valid.len() - 1]);
    assert_refused(&server.post("/v1/rooms", &forged, &body).await, 401, "unauthenticated");
    assert_refused(&server.post("/v1/rooms", "not.a.token", &body).await, 401, "unauthenticated");

    let unsigned = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let exp = Utc::now().timestamp() + 600;
        let claims = format!(r#"{{"sub":"host-1","role":"host","exp":{exp}}}"#);
        format!("{}.{}.", b64.encode(r#"{"alg":"none","typ":"JWT"}"#), b64.encode(claims))
    };
    assert_refused(&server.post("/v1/rooms", &unsigned, &body).await, 401, "unauthenticated");

    let sign = |claims: Value, secret: &str| {
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()))
            .expect("sign")
    };
    let secret = stay_tests::server::TEST_SECRET;
    let expired = sign(json!({"sub": "host-1", "role": "host", "exp": Utc::now().timestamp() - 3600}), secret);
    assert_refused(&server.post("/v1/rooms", &expired, &body).await, 401, "unauthenticated");
    let no_exp = sign(json!({"sub": "host-1", "role": "host"}), secret);
    assert_refused(&server.post("/v1/rooms", &no_exp, &body).await, 401, "unauthenticated");
    let other_secret = sign(json!({"sub": "host-1", "role": "host", "exp": Utc::now().timestamp() + 600}), "other");
    assert_refused(&server.post("/v1/rooms", &other_secret, &body).await, 401, "unauthenticated");
    let good = sign(json!({"sub": "host-1", "role": "host", "exp": Utc::now().timestamp() + 600}), secret);
    assert_eq!(server.post("/v1/rooms", &good, &body).await.status, 201);

    // Unknown routes are 404 problems whether or not a token is sent.
    assert_refused(&server.get("/v1/nowhere").await, 404, "route_not_found");
    let wrong_method = server.send(Method::PUT, "/v1/rooms", Some(&valid), None, &[]).await;
    assert_refused(&wrong_method, 405, "method_not_allowed");
}
