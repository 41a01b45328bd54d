//! Operating the read side: rebuilds equal the live models, rebuilds while writes go on, exactly-once
//! effects across SIGKILLs of the projector, and a standby projector taking over on PostgreSQL.
//!
//! The oracle is a rebuild: a read model built from scratch, in one go, by one process, must equal
//! the one built live (through crashes, takeovers and concurrent writes) row for row.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{Days, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use stay_store::{Row, SqlDatabase};
use stay_tests::{Backend, StayServer};

const MODELS: [(&str, &[&str]); 6] = [
    ("roomview", &["roomview_v{v}", "roomview_v{v}_reservations"]),
    ("reservations", &["reservations_v{v}", "reservations_v{v}_rooms"]),
    ("notifications", &["notifications_v{v}", "notifications_v{v}_rooms"]),
    ("reviews", &["reviews_v{v}"]),
    ("sagas", &["sagas_v{v}"]),
    ("correlations", &["correlations_v{v}"]),
];

fn day(offset: u64) -> String {
    Utc::now().date_naive().checked_add_days(Days::new(offset)).expect("date").to_string()
}

/// A tiny deterministic generator, so a failing run can be replayed.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % sides
    }
}

/// Sends a command until it is answered (retrying across restarts with the same idempotency key).
async fn command(
    base: &(dyn Fn() -> String + Send + Sync),
    method: Method,
    path: &str,
    token: &str,
    body: Option<&Value>,
    key: &str,
) -> Value {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut request = client
            .request(method.clone(), format!("{}{path}", base()))
            .bearer_auth(token)
            .header("idempotency-key", key);
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Ok(response) = request.send().await {
            let status = response.status().as_u16();
            let value: Value = response.json().await.unwrap_or(Value::Null);
            if status < 500 && value["code"] != "idempotency_key_in_progress" {
                return value;
            }
        }
        assert!(Instant::now() < deadline, "{method} {path} was never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Registers `rooms` rooms and makes `reservations` reservations with mixed cards, some cancelled,
/// some reviewed, over `base()` (which may change as the server restarts).
async fn mixed_load(
    base: Arc<dyn Fn() -> String + Send + Sync>,
    host: String,
    guests: Vec<String>,
    rooms: usize,
    reservations: usize,
    seed: u64,
) {
    let mut room_ids = Vec::new();
    for i in 0..rooms {
        let body = json!({"name": format!("Room {i}"), "address": format!("{i} Load Lane"),
            "nightly_price": {"amount_minor": 5_000 + 100 * i as i64, "currency": "EUR"}, "capacity": 4});
        let answer = command(&*base, Method::POST, "/v1/rooms", &host, Some(&body), &format!("room-{seed}-{i}")).await;
        room_ids.push(answer["room_id"].as_str().expect("room id").to_owned());
    }
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..8 {
        let (base, guests, room_ids, next) = (base.clone(), guests.clone(), room_ids.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut dice = Dice(seed.wrapping_mul(31).wrapping_add(worker + 1) | 1);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= reservations {
                    break;
                }
                let guest = &guests[n % guests.len()];
                let room = &room_ids[dice.roll(room_ids.len() as u64) as usize];
                let from = 3 + dice.roll(120);
                let card = ["tok_visa", "tok_visa", "tok_visa", "tok_declined", "tok_insufficient_funds"]
                    [dice.roll(5) as usize];
                let body = json!({"room_id": room, "check_in": day(from), "check_out": day(from + 1 + dice.roll(3)),
                    "guests": 2, "payment": {"card_token": card}});
                let answer =
                    command(&*base, Method::POST, "/v1/reservations", guest, Some(&body), &format!("r-{seed}-{n}"))
                        .await;
                let Some(id) = answer["reservation_id"].as_str().map(str::to_owned) else { continue };
                match dice.roll(4) {
                    0 => {
                        let path = format!("/v1/reservations/{id}/cancel");
                        command(&*base, Method::POST, &path, guest, None, &format!("c-{seed}-{n}")).await;
                    }
                    1 => {
                        let review = json!({"reservation_id": id, "rating": 1 + dice.roll(5), "comment": "fine"});
                        let path = format!("/v1/rooms/{room}/reviews");
                        // Only a confirmed reservation can be reviewed; others are refused, which is fine.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        command(&*base, Method::POST, &path, guest, Some(&review), &format!("v-{seed}-{n}")).await;
                    }
                    _ => {}
                }
            }
        }));
    }
    for worker in workers {
        worker.await.expect("load worker");
    }
}

async fn admin_json(server: &StayServer, path: &str) -> Value {
    let admin = server.token("ops", "admin");
    let answer = server.send(Method::GET, path, Some(&admin), None, &[]).await;
    assert_eq!(answer.status, 200, "GET {path}: {}", answer.text);
    answer.body
}

async fn live_versions(server: &StayServer) -> Vec<(String, i64)> {
    let list = admin_json(server, "/v1/admin/projections").await;
    list.as_array()
        .expect("list")
        .iter()
        .map(|p| (p["name"].as_str().expect("name").to_owned(), p["version"].as_i64().expect("version")))
        .collect()
}

async fn rows(db: &SqlDatabase, table: &str) -> Vec<Row> {
    db.rows(&format!("SELECT * FROM {table} ORDER BY 1"), &[]).await.expect("read a read-model table")
}

/// Rebuilds every model and asserts the rebuilt tables equal the live ones, row for row.
async fn assert_rebuilds_equal_live(server: &StayServer) {
    server.settle().await;
    let db = SqlDatabase::open(&server.store_url()).await.expect("read store");
    let before = live_versions(server).await;
    let admin = server.token("ops", "admin");
    for (name, _) in &before {
        let answer =
            server.send(Method::POST, &format!("/v1/admin/projections/{name}/rebuild"), Some(&admin), None, &[]).await;
        assert_eq!(answer.status, 202, "{}", answer.text);
    }
    server.settle().await;
    let after = live_versions(server).await;
    for ((name, old), (_, new)) in before.iter().zip(&after) {
        assert_eq!(*new, old + 1, "{name} switched to its rebuilt version");
        let tables = MODELS.iter().find(|(n, _)| n == name).map(|(_, t)| *t).expect("known model");
        for table in tables {
            let live = rows(&db, &table.replace("{v}", &old.to_string())).await;
            let rebuilt = rows(&db, &table.replace("{v}", &new.to_string())).await;
            assert!(!rebuilt.is_empty() || live.is_empty(), "{table}: the rebuild is empty");
            assert_eq!(live.len(), rebuilt.len(), "{table}: {} live rows, {} rebuilt", live.len(), rebuilt.len());
            for (a, b) in live.iter().zip(&rebuilt) {
                assert_eq!(a, b, "{table}: a live row differs from its rebuilt one");
            }
        }
    }
}

async fn notifications_are_exactly_once(server: &StayServer) {
    let db = SqlDatabase::open(&server.store_url()).await.expect("read store");
    let version =
        live_versions(server).await.into_iter().find(|(n, _)| n == "notifications").map(|(_, v)| v).expect("v");
    let table = format!("notifications_v{version}");
    let duplicates = db
        .rows(&format!("SELECT recipient, kind, reservation_id, COUNT(*) FROM {table} GROUP BY recipient, kind, reservation_id HAVING COUNT(*) > 1"), &[])
        .await
        .expect("query");
    assert!(duplicates.is_empty(), "a recipient was notified twice of one event: {duplicates:?}");
}

fn guests(server: &StayServer) -> Vec<String> {
    (0..6).map(|i| server.token(&format!("guest-{i}"), "guest")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_from_scratch_equals_the_live_models_after_two_thousand_events() {
    let server = StayServer::start(Backend::Sqlite).await;
    let base = server.url().to_owned();
    mixed_load(Arc::new(move || base.clone()), server.token("host-1", "host"), guests(&server), 20, 260, 7).await;
    server.settle().await;
    let store = server.open_store().await;
    let (mut events, mut after) = (0, stay_store::Position::START);
    loop {
        let batch = store.read_feed(after, 1_000).await.expect("feed");
        let Some(last) = batch.last() else { break };
        after = last.position;
        events += batch.len();
    }
    assert!(events >= 2_000, "only {events} events");
    eprintln!("{events} events");
    assert_rebuilds_equal_live(&server).await;
    notifications_are_exactly_once(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_keep_answering_while_a_rebuild_runs_beside_ongoing_writes() {
    let server = Arc::new(StayServer::start(Backend::Sqlite).await);
    let base = server.url().to_owned();
    let host = server.token("host-1", "host");
    mixed_load(
        Arc::new({
            let b = base.clone();
            move || b.clone()
        }),
        host.clone(),
        guests(&server),
        5,
        60,
        11,
    )
    .await;

    // The reader below holds roomview to never look empty once it has shown rooms: wait until it
    // does (a plain read may trail the projector by a moment).
    let shown = Instant::now() + Duration::from_secs(30);
    while server.get("/v1/rooms?limit=1").await.body["items"].as_array().is_none_or(Vec::is_empty) {
        assert!(Instant::now() < shown, "roomview never showed the rooms written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let writing = Arc::new(AtomicBool::new(true));
    let writer = tokio::spawn({
        let (base, host, guests) = (base.clone(), host.clone(), guests(&server));
        async move { mixed_load(Arc::new(move || base.clone()), host, guests, 3, 120, 13).await }
    });
    let reader = tokio::spawn({
        let (server, writing) = (server.clone(), writing.clone());
        async move {
            let mut reads = 0;
            while writing.load(Ordering::Relaxed) {
                let page = server.get("/v1/rooms?limit=50").await;
                assert!(page.status < 500, "a query failed during the rebuild: {} {}", page.status, page.text);
                assert_eq!(page.status, 200, "{}", page.text);
                assert!(
                    !page.body["items"].as_array().is_none_or(Vec::is_empty),
                    "an empty roomview during the rebuild"
                );
                let room = page.body["items"][0]["room_id"].as_str().unwrap_or_default().to_owned();
                let one = server.get(&format!("/v1/rooms/{room}")).await;
                assert_eq!(one.status, 200, "{}", one.text);
                reads += 1;
            }
            reads
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let admin = server.token("ops", "admin");
    let started = server.send(Method::POST, "/v1/admin/projections/roomview/rebuild", Some(&admin), None, &[]).await;
    assert_eq!(started.status, 202, "{}", started.text);
    let target = started.body["version"].as_i64().expect("version");
    let deadline = Instant::now() + Duration::from_secs(60);
    while live_versions(&server).await.iter().any(|(n, v)| n == "roomview" && *v != target) {
        assert!(Instant::now() < deadline, "the rebuild never went live");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    writer.await.expect("writer");
    writing.store(false, Ordering::Relaxed);
    let reads = reader.await.expect("reader");
    assert!(reads > 5, "too few reads during the rebuild to mean anything: {reads}");
    // The rebuilt model, kept live through the rest of the writes, equals another rebuild.
    assert_rebuilds_equal_live(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_killed_again_and_again_applies_every_event_exactly_once() {
    let server = Arc::new(tokio::sync::Mutex::new(StayServer::start(Backend::Sqlite).await));
    let (host, guests) = {
        let s = server.lock().await;
        (s.token("host-1", "host"), guests(&s))
    };
    let url = Arc::new(std::sync::Mutex::new(server.lock().await.url().to_owned()));
    let base = {
        let url = url.clone();
        Arc::new(move || url.lock().map(|u| u.clone()).unwrap_or_default())
    };
    let load = tokio::spawn(mixed_load(base, host, guests, 8, 150, 17));
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let mut s = server.lock().await;
        s.crash_and_restart();
        *url.lock().expect("url") = s.url().to_owned();
    }
    load.await.expect("load");
    let s = server.lock().await;
    assert_rebuilds_equal_live(&s).await;
    notifications_are_exactly_once(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_standby_projector_takes_over_when_the_active_one_dies() {
    let mut first = StayServer::start(Backend::Postgres).await;
    // The first process's projector takes every lease before the second one starts.
    first.settle().await;
    let second = first.join(&[]).await;
    let base = second.url().to_owned();
    mixed_load(Arc::new(move || base.clone()), second.token("host-1", "host"), guests(&second), 4, 40, 23).await;
    second.settle().await;

    // Kill the process holding the leases; the standby's projector must carry on within seconds.
    first.kill();
    let host = second.token("host-2", "host");
    let room = json!({"name": "After the crash", "address": "1 Failover Road",
        "nightly_price": {"amount_minor": 7000, "currency": "EUR"}, "capacity": 2});
    let answer = second.post("/v1/rooms", &host, &room).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let started = Instant::now();
    let path = format!("/v1/rooms/{}?min_position={}&wait_ms=15000", answer.field("room_id"), answer.field("position"));
    let seen = second.get(&path).await;
    assert_eq!(seen.status, 200, "the standby never took over: {}", seen.text);
    eprintln!("took over in {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_rebuilds_equal_live(&second).await;
    notifications_are_exactly_once(&second).await;
}
