//! Dead letters one by one, through the admin routes and `stay projections`, on SQLite and
//! PostgreSQL: a poison event is retried with backoff and then parked; retried after its cause is
//! fixed, it is applied and its followers after it in order; a skipped event stays skipped through
//! a rebuild; and all of it shows in `GET /v1/admin/projections`.

use std::process::Command;
use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::Method;
use serde_json::{json, Value};
use stay_store::{Append, CommandContext, EventStore, NewEvent, SqlDatabase};
use stay_tests::server::stay_binary;
use stay_tests::{Answer, Backend, StayServer};

/// `stay ARGS`: whether it succeeded, its standard output and its standard error.
fn stay(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(stay_binary()).args(args).env_remove("STAY_STORE").output().expect("run stay");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

async fn admin(server: &StayServer, method: Method, path: &str) -> Answer {
    let token = server.token("ops", "admin");
    server.send(method, path, Some(&token), None, &[]).await
}

async fn admin_ok(server: &StayServer, path: &str) -> Value {
    let answer = admin(server, Method::GET, path).await;
    assert_eq!(answer.status, 200, "GET {path}: {}", answer.text);
    answer.body
}

/// roomview's entry in `GET /v1/admin/projections`.
async fn roomview(server: &StayServer) -> Value {
    let all = admin_ok(server, "/v1/admin/projections").await;
    all.as_array().expect("a list").iter().find(|p| p["name"] == "roomview").cloned().expect("roomview")
}

/// roomview's dead letter at `position`, if it keeps one.
async fn letter(server: &StayServer, position: &str) -> Option<Value> {
    let list = admin_ok(server, "/v1/admin/projections/roomview/dead-letters").await;
    list["items"].as_array().expect("items").iter().find(|l| l["position"] == position).cloned()
}

/// Appends events to a room's stream after `version` directly, as a buggy writer might; answers
/// their positions.
async fn append(store: &EventStore, room: &str, version: u64, events: Vec<(&str, Value)>) -> Vec<String> {
    let events = events
        .into_iter()
        .map(|(event_type, payload)| NewEvent { event_type: event_type.into(), event_version: "1.0".into(), payload })
        .collect();
    let append = Append {
        aggregate_type: "Room".into(),
        aggregate_id: room.into(),
        expected_version: version,
        events,
        metadata: CommandContext::new("test").metadata(Utc::now()),
    };
    store.append(append).await.expect("append").iter().map(ToString::to_string).collect()
}

fn room_body(name: &str) -> Value {
    json!({"name": name, "address": "5 Letter Lane", "nightly_price": {"amount_minor": 6_000, "currency": "EUR"}, "capacity": 2})
}

fn renamed(room: &str, name: &str) -> (&'static str, Value) {
    ("RoomDetailsChanged", json!({"RoomDetailsChanged": {"room_id": room, "name": name}}))
}

/// Registers a room through the API; answers its id and the answer's position.
async fn register(server: &StayServer, name: &str) -> (String, String) {
    let host = server.token("host-d", "host");
    let answer = server.post("/v1/rooms", &host, &room_body(name)).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    (answer.field("room_id").to_owned(), answer.field("position").to_owned())
}

/// The room as roomview shows it once it has reached `position`.
async fn room_at(server: &StayServer, room: &str, position: &str) -> Value {
    let answer = server.get(&format!("/v1/rooms/{room}?min_position={position}&wait_ms=10000")).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    answer.body
}

async fn a_poison_event_is_retried_with_backoff_parked_and_applied_with_its_followers_once_fixed(backend: Backend) {
    let server = StayServer::start(backend).await;
    let store = server.open_store().await;
    let (template_room, _) = register(&server, "Template").await;
    let poisoned = uuid::Uuid::new_v4().to_string();
    let positions = append(
        &store,
        &poisoned,
        0,
        vec![
            ("RoomRegistered", json!({"RoomRegistered": {"garbage": true}})),
            renamed(&poisoned, "Renamed once"),
            renamed(&poisoned, "Renamed twice"),
        ],
    )
    .await;
    let (poison, followers) = (positions[0].clone(), positions[1..].to_vec());

    let (sound, at) = register(&server, "Sound").await;

    // Retried with backoff (ceilings 500 ms, 1 s, 2 s), then parked after 4 attempts; meanwhile
    // other aggregates go on.
    let mut sound_seen = false;
    let mut seen: Vec<(i64, Instant, Value)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(now) = letter(&server, &poison).await {
            let attempts = now["attempts"].as_i64().expect("attempts");
            if seen.last().is_none_or(|(a, _, _)| *a != attempts) {
                seen.push((attempts, Instant::now(), now.clone()));
            }
            if now["state"] == "parked" {
                break;
            }
            if !sound_seen {
                sound_seen = room_at(&server, &sound, &at).await["name"] == "Sound";
                assert!(
                    letter(&server, &poison).await.is_some_and(|l| l["state"] == "retrying"),
                    "another aggregate's event was applied while the poison event waits for its next try"
                );
            }
        }
        assert!(Instant::now() < deadline, "never parked: {seen:?}\n{}", server.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(sound_seen, "the other room was never seen");
    let attempts: Vec<i64> = seen.iter().map(|(a, _, _)| *a).collect();
    // The first may pass unseen (its wait is the shortest), every later one is seen in turn.
    assert!(attempts == [1, 2, 3, 4] || attempts == [2, 3, 4], "each attempt seen in turn: {seen:?}");
    for ((_, before, letter), (_, after, _)) in seen.iter().zip(&seen[1..]) {
        assert_eq!(letter["state"], "retrying", "{letter}");
        assert!(letter["next_retry_at"].is_string(), "its next try is shown: {letter}");
        let floor = 250 * (1 << (letter["attempts"].as_u64().expect("attempts") - 1));
        let gap = *after - *before;
        // Seen by polling every 20 ms or so: allow for that.
        assert!(gap + Duration::from_millis(100) >= Duration::from_millis(floor), "{gap:?} after {letter}");
    }
    let parked = &seen.last().expect("parked").2;
    assert_eq!((&parked["state"], &parked["next_retry_at"]), (&json!("parked"), &Value::Null), "{parked}");
    assert_eq!(parked["followers"], json!(followers), "{parked}");
    assert!(parked["error"].as_str().is_some_and(|e| !e.is_empty()), "{parked}");

    // All visible in the projections list.
    let listed = roomview(&server).await;
    let letters = listed["dead_letters"].as_array().expect("dead_letters");
    let states: Vec<(&str, &str)> =
        letters.iter().map(|l| (l["position"].as_str().unwrap_or(""), l["state"].as_str().unwrap_or(""))).collect();
    assert_eq!(
        states,
        vec![(poison.as_str(), "parked"), (followers[0].as_str(), "held"), (followers[1].as_str(), "held")]
    );
    assert_eq!(listed["skipped"], 0, "{listed}");

    // The routes' refusals.
    let url = server.store_url().to_string();
    for (path, status, code) in [
        ("/v1/admin/projections/nonsense/dead-letters/1/retry".to_owned(), 404, "projection_not_found"),
        (format!("/v1/admin/projections/roomview/dead-letters/{}/retry", 999_999_999), 404, "dead_letter_not_found"),
        (format!("/v1/admin/projections/roomview/dead-letters/{}/skip", followers[0]), 409, "dead_letter_not_parked"),
        ("/v1/admin/projections/roomview/dead-letters/abc/retry".to_owned(), 422, "validation_failed"),
    ] {
        let answer = admin(&server, Method::POST, &path).await;
        assert_eq!((answer.status, answer.code()), (status, code), "{path}: {}", answer.text);
        assert!(answer.is_problem(), "{}", answer.text);
    }
    let unknown = admin(&server, Method::GET, "/v1/admin/projections/nonsense/dead-letters").await;
    assert_eq!((unknown.status, unknown.code()), (404, "projection_not_found"), "{}", unknown.text);

    // Retried before the cause is fixed (through the CLI): refused again, it stays parked.
    let (ok, out, err) = stay(&["projections", "retry", "roomview", &poison, "--store", &url, "--json"]);
    assert!(!ok, "a refused retry fails the command: {out} {err}");
    let refused: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    assert_eq!((&refused["outcome"], &refused["attempts"]), (&json!("parked"), &json!(5)), "{refused}");
    assert!(err.contains("stays parked"), "{err}");
    let still = letter(&server, &poison).await.expect("still parked");
    assert_eq!((&still["state"], &still["attempts"]), (&json!("parked"), &json!(5)), "{still}");

    // The cause is fixed (the event is mended in the log); retried, it is applied and its
    // followers after it, in order.
    let template = store.read_stream("Room", &template_room).await.expect("the template's stream");
    let mut mended = template[0].payload.clone();
    mended["RoomRegistered"]["room_id"] = json!(poisoned);
    mended["RoomRegistered"]["name"] = json!("Mended");
    let db = SqlDatabase::open(&server.store_url()).await.expect("the store's database");
    let set = if backend == Backend::Postgres { "CAST($1 AS JSONB)" } else { "$1" };
    let changed = db
        .run(
            &format!("UPDATE events SET payload = {set} WHERE aggregate_type = 'Room' AND aggregate_id = $2 AND sequence = 1"),
            &[mended.to_string().into(), poisoned.as_str().into()],
        )
        .await
        .expect("mend the event");
    assert_eq!(changed, 1);
    let retried =
        admin(&server, Method::POST, &format!("/v1/admin/projections/roomview/dead-letters/{poison}/retry")).await;
    assert_eq!(retried.status, 200, "{}", retried.text);
    assert_eq!((&retried.body["outcome"], &retried.body["released"]), (&json!("applied"), &json!(followers)));
    let view = room_at(&server, &poisoned, &followers[1]).await;
    assert_eq!(view["name"], "Renamed twice", "the followers applied in order: {view}");
    assert!(letter(&server, &poison).await.is_none());
    let listed = roomview(&server).await;
    assert_eq!(listed["dead_letters"], json!([]), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_retried_with_backoff_parked_and_released_once_fixed_on_sqlite() {
    a_poison_event_is_retried_with_backoff_parked_and_applied_with_its_followers_once_fixed(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_retried_with_backoff_parked_and_released_once_fixed_on_postgres() {
    a_poison_event_is_retried_with_backoff_parked_and_applied_with_its_followers_once_fixed(Backend::Postgres).await;
}

async fn a_skipped_event_stays_skipped_through_a_rebuild(backend: Backend) {
    let server = StayServer::start(backend).await;
    let store = server.open_store().await;
    let (room, _) = register(&server, "Before").await;
    let positions = append(
        &store,
        &room,
        1,
        vec![("RoomDetailsChanged", json!({"RoomDetailsChanged": {"garbage": 1}})), renamed(&room, "After the skip")],
    )
    .await;
    let (poison, follower) = (positions[0].clone(), positions[1].clone());
    let url = server.store_url().to_string();
    let deadline = Instant::now() + Duration::from_secs(15);
    let listed = loop {
        let (ok, out, err) = stay(&["projections", "dead-letters", "roomview", "--store", &url, "--json"]);
        assert!(ok, "{out} {err}");
        let list: Value = serde_json::from_str(out.trim()).expect("json");
        if list["items"].as_array().is_some_and(|items| items.len() == 2) {
            break list;
        }
        assert!(Instant::now() < deadline, "never kept: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(listed["items"][0]["position"], json!(poison), "{listed}");
    assert_eq!(listed["items"][0]["followers"], json!([follower]), "{listed}");
    let (ok, text, _) = stay(&["projections", "dead-letters", "roomview", "--store", &url]);
    assert!(ok && text.contains(&poison) && text.contains("held"), "{text}");

    let (ok, out, err) = stay(&["projections", "skip", "roomview", &poison, "--store", &url, "--json"]);
    assert!(ok, "{out} {err}");
    let skipped: Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!((&skipped["outcome"], &skipped["released"]), (&json!("skipped"), &json!([follower])), "{skipped}");
    assert_eq!(room_at(&server, &room, &follower).await["name"], "After the skip");
    let listed = roomview(&server).await;
    assert_eq!((&listed["dead_letters"], &listed["skipped"]), (&json!([]), &json!(1)), "{listed}");
    let version = listed["version"].as_i64().expect("version");

    // A rebuilt version neither applies it nor parks it again.
    let rebuilt = admin(&server, Method::POST, "/v1/admin/projections/roomview/rebuild").await;
    assert_eq!(rebuilt.status, 202, "{}", rebuilt.text);
    let deadline = Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let listed = roomview(&server).await;
        if listed["version"] == version + 1 && listed["lag_events"] == 0 {
            break listed;
        }
        assert!(Instant::now() < deadline, "the rebuild never went live: {listed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((&listed["dead_letters"], &listed["skipped"]), (&json!([]), &json!(1)), "{listed}");
    assert_eq!(room_at(&server, &room, &follower).await["name"], "After the skip");
    let again =
        admin(&server, Method::POST, &format!("/v1/admin/projections/roomview/dead-letters/{poison}/skip")).await;
    assert_eq!((again.status, again.code()), (404, "dead_letter_not_found"), "{}", again.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_event_stays_skipped_through_a_rebuild_on_sqlite() {
    a_skipped_event_stays_skipped_through_a_rebuild(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_event_stays_skipped_through_a_rebuild_on_postgres() {
    a_skipped_event_stays_skipped_through_a_rebuild(Backend::Postgres).await;
}
