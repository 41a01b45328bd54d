//! `stay serve --role …`: the roles as separate processes on one PostgreSQL database, and the
//! `stay projections` command against a server's data.

use std::process::Command;
use std::time::Duration;

use chrono::{Days, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use stay_tests::server::stay_binary;
use stay_tests::{Backend, StayServer};

fn day(offset: u64) -> String {
    Utc::now().date_naive().checked_add_days(Days::new(offset)).expect("date").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_runs_in_its_own_process_on_one_postgres_database() {
    let commands = StayServer::start_with(Backend::Postgres, &["--role", "command-api"]).await;
    let _saga = commands.join(&["--role", "saga"]).await;
    let _projector = commands.join(&["--role", "projector"]).await;
    let queries = commands.join(&["--role", "query-api"]).await;

    // The command process has no query routes, and the query process no command routes.
    assert_eq!(commands.get("/v1/rooms").await.status, 405);
    let host = commands.token("host-1", "host");
    let room = json!({"name": "Split", "address": "4 Process Road", "nightly_price": {"amount_minor": 8000, "currency": "EUR"}, "capacity": 2});
    assert_eq!(queries.post("/v1/rooms", &host, &room).await.status, 405);

    let registered = commands.post("/v1/rooms", &host, &room).await;
    assert_eq!(registered.status, 201, "{}", registered.text);
    let room_id = registered.field("room_id").to_owned();
    let guest = commands.token("guest-1", "guest");
    let body = json!({"room_id": room_id, "check_in": day(9), "check_out": day(11), "guests": 2, "payment": {"card_token": "tok_visa"}});
    // The saga runs in another process; the command process sees its outcome in the aggregates.
    let reserved =
        commands.send(Method::POST, "/v1/reservations", Some(&guest), Some(&body), &[("prefer", "wait=20")]).await;
    assert_eq!((reserved.status, reserved.field("status")), (200, "confirmed"), "{}", reserved.text);

    // The projector (a third process) builds roomview; the query process serves it.
    let path = format!("/v1/rooms/{room_id}?min_position={}&wait_ms=15000", reserved.field("position"));
    let view = queries.get(&path).await;
    assert_eq!(view.status, 200, "{}", view.text);
    assert_eq!(view.body["reservations"]["confirmed"], 1);
    assert_eq!(view.body["payments"]["charged"]["amount_minor"], 16_000);
}

fn stay(args: &[&str]) -> (bool, String) {
    let output = Command::new(stay_binary()).args(args).env_remove("STAY_STORE").output().expect("run stay");
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stay_projections_shows_status_and_rebuilds_with_plain_progress_lines() {
    let server = StayServer::start(Backend::Sqlite).await;
    let host = server.token("host-1", "host");
    for i in 0..5 {
        let room = json!({"name": format!("Room {i}"), "address": "5 Cli Street", "nightly_price": {"amount_minor": 1000, "currency": "EUR"}, "capacity": 1});
        assert_eq!(server.post("/v1/rooms", &host, &room).await.status, 201);
    }
    let dir = server.data_dir().to_str().expect("utf-8 path").to_owned();

    let (ok, text) = stay(&["projections", "status", "--data-dir", &dir, "--json"]);
    assert!(ok, "{text}");
    let status: Value = serde_json::from_str(text.trim()).expect("JSON status");
    let names: Vec<&str> = status.as_array().expect("list").iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["roomview", "reservations", "notifications", "reviews", "sagas", "correlations"]);

    // Not a terminal: plain lines, ending with the switch.
    let (ok, text) = stay(&["projections", "rebuild", "roomview", "--data-dir", &dir]);
    assert!(ok, "{text}");
    assert!(text.contains("roomview: version 2 is live"), "{text}");
    assert!(!text.contains('\r'), "no progress bar when not on a terminal: {text:?}");

    let (ok, text) = stay(&["projections", "rebuild", "reviews", "--data-dir", &dir, "--json"]);
    assert!(ok, "{text}");
    let done: Value = serde_json::from_str(text.trim()).expect("JSON rebuild");
    assert_eq!((done["name"].as_str(), done["version"].as_i64()), (Some("reviews"), Some(2)));

    let (ok, text) = stay(&["projections", "rebuild", "nonsense", "--data-dir", &dir]);
    assert!(!ok && text.contains("no read model is called"), "{text}");

    // The server went on answering from the rebuilt version.
    let page = server.get("/v1/rooms").await;
    assert_eq!(page.body["items"].as_array().map(Vec::len), Some(5), "{}", page.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stay_saga_lists_shows_and_refuses_to_resume_a_finished_saga() {
    let server = StayServer::start(Backend::Sqlite).await;
    let host = server.token("host-1", "host");
    let room = json!({"name": "Cli", "address": "6 Saga Street", "nightly_price": {"amount_minor": 1000, "currency": "EUR"}, "capacity": 2});
    let room_id = server.post("/v1/rooms", &host, &room).await.field("room_id").to_owned();
    let guest = server.token("guest-1", "guest");
    let body = json!({"room_id": room_id, "check_in": day(4), "check_out": day(6), "guests": 1, "payment": {"card_token": "tok_declined"}});
    let declined =
        server.send(Method::POST, "/v1/reservations", Some(&guest), Some(&body), &[("prefer", "wait=20")]).await;
    let id = declined.field("reservation_id").to_owned();
    let (url, dir) = (server.url().to_owned(), server.data_dir().to_str().expect("utf-8").to_owned());
    let secret = stay_tests::server::TEST_SECRET;
    let with_server = |args: &[&str]| {
        let mut all: Vec<&str> = vec!["saga"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--url", &url, "--data-dir", &dir, "--jwt-secret", secret]);
        stay(&all)
    };

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (ok, text) = with_server(&["ls", "--status", "compensated", "--json"]);
        assert!(ok, "{text}");
        if text.contains(&id) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the saga never showed as compensated: {text}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (ok, text) = with_server(&["show", &id]);
    assert!(ok, "{text}");
    assert!(
        text.contains("compensated") && text.contains("SagaCompleted") && text.contains("CompensationStarted"),
        "{text}"
    );
    let (ok, text) = with_server(&["retry", &id]);
    assert!(!ok && text.contains("saga_not_parked"), "{text}");
}

/// How often the query process's watcher of `model` has read its progress from the database.
async fn watcher_reads(queries: &StayServer, model: &str) -> f64 {
    let metrics = queries.get("/metrics").await;
    let projection = format!("projection=\"{model}\"");
    metrics
        .text
        .lines()
        .filter(|line| line.starts_with("stay_query_progress_reads_total{"))
        .filter(|line| line.contains("by=\"watcher\"") && line.contains(&projection))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A query API in a process of its own hears of another process's projector through PostgreSQL:
/// a read that waits for `min_position` is answered once the projector gets there, and while it
/// waits the model's watcher does not poll the database (it used to look every few milliseconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_process_is_woken_by_another_processs_projector_instead_of_polling() {
    let commands = StayServer::start_with(Backend::Postgres, &["--role", "command-api"]).await;
    let queries = commands.join(&["--role", "query-api"]).await;
    let host = commands.token("host-1", "host");
    let room = json!({"name": "Waited for", "address": "5 Process Road", "nightly_price": {"amount_minor": 8000, "currency": "EUR"}, "capacity": 2});
    let registered = commands.post("/v1/rooms", &host, &room).await;
    assert_eq!(registered.status, 201, "{}", registered.text);

    // No projector runs yet: the read waits.
    let path = format!(
        "/v1/rooms/{}?min_position={}&wait_ms=30000",
        registered.field("room_id"),
        registered.field("position")
    );
    let url = format!("{}{path}", queries.url());
    let waiting = tokio::spawn(async move { reqwest::get(url).await.expect("the read is answered") });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = watcher_reads(&queries, "roomview").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_reads = watcher_reads(&queries, "roomview").await - before;
    assert!(!waiting.is_finished(), "answered before any projector ran");
    // One look per announced move, plus a look a second in case one was missed.
    assert!(idle_reads <= 8.0, "{idle_reads} reads of roomview's progress in 3 s with no projector running");

    let _projector = commands.join(&["--role", "projector"]).await;
    let answer =
        tokio::time::timeout(Duration::from_secs(30), waiting).await.expect("answered in time").expect("no panic");
    assert_eq!(answer.status(), 200);
    let view: Value = answer.json().await.expect("a room");
    assert_eq!(view["name"], "Waited for");
}

/// GET `path` on `server` until `done` holds for the answer, for up to 20 s.
async fn answer_until(
    server: &StayServer,
    path: &str,
    done: impl Fn(&stay_tests::Answer) -> bool,
) -> stay_tests::Answer {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let answer = server.get(path).await;
        if done(&answer) || tokio::time::Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether a projector's `/readyz` reports every model's lease as `state`.
fn every_lease(answer: &stay_tests::Answer, state: &str) -> bool {
    answer.body["checks"][2]["report"]["workers"]
        .as_array()
        .is_some_and(|workers| !workers.is_empty() && workers.iter().all(|w| w["lease"] == state))
}

fn check_names(ready: &Value) -> Vec<&str> {
    ready["checks"].as_array().expect("checks").iter().filter_map(|c| c["name"].as_str()).collect()
}

/// Each role says what makes it ready: the command API its heartbeat, the query API that the read
/// models are set up (a projector does that), the saga its schedule, and the projector its leases
/// and lag, which are detail: a second projector on standby is ready too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_reports_its_own_readiness() {
    let commands = StayServer::start_with(Backend::Postgres, &["--role", "command-api"]).await;
    let ready = commands.get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert_eq!(check_names(&ready.body), ["store", "migrations", "command-api"]);
    assert!(ready.body["checks"][2]["detail"].as_str().unwrap_or("").contains("heartbeat"), "{}", ready.text);

    // No process has set the read models up yet: the query API is not ready, and says why.
    let queries = commands.join(&["--role", "query-api", "--no-migrate"]).await;
    let waiting = queries.get("/readyz").await;
    assert_eq!(waiting.status, 503, "{}", waiting.text);
    assert_eq!(check_names(&waiting.body), ["store", "migrations", "query-api"]);
    assert_eq!(waiting.body["checks"][2]["ok"], false);
    assert!(waiting.text.contains("roomview"), "names the models not set up: {}", waiting.text);

    // A projector sets them up and takes every lease; the query API turns ready.
    let leader = commands.join(&["--role", "projector"]).await;
    let all_held = |a: &stay_tests::Answer| every_lease(a, "held");
    let led = answer_until(&leader, "/readyz", all_held).await;
    assert_eq!(led.status, 200, "{}", led.text);
    assert_eq!(check_names(&led.body), ["store", "migrations", "projector"]);
    assert!(all_held(&led), "the first projector leads every model: {}", led.text);
    let ready = answer_until(&queries, "/readyz", |a| a.status == 200).await;
    assert_eq!(ready.status, 200, "{}", ready.text);

    // A second projector stands by, and is ready: the leases make it a standby by design.
    let standby = commands.join(&["--role", "projector"]).await;
    let all_standby = |a: &stay_tests::Answer| every_lease(a, "standby");
    let stood_by = answer_until(&standby, "/readyz", all_standby).await;
    assert_eq!(stood_by.status, 200, "{}", stood_by.text);
    assert!(all_standby(&stood_by), "{}", stood_by.text);
    assert!(stood_by.body["checks"][2]["detail"].as_str().unwrap_or("").contains("0 led here"), "{}", stood_by.text);

    let saga = commands.join(&["--role", "saga"]).await;
    let ready = saga.get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert_eq!(check_names(&ready.body), ["store", "migrations", "saga"]);
    assert_eq!(ready.body["checks"][2]["report"]["payment_circuit"], "closed", "{}", ready.text);

    // The projector reports how much of the PostgreSQL feed is held back (nothing, here).
    let metrics = answer_until(&leader, "/metrics", |a| a.text.contains("stay_feed_held_back_events")).await;
    assert!(metrics.text.contains("stay_feed_held_back_events 0"), "{}", metrics.text);
}
