//! `stay serve` as a process: idempotent retries across restarts, shedding load, stopping cleanly
//! on SIGTERM, its service endpoints, and tokens from `stay token`.

use std::collections::HashSet;
use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use stay_command_api::idempotency::{fingerprint, CommandKey};
use stay_command_api::IdempotencyStore;
use stay_domain::{Address, Capacity, Clock, Description, PositiveMoney, RoomCommand, RoomId, RoomName, UserId};
use stay_store::{CommandContext, ExecutorConfig, Executors, Position, SqlDatabase, SystemClock};
use stay_tests::{Backend, StayServer};

const FEED_WAIT: Duration = Duration::from_secs(10);

fn room_body(name: &str) -> Value {
    json!({
        "name": name,
        "address": "2 Harbour Road",
        "nightly_price": {"amount_minor": 9900, "currency": "EUR"},
        "capacity": 3
    })
}

async fn idempotent_retries_replay_the_first_answer(backend: Backend) {
    let mut server = StayServer::start(backend).await;
    let host = server.token("host-1", "host");
    let key = [("idempotency-key", "create-loft-1")];

    let first = server.send(Method::POST, "/v1/rooms", Some(&host), Some(&room_body("Loft")), &key).await;
    assert_eq!(first.status, 201, "{}", first.text);
    // Same JSON, other layout: the same request.
    let layout = br#"{ "capacity": 3, "nightly_price": {"currency": "EUR", "amount_minor": 9900},
                       "address": "2 Harbour Road", "name": "Loft" }"#;
    let again = server.send_raw(Method::POST, "/v1/rooms", Some(&host), Some(layout.to_vec()), &key).await;
    assert_eq!((again.status, &again.text), (201, &first.text));
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(again.header("idempotent-replayed"), "true");

    let store = server.open_store().await;
    let registered = stay_tests::read_feed_until(&store, Position::START, 1, FEED_WAIT).await;
    assert_eq!(registered.len(), 1, "one effect for two requests");

    let other = server.send(Method::POST, "/v1/rooms", Some(&host), Some(&room_body("Attic")), &key).await;
    assert_eq!((other.status, other.code()), (422, "idempotency_key_reused"), "{}", other.text);
    assert!(other.is_problem());

    // Keys belong to their caller: another host's identical key is a new request.
    let other_host = server.token("host-2", "host");
    let theirs = server.send(Method::POST, "/v1/rooms", Some(&other_host), Some(&room_body("Loft")), &key).await;
    assert_eq!(theirs.status, 201);
    assert_ne!(theirs.field("room_id"), first.field("room_id"));

    // Refusals are answers too: replayed, not re-run.
    let guest = server.token("guest-1", "guest");
    let refused = server.send(Method::POST, "/v1/rooms", Some(&guest), Some(&room_body("X")), &key).await;
    assert_eq!(refused.status, 403);

    server.restart().await;
    let host = server.token("host-1", "host");
    let after_restart = server.send(Method::POST, "/v1/rooms", Some(&host), Some(&room_body("Loft")), &key).await;
    assert_eq!((after_restart.status, &after_restart.text), (201, &first.text));
    let refused_again = server.send(Method::POST, "/v1/rooms", Some(&guest), Some(&room_body("X")), &key).await;
    assert_eq!((refused_again.status, &refused_again.text), (403, &refused.text));
    let reused = server.send(Method::POST, "/v1/rooms", Some(&host), Some(&room_body("Attic")), &key).await;
    assert_eq!(reused.code(), "idempotency_key_reused");
    let feed = stay_tests::read_feed_until(&server.open_store().await, Position::START, 2, FEED_WAIT).await;
    assert_eq!(feed.len(), 2, "host-1's room and host-2's room, nothing more");

    // A reservation request retried with its key is recorded once.
    let room_id = first.field("room_id");
    let guest_key = [("idempotency-key", "trip-7")];
    let stay = json!({
        "room_id": room_id,
        "check_in": (chrono::Utc::now().date_naive() + chrono::Days::new(9)).to_string(),
        "check_out": (chrono::Utc::now().date_naive() + chrono::Days::new(11)).to_string(),
        "guests": 1,
        "payment": {"card_token": "tok_visa"}
    });
    let asked = server.send(Method::POST, "/v1/reservations", Some(&guest), Some(&stay), &guest_key).await;
    let retried = server.send(Method::POST, "/v1/reservations", Some(&guest), Some(&stay), &guest_key).await;
    assert_eq!((asked.status, retried.status, &asked.text), (202, 202, &retried.text));
    let events =
        server.open_store().await.read_stream("Reservation", asked.field("reservation_id")).await.expect("stream");
    // The saga may have moved the reservation on since; what matters is one request, not two.
    assert_eq!(events.iter().filter(|e| e.event_type == "ReservationRequested").count(), 1);
}

/// A request whose first attempt committed its events but died before storing its answer (a
/// crash, a lost connection) is answered from those events on retry, never run twice.
async fn a_retry_after_a_crash_mid_request_is_not_applied_twice(backend: Backend) {
    let server = StayServer::start(backend).await;
    let host = server.token("host-1", "host");
    let body = room_body("Loft");
    let store = server.open_store().await;

    // The first attempt: it claimed the key, appended its event, then died.
    let keys = IdempotencyStore::new(SqlDatabase::open(&server.store_url()).await.expect("read store"));
    let print = fingerprint(&Method::POST, "/v1/rooms", &serde_json::to_vec(&body).expect("json"));
    keys.claim("host-1", "k-crash", &print).await.expect("claim");
    keys.release("host-1", "k-crash").await.expect("the claim goes stale");
    let command_key = CommandKey::keyed("host-1", "k-crash", &print, false);
    let room_id = RoomId::from(command_key.derive_id("room"));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let executors = Executors::new(&store, clock, ExecutorConfig::default());
    let register = RoomCommand::RegisterRoom {
        room_id,
        host_id: UserId::new("host-1").expect("user"),
        name: RoomName::new("Loft").expect("name"),
        description: Description::new("").expect("description"),
        address: Address::new("2 Harbour Road").expect("address"),
        nightly_price: PositiveMoney::from_minor(9900, stay_domain::Currency::new("EUR").expect("currency"))
            .expect("price"),
        capacity: Capacity::new(3).expect("capacity"),
    };
    let context = CommandContext::new("host-1").with_command_id(command_key.command_id.to_string());
    let committed = executors.rooms.execute(&room_id.to_string(), register, &context).await.expect("first attempt");

    let retry =
        server.send(Method::POST, "/v1/rooms", Some(&host), Some(&body), &[("idempotency-key", "k-crash")]).await;
    assert_eq!(retry.status, 201, "{}", retry.text);
    assert_eq!(retry.field("room_id"), room_id.to_string());
    assert_eq!(retry.field("position"), committed.events[0].position.to_string());
    assert_eq!(store.read_stream("Room", &room_id.to_string()).await.expect("stream").len(), 1);
}

/// Past the in-flight bound, requests are refused at once with 503 and Retry-After.
/// A keyed request in flight when `stay serve` is killed (SIGKILL) leaves its claim behind; the
/// restarted process sees the dead one's heartbeat stop and lets a retry take the claim over, so
/// the retry is answered within 5 s of the restart (not `idempotency_key_in_progress` for a minute).
async fn a_retry_after_a_kill_mid_request_is_answered_within_seconds(backend: Backend) {
    let mut server = StayServer::start(backend).await;
    let host = server.token("host-1", "host");
    let room = server.post("/v1/rooms", &host, &stay_tests::bodies::room_body()).await;
    assert_eq!(room.status, 201, "{}", room.text);
    let guest = server.token("guest-1", "guest");
    // tok_timeout: the provider never answers, so a request that waits for the saga stays in flight.
    let body = json!({
        "room_id": room.field("room_id"),
        "check_in": stay_tests::bodies::day(10), "check_out": stay_tests::bodies::day(12), "guests": 2,
        "payment": {"card_token": "tok_timeout"}
    });
    let key = "reserve-through-a-kill";
    let in_flight = {
        let (url, guest, body) = (format!("{}/v1/reservations", server.url()), guest.clone(), body.clone());
        tokio::spawn(async move {
            let request = reqwest::Client::new()
                .post(url)
                .bearer_auth(guest)
                .header("idempotency-key", key)
                .header("prefer", "wait=25")
                .json(&body);
            request.send().await.map(|response| response.status().as_u16())
        })
    };
    // The claim is taken once the request is past its checks; then the process dies.
    let store = server.open_store().await;
    let requested = stay_tests::read_feed_until(&store, Position::START, 2, FEED_WAIT).await;
    assert!(requested.iter().any(|e| e.event_type == "ReservationRequested"), "the reservation was recorded");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!in_flight.is_finished(), "the first request is still waiting for the saga");
    tokio::task::block_in_place(|| server.crash_and_restart());
    let restarted = Instant::now();
    assert!(in_flight.await.expect("joined").is_err(), "the first request died with the process");

    let headers = [("idempotency-key", key)];
    let answer = loop {
        let retry = server.send(Method::POST, "/v1/reservations", Some(&guest), Some(&body), &headers).await;
        if retry.code() != "idempotency_key_in_progress" {
            break retry;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(5),
            "still {} {} {:?} after the restart",
            retry.status,
            retry.code(),
            restarted.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(restarted.elapsed() < Duration::from_secs(5), "answered {:?} after the restart", restarted.elapsed());
    assert!([200, 202].contains(&answer.status), "{} {}", answer.status, answer.text);
    let again = stay_tests::read_feed_until(&store, Position::START, 3, Duration::from_millis(500)).await;
    let requests = again.iter().filter(|e| e.event_type == "ReservationRequested").count();
    assert_eq!(requests, 1, "the retry answered from the first attempt's events, not a second reservation");
}

async fn overload_is_shed_fast(backend: Backend) {
    let server = StayServer::start_with(backend, &["--max-in-flight", "1"]).await;
    let host = server.token("host-1", "host");
    let address = server.url().trim_start_matches("http://").to_owned();

    // Hold the only slot: a request whose body is still arriving.
    let mut slow = TcpStream::connect(&address).expect("connect");
    write!(
        slow,
        "POST /v1/rooms HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {host}\r\n\
         Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{{\"name\":"
    )
    .expect("write");
    slow.flush().expect("flush");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let shed = server.post("/v1/rooms", &host, &room_body("Loft")).await;
    assert_eq!((shed.status, shed.code()), (503, "overloaded"), "{}", shed.text);
    assert!(shed.is_problem());
    assert_eq!(shed.header("retry-after"), "1");
    assert!(started.elapsed() < Duration::from_secs(2), "shedding must not queue");
    // The service endpoints stay reachable.
    assert_eq!(server.get("/healthz").await.status, 200);

    // A storm of refusals is counted and logged in aggregate, not a line per request.
    let mut refused = 1;
    for _ in 0..300 {
        refused += usize::from(server.post("/v1/rooms", &host, &room_body("Loft")).await.status == 503);
    }
    assert_eq!(refused, 301);
    let logs = server.logs();
    let per_request = logs.lines().filter(|line| line.contains("response failed")).count();
    let reports: Vec<&str> = logs.lines().filter(|line| line.contains("requests answered 503")).collect();
    assert_eq!(per_request, 0, "one line per refusal:\n{logs}");
    assert!((1..=5).contains(&reports.len()), "reports: {reports:#?}");

    drop(slow);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.post("/v1/rooms", &host, &room_body("Loft")).await.status, 201);
}

/// SIGTERM during a burst: the process exits 0 within the grace period, and every request that
/// was answered 2xx is in the event store.
async fn sigterm_during_a_burst_loses_nothing_acknowledged(backend: Backend) {
    let mut server = StayServer::start(backend).await;
    let host = server.token("host-1", "host");
    let url = format!("{}/v1/rooms", server.url());
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client");
    let mut senders = Vec::new();
    for worker in 0..16 {
        let (client, url, host) = (client.clone(), url.clone(), host.clone());
        senders.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..1_000 {
                let sent =
                    client.post(&url).bearer_auth(&host).json(&room_body(&format!("Room {worker}-{i}"))).send().await;
                let Ok(response) = sent else { break };
                if response.status().is_success() {
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    acknowledged.push(body["room_id"].as_str().unwrap_or_default().to_owned());
                } else if response.status().is_server_error() && response.status().as_u16() != 503 {
                    panic!("{} during shutdown", response.status());
                }
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let stopped = tokio::task::block_in_place(|| server.terminate(Duration::from_secs(15)));
    let status = stopped.expect("stay serve exits within the grace period");
    assert!(status.success(), "exit status {status}\n{}", server.logs());

    let mut acknowledged = HashSet::new();
    for sender in senders {
        acknowledged.extend(sender.await.expect("sender"));
    }
    eprintln!("{} requests acknowledged before the server stopped", acknowledged.len());
    assert!(acknowledged.len() > 10, "the burst was too short to mean anything: {}", acknowledged.len());
    let store = server.open_store().await;
    let head_events = stay_tests::read_feed_until(&store, Position::START, acknowledged.len(), FEED_WAIT).await;
    let stored: HashSet<String> = head_events.iter().map(|e| e.aggregate_id.clone()).collect();
    let missing: Vec<&String> = acknowledged.difference(&stored).collect();
    assert!(missing.is_empty(), "acknowledged but not stored: {missing:?}");
}

/// A newcomer's server: no secret configured, so `stay serve` generates one into the data
/// directory and `stay token` signs with it.
async fn tokens_from_stay_token_are_accepted(backend: Backend) {
    let server = StayServer::start_with_generated_secret(backend).await;
    let output = std::process::Command::new(stay_tests::server::stay_binary())
        .args(["token", "--sub", "host-1", "--role", "host", "--ttl", "10m", "--data-dir"])
        .arg(server.data_dir())
        .env_remove("STAY_JWT_SECRET")
        .output()
        .expect("stay token");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).expect("utf-8").trim().to_owned();
    assert_eq!(server.post("/v1/rooms", &token, &room_body("Loft")).await.status, 201);
    // The test's own secret is not the server's.
    let foreign = server.token("host-1", "host");
    assert_eq!(server.post("/v1/rooms", &foreign, &room_body("Loft")).await.status, 401);
}

/// Rotating the token secret: a server given the old secret as `--jwt-previous-secret` still
/// accepts tokens signed with it, beside those of its current secret, and no others.
async fn tokens_of_the_previous_secret_are_accepted_during_a_rotation(backend: Backend) {
    const OLD: &str = "the secret before the rotation, long enough";
    let server = StayServer::start_with(backend, &["--jwt-previous-secret", OLD]).await;
    let sign = |secret: &str| {
        let claims = json!({"sub": "host-1", "role": "host", "exp": chrono::Utc::now().timestamp() + 600});
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()))
            .expect("sign")
    };
    assert_eq!(server.post("/v1/rooms", &sign(OLD), &room_body("Old")).await.status, 201);
    assert_eq!(server.post("/v1/rooms", &server.token("host-1", "host"), &room_body("New")).await.status, 201);
    let stranger = server.post("/v1/rooms", &sign("a secret nobody configured"), &room_body("No")).await;
    assert_eq!(stranger.status, 401, "{}", stranger.text);
}

async fn service_endpoints_answer(backend: Backend) {
    let server = StayServer::start(backend).await;
    let health = server.get("/healthz").await;
    assert_eq!((health.status, health.field("status")), (200, "ok"));
    let ready = server.get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert_eq!(ready.body["ready"], true);
    let checks: Vec<&str> =
        ready.body["checks"].as_array().expect("checks").iter().filter_map(|c| c["name"].as_str()).collect();
    // One process runs every role, so each role's own check is there too.
    assert_eq!(checks, ["store", "migrations", "saga", "projector", "query-api", "command-api"]);
    let projector = &ready.body["checks"][3];
    let workers = projector["report"]["workers"].as_array().expect("the projector reports its workers");
    assert!(
        workers.iter().all(|w| w["lease"].is_string() && w["lag_events"].is_u64()),
        "each worker's lease and lag: {projector}"
    );
    assert!(!server.get("/healthz").await.header("x-request-id").is_empty());

    let host = server.token("host-1", "host");
    assert_eq!(server.post("/v1/rooms", &host, &room_body("Loft")).await.status, 201);
    let metrics = server.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    let wanted = [
        r#"stay_http_requests_total{route="/v1/rooms",method="POST",status="201"} 1"#,
        r#"stay_http_request_duration_seconds_bucket{route="/v1/rooms",method="POST",status="201",le="+Inf"} 1"#,
        r#"stay_executor_commands_total{aggregate="Room"} 1"#,
        "stay_executor_conflicts_total",
    ];
    for line in wanted {
        assert!(metrics.text.contains(line), "{line} not in\n{}", metrics.text);
    }
}

async fn readyz_reports_pending_migrations(backend: Backend) {
    let server = StayServer::start_with(backend, &["--no-migrate"]).await;
    let ready = server.get("/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert_eq!(ready.body["ready"], false);
    assert!(ready.text.contains("pending"), "{}", ready.text);
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
              async fn $name() { super::$name(stay_tests::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
              async fn $name() { super::$name(stay_tests::Backend::Postgres).await })*
        }
    };
}

on_both_backends!(
    idempotent_retries_replay_the_first_answer,
    a_retry_after_a_crash_mid_request_is_not_applied_twice,
    a_retry_after_a_kill_mid_request_is_answered_within_seconds,
    overload_is_shed_fast,
    sigterm_during_a_burst_loses_nothing_acknowledged,
    tokens_from_stay_token_are_accepted,
    tokens_of_the_previous_secret_are_accepted_during_a_rotation,
    service_endpoints_answer,
    readyz_reports_pending_migrations,
);
