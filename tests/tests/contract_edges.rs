//! The edges of the contract (API.md, issue 11) against a real `stay serve` (on SQLite; paging also on
//! PostgreSQL): what comes in at the boundary of each rule is refused with a clear problem document,
//! never taken, never a 5xx.

use std::collections::BTreeSet;

use chrono::{Datelike, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use stay_tests::bodies::{day, room_body};
use stay_tests::server::TEST_SECRET;
use stay_tests::{Answer, Backend, StayServer};

fn reservation_body(room_id: &str, check_in: &str, check_out: &str) -> Value {
    json!({
        "room_id": room_id,
        "check_in": check_in,
        "check_out": check_out,
        "guests": 1,
        "payment": {"card_token": "tok_visa"}
    })
}

/// A stay of `nights` starting `from` days from today, as a body.
fn stay_body(room_id: &str, from: u64, nights: u64) -> Value {
    reservation_body(room_id, &day(from).to_string(), &day(from + nights).to_string())
}

fn assert_refused(answer: &Answer, status: u16, code: &str) {
    assert_eq!((answer.status, answer.code()), (status, code), "{}", answer.text);
    assert!(answer.is_problem(), "not a problem document: {:?} {}", answer.headers, answer.text);
}

/// The fields a 422 names.
fn fields(answer: &Answer) -> Vec<String> {
    let errors = answer.body["errors"].as_array().cloned().unwrap_or_default();
    errors.iter().map(|e| e["field"].as_str().unwrap_or("").to_owned()).collect()
}

async fn register_room(server: &StayServer, host: &str) -> String {
    let answer = server.post("/v1/rooms", host, &room_body()).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    answer.field("room_id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_currency_iso_4217_does_not_list_is_refused() {
    let server = StayServer::start(Backend::Sqlite).await;
    let host = server.token("host-1", "host");

    for code in ["ZZZ", "AAA", "HRK"] {
        let mut body = room_body();
        body["nightly_price"]["currency"] = json!(code);
        let answer = server.post("/v1/rooms", &host, &body).await;
        assert_refused(&answer, 422, "validation_failed");
        assert_eq!(fields(&answer), ["nightly_price"], "{}", answer.text);
        assert!(answer.body["errors"][0]["detail"].as_str().unwrap_or("").contains("ISO 4217"), "{}", answer.text);
    }

    let mut yen = room_body();
    yen["nightly_price"] = json!({"amount_minor": 9_000, "currency": "JPY"});
    let answer = server.post("/v1/rooms", &host, &yen).await;
    assert_eq!(answer.status, 201, "{}", answer.text);

    let room_id = register_room(&server, &host).await;
    let change = json!({"nightly_price": {"amount_minor": 100, "currency": "ZZZ"}});
    let answer = server.send(Method::PATCH, &format!("/v1/rooms/{room_id}"), Some(&host), Some(&change), &[]).await;
    assert_refused(&answer, 422, "validation_failed");
    assert_eq!(fields(&answer), ["nightly_price"], "{}", answer.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dates_are_taken_only_as_yyyy_mm_dd() {
    let server = StayServer::start(Backend::Sqlite).await;
    let host = server.token("host-1", "host");
    let guest = server.token("guest-1", "guest");
    let room_id = register_room(&server, &host).await;

    // Next January: a month and days of one digit, well within the booking horizon.
    let year = Utc::now().year() + 1;
    for (check_in, check_out, at_fault) in [
        (format!("{year}-1-5"), format!("{year}-01-07"), vec!["check_in"]),
        (format!("{year}-01-05"), format!("{year}-1-7"), vec!["check_out"]),
        (format!("{year}-1-05"), format!("{year}-01-7"), vec!["check_in", "check_out"]),
        (format!("+{year}-01-05"), format!("{year}-01-07"), vec!["check_in"]),
        (format!("{year}-01-05 "), format!("{year}-01-07"), vec!["check_in"]),
        (format!("{year}-01-05T00:00:00Z"), format!("{year}-01-07"), vec!["check_in"]),
        (format!("{year}-02-30"), format!("{year}-03-02"), vec!["check_in"]),
    ] {
        let answer = server.post("/v1/reservations", &guest, &reservation_body(&room_id, &check_in, &check_out)).await;
        assert_refused(&answer, 422, "validation_failed");
        assert_eq!(fields(&answer), at_fault, "{check_in} → {check_out}: {}", answer.text);
        assert!(answer.text.contains("YYYY-MM-DD"), "{}", answer.text);
    }
    let written_right = reservation_body(&room_id, &format!("{year}-01-05"), &format!("{year}-01-07"));
    let answer = server.post("/v1/reservations", &guest, &written_right).await;
    assert_eq!(answer.status, 202, "{}", answer.text);

    // The one time a query takes is as strict about its date.
    let admin = server.token("admin-1", "admin");
    let path = format!("/v1/admin/streams/Room/{room_id}?as_of={year}-1-5T00:00:00Z");
    let answer = server.send(Method::GET, &path, Some(&admin), None, &[]).await;
    assert_refused(&answer, 422, "validation_failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stay_ending_beyond_the_booking_horizon_is_refused() {
    let server = StayServer::start(Backend::Sqlite).await;
    let host = server.token("host-1", "host");
    let guest = server.token("guest-1", "guest");
    let room_id = register_room(&server, &host).await;

    let far = server.post("/v1/reservations", &guest, &reservation_body(&room_id, "9999-12-01", "9999-12-03")).await;
    assert_refused(&far, 422, "beyond_booking_horizon");
    assert_eq!(fields(&far), ["check_out"], "{}", far.text);
    assert!(far.field("detail").contains(&day(730).to_string()), "says the last check-out allowed: {}", far.text);

    // Two years (730 days) by default: a stay may end on the last day, not the day after.
    let beyond = server.post("/v1/reservations", &guest, &stay_body(&room_id, 729, 2)).await;
    assert_refused(&beyond, 422, "beyond_booking_horizon");
    let last = server.post("/v1/reservations", &guest, &stay_body(&room_id, 728, 2)).await;
    assert_eq!(last.status, 202, "{}", last.text);

    // Configured: `--booking-horizon`.
    let month = StayServer::start_with(Backend::Sqlite, &["--booking-horizon", "30d"]).await;
    let host = month.token("host-1", "host");
    let guest = month.token("guest-1", "guest");
    let room_id = register_room(&month, &host).await;
    assert_refused(
        &month.post("/v1/reservations", &guest, &stay_body(&room_id, 29, 2)).await,
        422,
        "beyond_booking_horizon",
    );
    assert_eq!(month.post("/v1/reservations", &guest, &stay_body(&room_id, 28, 2)).await.status, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_description_is_held_to_the_length_the_document_states() {
    let server = StayServer::start(Backend::Sqlite).await;
    let host = server.token("host-1", "host");
    let doc = server.get("/openapi.json").await.body;
    let stated = doc["components"]["schemas"]["RegisterRoomRequest"]["properties"]["description"]["maxLength"]
        .as_u64()
        .expect("the document states the description's maximum length");
    let stated = usize::try_from(stated).expect("small");

    let mut body = room_body();
    body["description"] = json!("é".repeat(stated));
    assert_eq!(server.post("/v1/rooms", &host, &body).await.status, 201);
    body["description"] = json!("é".repeat(stated + 1));
    let answer = server.post("/v1/rooms", &host, &body).await;
    assert_refused(&answer, 422, "validation_failed");
    assert_eq!(fields(&answer), ["description"], "{}", answer.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_cursor_is_refused_alike_by_every_list() {
    let server = StayServer::start(Backend::Sqlite).await;
    let guest = server.token("guest-1", "guest");
    let admin = server.token("admin-1", "admin");
    let lists = [
        ("/v1/rooms", None, "cursor"),
        ("/v1/me/reservations", Some(&guest), "cursor"),
        ("/v1/admin/payments", Some(&admin), "cursor"),
        ("/v1/admin/feed", Some(&admin), "after"),
    ];
    let mut types = BTreeSet::new();
    for (path, token, parameter) in lists {
        for garbage in ["garbage", "12ab", "1-2-3", "%00", "😀"] {
            let url = format!("{path}?{parameter}={garbage}");
            let answer = server.send(Method::GET, &url, token.map(String::as_str), None, &[]).await;
            assert_refused(&answer, 422, "validation_failed");
            assert_eq!(fields(&answer), [parameter], "{url}: {}", answer.text);
            types.insert(answer.field("type").to_owned());
        }
        // No cursor, or an empty one, is the first page.
        for url in [path.to_owned(), format!("{path}?{parameter}=")] {
            let answer = server.send(Method::GET, &url, token.map(String::as_str), None, &[]).await;
            assert_eq!(answer.status, 200, "{url}: {}", answer.text);
        }
    }
    assert_eq!(types.len(), 1, "one problem type for a bad cursor everywhere: {types:?}");
}

/// Reads `/v1/me/reservations` page after page, `limit` at a time, from the newest: every id, in order.
async fn all_pages(server: &StayServer, guest: &str, limit: Option<u32>, min_position: &str) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("/v1/me/reservations?min_position={min_position}&wait_ms=30000");
        if let Some(limit) = limit {
            url.push_str(&format!("&limit={limit}"));
        }
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let answer = server.send(Method::GET, &url, Some(guest), None, &[]).await;
        assert_eq!(answer.status, 200, "{url}: {}", answer.text);
        pages += 1;
        let items = answer.body["items"].as_array().expect("items");
        ids.extend(items.iter().map(|item| item["reservation_id"].as_str().expect("an id").to_owned()));
        match answer.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => {
                assert!(answer.body.get("next_cursor").is_some_and(Value::is_null), "{}", answer.text);
                return (ids, pages);
            }
        }
        assert!(pages < 1_000, "the pages never end");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guests_reservations_page_through_a_cursor_with_no_gap_and_no_repeat_on_sqlite() {
    a_guests_reservations_page_through_a_cursor(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guests_reservations_page_through_a_cursor_with_no_gap_and_no_repeat_on_postgres() {
    a_guests_reservations_page_through_a_cursor(Backend::Postgres).await;
}

async fn a_guests_reservations_page_through_a_cursor(backend: Backend) {
    const RESERVATIONS: u64 = 105;
    let server = StayServer::start(backend).await;
    let host = server.token("host-1", "host");
    let guest = server.token("guest-1", "guest");
    let room_id = register_room(&server, &host).await;

    // One night each, back to back; without `Prefer: wait`, so each answers once recorded.
    let mut made = Vec::new();
    let mut position = String::new();
    for night in 0..RESERVATIONS {
        let answer = server.post("/v1/reservations", &guest, &stay_body(&room_id, 10 + night, 1)).await;
        assert_eq!(answer.status, 202, "{}", answer.text);
        made.push(answer.field("reservation_id").to_owned());
        position = answer.field("position").to_owned();
    }
    let newest_first: Vec<String> = made.iter().rev().cloned().collect();

    // The default page stops at 100, and says where the rest is.
    let (ids, pages) = all_pages(&server, &guest, None, &position).await;
    assert_eq!(pages, 2, "100 and then 5");
    assert_eq!(ids, newest_first);

    // Small pages: every reservation once, newest first.
    let (ids, pages) = all_pages(&server, &guest, Some(7), &position).await;
    assert_eq!(pages, 16, "15 full pages and an empty last one");
    assert_eq!(ids, newest_first);

    // A reservation made while a guest pages is not repeated, and none is skipped.
    let first = server
        .send(Method::GET, &format!("/v1/me/reservations?limit=10&min_position={position}"), Some(&guest), None, &[])
        .await;
    let cursor = first.body["next_cursor"].as_str().expect("more pages").to_owned();
    let newer = server.post("/v1/reservations", &guest, &stay_body(&room_id, 300, 1)).await;
    assert_eq!(newer.status, 202, "{}", newer.text);
    let rest = server
        .send(
            Method::GET,
            &format!("/v1/me/reservations?limit=1000&cursor={cursor}&min_position={}", newer.field("position")),
            Some(&guest),
            None,
            &[],
        )
        .await;
    assert_eq!(rest.status, 200, "{}", rest.text);
    let seen: Vec<String> = first.body["items"]
        .as_array()
        .into_iter()
        .chain(rest.body["items"].as_array())
        .flatten()
        .map(|item| item["reservation_id"].as_str().expect("an id").to_owned())
        .collect();
    assert_eq!(seen, newest_first);

    // Another guest's pages hold none of them.
    let other = server.token("guest-2", "guest");
    let (ids, _) = all_pages(&server, &other, Some(50), newer.field("position")).await;
    assert!(ids.is_empty(), "{ids:?}");
}

/// A token with these claims, signed with the test server's secret.
fn signed(claims: &Value) -> String {
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    jsonwebtoken::encode(&header, claims, &jsonwebtoken::EncodingKey::from_secret(TEST_SECRET.as_bytes()))
        .expect("sign")
}

fn now() -> i64 {
    Utc::now().timestamp()
}

/// What `stay token` prints for these arguments, signed with the test server's secret.
fn stay_token(args: &[&str]) -> String {
    let output = std::process::Command::new(stay_tests::server::stay_binary())
        .arg("token")
        .args(args)
        .args(["--jwt-secret", TEST_SECRET])
        .env_remove("STAY_JWT_SECRET")
        .output()
        .expect("run stay token");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8").trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_not_valid_yet_or_living_too_long_are_refused() {
    let server = StayServer::start(Backend::Sqlite).await;
    let server = &server;
    let me =
        |token: String| async move { server.send(Method::GET, "/v1/me/notifications", Some(&token), None, &[]).await };
    let hour = 3_600;
    let day = 24 * hour;

    for (claims, why) in [
        (json!({"sub": "u", "role": "guest", "exp": now() + hour, "nbf": now() + 600}), "nbf"),
        (json!({"sub": "u", "role": "guest", "iat": now(), "exp": now() + day + 60}), "longer"),
        (json!({"sub": "u", "role": "guest", "iat": now() - 300 * day, "exp": now() + hour}), "longer"),
        (json!({"sub": "u", "role": "guest", "exp": now() + 365 * day}), "longer"),
        (json!({"sub": "u", "role": "guest", "iat": now() + 30 * day, "exp": now() + 30 * day + hour}), "iat"),
    ] {
        let answer = me(signed(&claims)).await;
        assert_refused(&answer, 401, "unauthenticated");
        assert!(answer.field("detail").contains(why), "{claims}: {}", answer.text);
    }
    for claims in [
        json!({"sub": "u", "role": "guest", "exp": now() + hour, "nbf": now() - 600}),
        json!({"sub": "u", "role": "guest", "exp": now() + hour, "nbf": now() + 2}),
        json!({"sub": "u", "role": "guest", "iat": now(), "exp": now() + day}),
    ] {
        assert_eq!(me(signed(&claims)).await.status, 200, "{claims}");
    }
    // What `stay token` issues by default is accepted; a week-long one only where allowed.
    assert_eq!(me(stay_token(&["--sub", "guest-1", "--role", "guest"])).await.status, 200);
    let week = stay_token(&["--sub", "guest-1", "--role", "guest", "--ttl", "7d"]);
    assert_refused(&me(week.clone()).await, 401, "unauthenticated");

    let lenient = StayServer::start_with(Backend::Sqlite, &["--max-token-lifetime", "8d"]).await;
    let answer = lenient.send(Method::GET, "/v1/me/notifications", Some(&week), None, &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
}
