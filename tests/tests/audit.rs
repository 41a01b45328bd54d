//! Audit against a real `stay serve`: `stay events` (a stream's history and state as of a time, a
//! correlation's causation tree, the feed followed live) and `GET /v1/admin/correlations/{id}`,
//! on SQLite and PostgreSQL.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Days, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use stay_tests::server::{stay_binary, TEST_SECRET};
use stay_tests::{Backend, StayServer};

const WAIT: (&str, &str) = ("prefer", "wait=25");

fn day(offset: u64) -> String {
    Utc::now().date_naive().checked_add_days(Days::new(offset)).expect("date").to_string()
}

/// Runs `stay events ARGS` against `server`: success, standard output, standard error.
fn events(server: &StayServer, args: &[&str]) -> (bool, String, String) {
    let dir = server.data_dir().to_str().expect("utf-8 path").to_owned();
    let output = Command::new(stay_binary())
        .arg("events")
        .args(args)
        .args(["--url", server.url(), "--data-dir", &dir, "--jwt-secret", TEST_SECRET])
        .env_remove("STAY_STORE")
        .output()
        .expect("run stay events");
    let (out, err) =
        (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned());
    (output.status.success(), out, err)
}

/// `stay events ARGS --json`, parsed; panics with the output when it fails.
fn events_json(server: &StayServer, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (ok, out, err) = events(server, &all);
    assert!(ok, "stay events {args:?} failed: {out}{err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// A room, and a reservation of it that was confirmed, reviewed, replied to and then cancelled.
struct Story {
    room_id: String,
    reservation_id: String,
    admin: String,
}

async fn story(server: &StayServer) -> Story {
    let host = server.token("host-1", "host");
    let guest = server.token("guest-1", "guest");
    let room = json!({"name": "Ledger", "address": "1 Audit Row", "nightly_price": {"amount_minor": 9000, "currency": "EUR"}, "capacity": 2});
    let registered = server.post("/v1/rooms", &host, &room).await;
    assert_eq!(registered.status, 201, "{}", registered.text);
    let room_id = registered.field("room_id").to_owned();
    let body = json!({"room_id": room_id, "check_in": day(20), "check_out": day(22), "guests": 2, "payment": {"card_token": "tok_visa"}});
    let reserved = server.send(Method::POST, "/v1/reservations", Some(&guest), Some(&body), &[WAIT]).await;
    assert_eq!((reserved.status, reserved.field("status")), (200, "confirmed"), "{}", reserved.text);
    let reservation_id = reserved.field("reservation_id").to_owned();

    let review = json!({"reservation_id": reservation_id, "rating": 5, "comment": "Quiet and clean"});
    let posted = server.post(&format!("/v1/rooms/{room_id}/reviews"), &guest, &review).await;
    assert_eq!(posted.status, 201, "{}", posted.text);
    let replied = server
        .post(&format!("/v1/reviews/{}/reply", posted.field("review_id")), &host, &json!({"comment": "Thank you"}))
        .await;
    assert_eq!(replied.status, 200, "{}", replied.text);

    // Apart in time from the confirmation, so a time between them is easy to name.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let path = format!("/v1/reservations/{reservation_id}/cancel");
    let cancelled = server.send(Method::POST, &path, Some(&guest), None, &[WAIT]).await;
    assert_eq!((cancelled.status, cancelled.field("status")), (200, "cancelled"), "{}", cancelled.text);
    let admin = server.token("ops", "admin");
    // The saga records its end after the reservation's last event: wait for it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let saga =
            server.send(Method::GET, &format!("/v1/admin/sagas/{reservation_id}"), Some(&admin), None, &[]).await;
        if saga.field("status") == "compensated" {
            break;
        }
        assert!(Instant::now() < deadline, "the saga never finished: {}", saga.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Story { room_id, reservation_id, admin }
}

/// The whole feed, read through the admin route (the test's oracle).
async fn whole_feed(server: &StayServer, admin: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let path = format!("/v1/admin/feed?after={after}&limit=1000");
        let page = server.send(Method::GET, &path, Some(admin), None, &[]).await;
        assert_eq!(page.status, 200, "{}", page.text);
        let items = page.body["items"].as_array().expect("items").clone();
        if items.is_empty() {
            return all;
        }
        after = page.field("next").to_owned();
        all.extend(items);
    }
}

async fn history_and_state_as_of_a_time(backend: Backend) {
    let server = StayServer::start(backend).await;
    let story = story(&server).await;
    let id = &story.reservation_id;

    let now = events_json(&server, &[&format!("Reservation/{id}")]);
    assert_eq!(
        (now["aggregate_type"].as_str(), now["aggregate_id"].as_str()),
        (Some("Reservation"), Some(id.as_str()))
    );
    let types: Vec<&str> =
        now["events"].as_array().expect("events").iter().filter_map(|e| e["event_type"].as_str()).collect();
    assert_eq!(
        types,
        ["ReservationRequested", "ReservationConfirmed", "CancellationRequested", "ReservationCancelled"]
    );
    let stored = server.open_store().await.read_stream("Reservation", id).await.expect("the stream");
    for (shown, stored) in now["events"].as_array().expect("events").iter().zip(&stored) {
        assert_eq!(shown["sequence"], json!(stored.sequence), "{shown}");
        assert_eq!(shown["position"], json!(stored.position.to_string()), "{shown}");
        assert_eq!(shown["payload"], stored.payload, "{shown}");
        assert_eq!(shown["metadata"], stored.metadata, "{shown}");
    }
    assert_eq!(now["state"]["details"]["status"], "cancelled", "{now}");
    assert_eq!(now["as_of"], Value::Null);

    // Between the confirmation and the cancellation request: confirmed, two events.
    let time = |i: usize| stored[i].recorded_at;
    let between: DateTime<Utc> = time(1) + (time(2) - time(1)) / 2;
    assert!(time(1) < between && between < time(2), "{} {} {}", time(1), between, time(2));
    let as_of = between.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let then = events_json(&server, &[&format!("Reservation:{id}"), "--as-of", &as_of]);
    let types: Vec<&str> =
        then["events"].as_array().expect("events").iter().filter_map(|e| e["event_type"].as_str()).collect();
    assert_eq!(types, ["ReservationRequested", "ReservationConfirmed"], "{then}");
    assert_eq!(then["state"]["details"]["status"], "confirmed", "{then}");
    assert_eq!(then["as_of"], json!(as_of));
    // A time with an offset is the same instant.
    let offset = between.with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).expect("offset")).to_rfc3339();
    let same = events_json(&server, &[&format!("Reservation/{id}"), "--as-of", &offset]);
    assert_eq!(same["events"], then["events"]);

    // People get a table and the state.
    let (ok, out, err) = events(&server, &[&format!("Reservation/{id}"), "--as-of", &as_of]);
    assert!(ok, "{out}{err}");
    assert!(out.contains(&format!("Reservation {id}: 2 events (as of {as_of})")), "{out}");
    assert!(out.contains("ReservationConfirmed") && !out.contains("CancellationRequested"), "{out}");
    assert!(out.contains("\"confirmed\""), "{out}");

    // The id alone: a room's is unique; a reservation's is also its saga's; an unknown one is none.
    let room = events_json(&server, &[&story.room_id]);
    assert_eq!(room["aggregate_type"], "Room", "{room}");
    assert_eq!(room["events"][0]["event_type"], "RoomRegistered", "{room}");
    let (ok, out, err) = events(&server, &[id]);
    assert!(!ok, "{out}");
    assert!(err.contains(&format!("Reservation/{id}")) && err.contains(&format!("ReservationSaga/{id}")), "{err}");
    let (ok, _, err) = events(&server, &["0190c7a2-4c1e-7d3a-9f1b-2a3c4d5e6f70"]);
    assert!(!ok && err.contains("no aggregate of any type"), "{err}");
    let (ok, _, err) = events(&server, &["Ship/1"]);
    assert!(!ok && err.contains("no aggregate type is called"), "{err}");
    let (ok, _, err) = events(&server, &[&format!("Reservation/{id}"), "--as-of", "yesterday"]);
    assert!(!ok && err.contains("RFC 3339"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stay_events_shows_a_reservations_history_and_its_state_as_of_a_time_on_sqlite() {
    history_and_state_as_of_a_time(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stay_events_shows_a_reservations_history_and_its_state_as_of_a_time_on_postgres() {
    history_and_state_as_of_a_time(Backend::Postgres).await;
}

/// The correlation's events once the read model shows them all (the oracle: the whole feed).
async fn settled_correlation(server: &StayServer, story: &Story) -> (Value, Vec<Value>) {
    let id = &story.reservation_id;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Until the correlations model has the reservation's first event, the route answers 404.
        let (ok, out, err) = events(server, &["--correlation", id, "--json"]);
        if !ok {
            assert!(err.contains("correlation_not_found"), "stay events --correlation failed: {out}{err}");
            assert!(Instant::now() < deadline, "the correlation never showed: {err}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let shown: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
        // Read after the route, so the feed holds at least what the route showed.
        let expected: Vec<Value> = whole_feed(server, &story.admin)
            .await
            .into_iter()
            .filter(|e| e["metadata"]["correlation_id"] == json!(id))
            .collect();
        let positions: Vec<&Value> = expected.iter().map(|e| &e["position"]).collect();
        let shown_positions: Vec<&Value> =
            shown["events"].as_array().into_iter().flatten().map(|e| &e["position"]).collect();
        if shown_positions == positions {
            return (shown, expected);
        }
        assert!(Instant::now() < deadline, "the correlation never showed every event: {shown}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn correlation_tree_of_a_confirmed_then_cancelled_reservation(backend: Backend) {
    let server = StayServer::start(backend).await;
    let story = story(&server).await;
    let id = story.reservation_id.as_str();
    let (shown, expected) = settled_correlation(&server, &story).await;
    assert_eq!(shown["correlation_id"], json!(id));

    // Every event matches the log: place, type, time and metadata.
    let shown_events = shown["events"].as_array().expect("events");
    for (event, logged) in shown_events.iter().zip(&expected) {
        for field in ["position", "aggregate_type", "aggregate_id", "sequence", "event_type"] {
            assert_eq!(event[field], logged[field], "{field}: {event} vs {logged}");
        }
        for field in ["causation_id", "command_id", "actor"] {
            assert_eq!(event[field], logged["metadata"][field], "{field}: {event} vs {logged}");
        }
        let (a, b) = (event["recorded_at"].as_str().expect("time"), logged["recorded_at"].as_str().expect("time"));
        let parse = |t: &str| DateTime::parse_from_rfc3339(t).expect("RFC 3339");
        assert_eq!(parse(a), parse(b), "{event} vs {logged}");
        let name = format!(
            "{}:{}@{}",
            logged["aggregate_type"].as_str().expect("type"),
            logged["aggregate_id"].as_str().expect("id"),
            logged["sequence"]
        );
        assert_eq!(event["id"], json!(name));
    }

    // Every aggregate the reservation touched, with its events in order.
    let of = |aggregate_type: &str| -> Vec<String> {
        shown_events
            .iter()
            .filter(|e| e["aggregate_type"] == aggregate_type)
            .map(|e| format!("{}#{}", e["event_type"].as_str().expect("type"), e["sequence"]))
            .collect()
    };
    assert_eq!(
        of("Reservation"),
        ["ReservationRequested#1", "ReservationConfirmed#2", "CancellationRequested#3", "ReservationCancelled#4"]
    );
    let room: Vec<String> = of("Room").iter().map(|e| e.split('#').next().unwrap_or("").to_owned()).collect();
    assert_eq!(room, ["NightsHeld", "BookingConfirmed", "BookingReleased"], "{shown}");
    let payment: Vec<String> = of("Payment").iter().map(|e| e.split('#').next().unwrap_or("").to_owned()).collect();
    assert_eq!(payment, ["ChargeRequested", "ChargeApproved", "PaymentRefunded"], "{shown}");
    assert_eq!(of("Review"), ["ReviewPosted#1", "ReplyPosted#2"]);
    let saga = of("ReservationSaga");
    assert!(saga.first().is_some_and(|e| e == "SagaStarted#1"), "{saga:?}");
    assert!(saga.iter().any(|e| e.starts_with("SagaCompleted")), "{saga:?}");
    let touched: BTreeSet<(String, String)> = shown["aggregates"]
        .as_array()
        .expect("aggregates")
        .iter()
        .map(|a| {
            (a["aggregate_type"].as_str().expect("type").to_owned(), a["aggregate_id"].as_str().expect("id").to_owned())
        })
        .collect();
    let types: BTreeSet<&str> = touched.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, BTreeSet::from(["Payment", "Reservation", "ReservationSaga", "Review", "Room"]), "{touched:?}");
    assert!(touched.contains(&("Room".to_owned(), story.room_id.clone())), "{touched:?}");
    assert_eq!(touched.len(), 5, "one aggregate of each type: {touched:?}");

    // Causation: the four requests are the roots; every other event hangs under the event that
    // caused it, and its causation id names that event.
    let by_id = |name: &str| shown_events.iter().find(|e| e["id"] == json!(name));
    let mut roots = Vec::new();
    for event in shown_events {
        match event["parent"].as_str() {
            None => roots.push(event["event_type"].as_str().expect("type").to_owned()),
            Some(parent) => {
                assert_eq!(event["causation_id"], json!(parent), "{event}");
                assert!(by_id(parent).is_some(), "the parent of {event} is not in the correlation");
            }
        }
    }
    assert_eq!(roots, ["ReservationRequested", "ReviewPosted", "ReplyPosted", "CancellationRequested"], "{shown}");
    let parent_of = |name: &str| by_id(name).and_then(|e| e["parent"].as_str()).unwrap_or("").to_owned();
    // The saga starts from the request, and turns to compensate from the cancellation request.
    assert_eq!(parent_of(&format!("ReservationSaga:{id}@1")), format!("Reservation:{id}@1"));
    let after_cancel = shown_events
        .iter()
        .filter(|e| e["aggregate_type"] == "ReservationSaga")
        .find(|e| e["parent"] == json!(format!("Reservation:{id}@3")));
    assert!(after_cancel.is_some(), "no saga event follows from the cancellation request: {shown}");
    // What the saga did to the other aggregates follows from its own events.
    for event in shown_events.iter().filter(|e| e["actor"] == "saga" && e["aggregate_type"] != "ReservationSaga") {
        let parent = event["parent"].as_str().expect("a parent");
        assert!(parent.starts_with(&format!("ReservationSaga:{id}@")), "{event}");
    }

    // People get an indented tree: the saga's first event under the request's.
    let (ok, out, err) = events(&server, &["--correlation", id]);
    assert!(ok, "{out}{err}");
    let line = |what: &str| out.lines().find(|l| l.contains(what)).unwrap_or_else(|| panic!("no {what}: {out}"));
    let indent = |l: &str| l.find(['└', '├']).unwrap_or(0);
    let requested = line("ReservationRequested");
    let started = line("SagaStarted");
    assert!(indent(started) > indent(requested), "{out}");
    assert!(out.contains(&format!("correlation {id}: {} events across 5 aggregates", expected.len())), "{out}");
    assert_eq!(out.lines().filter(|l| l.contains("request ")).count(), 4, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stay_events_correlation_shows_everything_a_reservation_caused_on_sqlite() {
    correlation_tree_of_a_confirmed_then_cancelled_reservation(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stay_events_correlation_shows_everything_a_reservation_caused_on_postgres() {
    correlation_tree_of_a_confirmed_then_cancelled_reservation(Backend::Postgres).await;
}

async fn register_room(server: &StayServer, name: &str) -> String {
    let host = server.token("host-1", "host");
    let room = json!({"name": name, "address": "2 Feed Lane", "nightly_price": {"amount_minor": 5000, "currency": "EUR"}, "capacity": 1});
    let answer = server.post("/v1/rooms", &host, &room).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    answer.field("room_id").to_owned()
}

async fn feed_after_and_follow(backend: Backend) {
    let server = StayServer::start(backend).await;
    let admin = server.token("ops", "admin");
    for name in ["One", "Two", "Three"] {
        register_room(&server, name).await;
    }
    // On PostgreSQL the feed shows a commit once no earlier transaction is open (other tests share
    // the server), so wait until the three registrations are there.
    let mut feed = whole_feed(&server, &admin).await;
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while feed.len() < 3 && std::time::Instant::now() < give_up {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        feed = whole_feed(&server, &admin).await;
    }
    assert!(feed.len() >= 3, "{feed:?}");
    let first = feed[0]["position"].as_str().expect("position");

    // --after: the feed's own items, one JSON object per line.
    let (ok, out, err) = events(&server, &["--feed", "--after", first, "--json"]);
    assert!(ok, "{out}{err}");
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(lines, feed[1..]);
    let (ok, out, _) = events(&server, &["--feed", "--limit", "2", "--json"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 2, "{out}");
    // People get aligned lines.
    let (ok, out, err) = events(&server, &["--feed"]);
    assert!(ok, "{out}{err}");
    let rows: Vec<&str> = out.lines().filter(|l| l.contains("RoomRegistered")).collect();
    assert_eq!(rows.len(), feed.len(), "{out}");
    let column = |l: &str| l.find("RoomRegistered");
    assert!(rows.iter().all(|r| column(r) == column(rows[0])), "{out}");

    // --follow sees what is recorded after it started.
    let dir = server.data_dir().to_str().expect("utf-8 path").to_owned();
    let last = feed[feed.len() - 1]["position"].as_str().expect("position");
    let mut follower = Command::new(stay_binary())
        .args(["events", "--feed", "--follow", "--json", "--after", last])
        .args(["--url", server.url(), "--data-dir", &dir, "--jwt-secret", TEST_SECRET])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start stay events --follow");
    let stdout = follower.stdout.take().expect("its output");
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // Let it catch up (nothing after `last`) before the new event is recorded.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(lines_rx.try_recv().is_err(), "nothing was recorded after {last} yet");
    let room_id = register_room(&server, "Four").await;
    let seen = lines_rx.recv_timeout(Duration::from_secs(20));
    let _ = follower.kill();
    let _ = follower.wait();
    let seen: Value = serde_json::from_str(&seen.expect("the follower printed the new event")).expect("JSON");
    assert_eq!(
        (seen["event_type"].as_str(), seen["aggregate_id"].as_str()),
        (Some("RoomRegistered"), Some(room_id.as_str()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stay_events_feed_pages_after_a_position_and_follows_live_on_sqlite() {
    feed_after_and_follow(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stay_events_feed_pages_after_a_position_and_follows_live_on_postgres() {
    feed_after_and_follow(Backend::Postgres).await;
}

async fn correlation_route_refusals(backend: Backend) {
    let server = StayServer::start(backend).await;
    let room_id = register_room(&server, "Refusals").await;
    let admin = server.token("ops", "admin");
    // On PostgreSQL the feed shows an event once no older transaction is running: wait for it.
    let mut feed = whole_feed(&server, &admin).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while feed.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        feed = whole_feed(&server, &admin).await;
    }
    assert!(!feed.is_empty(), "the room never reached the feed");
    let correlation = feed[0]["metadata"]["correlation_id"].as_str().expect("a correlation").to_owned();
    let position = feed[0]["position"].as_str().expect("position").to_owned();
    let path = format!("/v1/admin/correlations/{correlation}");

    let fresh = format!("{path}?min_position={position}&wait_ms=15000");
    let found = server.send(Method::GET, &fresh, Some(&admin), None, &[]).await;
    assert_eq!(found.status, 200, "{}", found.text);
    assert_eq!(found.body["events"][0]["aggregate_id"], json!(room_id), "{}", found.text);
    assert_eq!(found.body["events"][0]["parent"], Value::Null, "{}", found.text);

    let anonymous = server.send(Method::GET, &path, None, None, &[]).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.text);
    assert!(anonymous.is_problem(), "{}", anonymous.text);
    for role in ["guest", "host"] {
        let token = server.token("someone", role);
        let refused = server.send(Method::GET, &path, Some(&token), None, &[]).await;
        assert_eq!(refused.status, 403, "{role}: {}", refused.text);
        assert!(refused.is_problem(), "{}", refused.text);
    }
    for unknown in ["0190c7a2-4c1e-7d3a-9f1b-2a3c4d5e6f70", "not-an-id"] {
        let answer =
            server.send(Method::GET, &format!("/v1/admin/correlations/{unknown}"), Some(&admin), None, &[]).await;
        assert_eq!((answer.status, answer.code()), (404, "correlation_not_found"), "{}", answer.text);
        assert!(answer.is_problem(), "{}", answer.text);
    }
    let bad = server.send(Method::GET, &format!("{path}?min_position=x"), Some(&admin), None, &[]).await;
    assert_eq!(bad.status, 422, "{}", bad.text);
    let (ok, _, err) = events(&server, &["--correlation", "0190c7a2-4c1e-7d3a-9f1b-2a3c4d5e6f70"]);
    assert!(!ok && err.contains("correlation_not_found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_correlation_route_is_for_admins_and_answers_404_for_unknown_ids_on_sqlite() {
    correlation_route_refusals(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_correlation_route_is_for_admins_and_answers_404_for_unknown_ids_on_postgres() {
    correlation_route_refusals(Backend::Postgres).await;
}
