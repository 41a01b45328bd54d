//! The edges of the contract (API.md, issue 11) against a real `stay serve` on SQLite: what comes
//! in at the boundary of each rule is refused with a clear problem document, never taken, never a 5xx.

use std::collections::BTreeSet;

use chrono::{Datelike, Days, NaiveDate, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use stay_tests::{Answer, Backend, StayServer};

fn day(offset: u64) -> NaiveDate {
    Utc::now().date_naive().checked_add_days(Days::new(offset)).expect("date")
}

fn room_body() -> Value {
    json!({
        "name": "Loft by the river",
        "description": "Quiet, bright, two windows.",
        "address": "1 Quay Street, Porto",
        "nightly_price": {"amount_minor": 12000, "currency": "EUR"},
        "capacity": 2
    })
}

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
    let admin = server.token("admin-1", "admin");
    let lists = [
        ("/v1/rooms", None, "cursor"),
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
