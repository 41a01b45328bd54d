//! `stay export` / `stay import` with the real binary: a log moved between stores keeps every
//! event (aggregate, sequence, type, version, payload, metadata, recorded time), the global order
//! and, after `stay projections rebuild --all`, every read model's answers; a damaged file is
//! refused with its line and imports nothing; a non-empty target is refused; an import killed
//! halfway resumes without duplicates or gaps.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use stay_store::{Append, CommandContext, EventStore, NewEvent, Position, StoreOptions, StoreUrl};
use stay_tests::bodies::{day, room_body};
use stay_tests::server::{stay_binary, TEST_SECRET};
use stay_tests::{Backend, StayServer, TestPostgres, TestSqlite};

const WAIT: (&str, &str) = ("prefer", "wait=20");

/// Runs `stay` with `args` (no store settings from the environment).
fn stay(args: &[&str]) -> Output {
    Command::new(stay_binary())
        .args(args)
        .env_remove("STAY_STORE")
        .env_remove("STAY_DATA_DIR")
        .env_remove("STAY_READ_STORE")
        .stdin(Stdio::null())
        .output()
        .expect("run stay")
}

async fn stay_async(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || stay(&args.iter().map(String::as_str).collect::<Vec<_>>())).await.expect("join")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_ok(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed:\nstdout: {}\nstderr: {}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

/// The `--store` argument naming a store.
fn store_arg(url: &StoreUrl) -> String {
    match url {
        StoreUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
        StoreUrl::Postgres(url) | StoreUrl::EventStoreDb(url) => url.clone(),
    }
}

/// A target store of its own on `backend`, dropped with the value.
enum Target {
    Sqlite(TestSqlite),
    Postgres(TestPostgres),
}

impl Target {
    async fn create(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Target::Sqlite(TestSqlite::create()),
            Backend::Postgres => Target::Postgres(TestPostgres::create().await),
        }
    }

    fn url(&self) -> StoreUrl {
        match self {
            Target::Sqlite(dir) => StoreUrl::Sqlite(dir.path()),
            Target::Postgres(db) => StoreUrl::Postgres(db.url().to_owned()),
        }
    }

    async fn open(&self) -> EventStore {
        let store = EventStore::open(&self.url(), StoreOptions::default()).await.expect("open the target");
        store.migrate().await.expect("migrate");
        store
    }
}

/// One event as a comparison sees it: everything but the backend's own position.
#[derive(Debug, PartialEq)]
struct Seen {
    aggregate_type: String,
    aggregate_id: String,
    sequence: u64,
    event_type: String,
    event_version: String,
    payload: Value,
    metadata: Value,
    recorded_at: DateTime<Utc>,
}

/// The whole feed, in order, with each event's position.
async fn feed(store: &EventStore) -> Vec<(Position, Seen)> {
    let mut all = Vec::new();
    let mut after = Position::START;
    loop {
        let page = store.read_feed(after, 1_000).await.expect("read the feed");
        let Some(last) = page.last() else { return all };
        after = last.position;
        all.extend(page.into_iter().map(|e| {
            (
                e.position,
                Seen {
                    aggregate_type: e.aggregate_type,
                    aggregate_id: e.aggregate_id,
                    sequence: e.sequence,
                    event_type: e.event_type,
                    event_version: e.event_version,
                    payload: e.payload,
                    metadata: e.metadata,
                    recorded_at: e.recorded_at,
                },
            )
        }));
    }
}

/// Asserts that `target` holds exactly `source`'s events in the same order, and each aggregate's
/// stream read alone is the same too. Answers the source → target position map.
async fn assert_same_log(source: &EventStore, target: &EventStore) -> HashMap<String, String> {
    let from = feed(source).await;
    // PostgreSQL's feed holds committed events back while an older transaction anywhere on the
    // server still runs (other tests share it): wait for them to show.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut to = feed(target).await;
    while to.len() < from.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        to = feed(target).await;
    }
    assert_eq!(from.len(), to.len(), "event counts");
    let mut positions = HashMap::new();
    for (index, ((p, a), (q, b))) in from.iter().zip(&to).enumerate() {
        assert_eq!(a, b, "event {} of the feed", index + 1);
        positions.insert(p.to_string(), q.to_string());
    }
    let streams: BTreeSet<(String, String)> =
        from.iter().map(|(_, e)| (e.aggregate_type.clone(), e.aggregate_id.clone())).collect();
    for (kind, id) in &streams {
        let (a, b) = (
            source.read_stream(kind, id).await.expect("source stream"),
            target.read_stream(kind, id).await.expect("target stream"),
        );
        let strip = |events: Vec<stay_store::RecordedEvent>| -> Vec<(u64, String, Value, Value, DateTime<Utc>)> {
            events.into_iter().map(|e| (e.sequence, e.event_type, e.payload, e.metadata, e.recorded_at)).collect()
        };
        let (a, b) = (strip(a), strip(b));
        assert_eq!(a.iter().map(|e| e.0).collect::<Vec<_>>(), (1..=a.len() as u64).collect::<Vec<_>>());
        assert_eq!(a, b, "the stream of {kind} {id}");
    }
    positions
}

/// Exports `url` to a file in `dir`; answers the file.
async fn export(url: &StoreUrl, dir: &Path, name: &str) -> PathBuf {
    let file = dir.join(name);
    let out = stay_async(vec![
        "export".into(),
        "--store".into(),
        store_arg(url),
        "--output".into(),
        file.display().to_string(),
    ])
    .await;
    assert_ok(&out, "stay export");
    file
}

async fn import(url: &StoreUrl, file: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["import".to_owned(), "--store".into(), store_arg(url), file.display().to_string()];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    stay_async(args).await
}

fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file).expect("read the export").lines().map(str::to_owned).collect()
}

/// Fills a running server through the public API: rooms of three hosts, reservations with every
/// quick card outcome (approved, declined, insufficient funds, provider error, slow), a
/// cancellation, a delisting, reviews and a host's reply.
async fn fill(server: &StayServer) {
    let hosts: Vec<String> = (1..=3).map(|i| server.token(&format!("host-{i}"), "host")).collect();
    let guests: Vec<String> = (1..=4).map(|i| server.token(&format!("guest-{i}"), "guest")).collect();
    let mut rooms = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        for r in 0..2 {
            let mut body = room_body();
            body["name"] = json!(format!("Room {r} of host {i}"));
            let answer = server.post("/v1/rooms", host, &body).await;
            assert_eq!(answer.status, 201, "{}", answer.text);
            rooms.push((host.clone(), answer.field("room_id").to_owned()));
        }
    }
    let (first_host, first_room) = rooms[0].clone();
    let patched = server
        .send(
            Method::PATCH,
            &format!("/v1/rooms/{first_room}"),
            Some(&first_host),
            Some(&json!({"nightly_price": {"amount_minor": 9900, "currency": "EUR"}})),
            &[],
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);

    let cards = ["tok_visa", "tok_declined", "tok_insufficient_funds", "tok_error", "tok_slow", "tok_visa", "tok_visa"];
    let mut confirmed = Vec::new();
    for (i, card) in cards.iter().enumerate() {
        let (_, room) = &rooms[i % rooms.len()];
        let guest = &guests[i % guests.len()];
        let from = 10 + 3 * i as u64;
        let body = json!({"room_id": room, "check_in": day(from), "check_out": day(from + 2), "guests": 1,
                          "payment": {"card_token": card}});
        let answer = server.send(Method::POST, "/v1/reservations", Some(guest), Some(&body), &[WAIT]).await;
        assert!(matches!(answer.status, 200 | 202), "{card}: {}", answer.text);
        if answer.field("status") == "confirmed" {
            confirmed.push((guest.clone(), room.clone(), answer.field("reservation_id").to_owned()));
        }
    }
    assert!(confirmed.len() >= 3, "at least three approved cards confirm: {confirmed:?}");

    let (guest, _, cancelled) = confirmed.remove(0);
    let answer =
        server.send(Method::POST, &format!("/v1/reservations/{cancelled}/cancel"), Some(&guest), None, &[WAIT]).await;
    assert!(matches!(answer.status, 200 | 202), "{}", answer.text);

    for (n, (guest, room, reservation)) in confirmed.iter().enumerate() {
        let body = json!({"reservation_id": reservation, "rating": 3 + n % 3, "comment": format!("Stay number {n}")});
        let review = server.post(&format!("/v1/rooms/{room}/reviews"), guest, &body).await;
        assert_eq!(review.status, 201, "{}", review.text);
        if n == 0 {
            let host = &rooms.iter().find(|(_, r)| r == room).expect("the room's host").0;
            let reply = server
                .post(&format!("/v1/reviews/{}/reply", review.field("review_id")), host, &json!({"comment": "Thanks!"}))
                .await;
            assert_eq!(reply.status, 200, "{}", reply.text);
        }
    }
    // Room 1 had only the declined card: nothing upcoming, so its host may delist it.
    let (quiet_host, quiet_room) = rooms[1].clone();
    let delisted = server.send(Method::DELETE, &format!("/v1/rooms/{quiet_room}"), Some(&quiet_host), None, &[]).await;
    assert_eq!(delisted.status, 200, "{}", delisted.text);
}

/// Waits until the server's log has stopped growing and every read model has caught up.
async fn settle(server: &StayServer) {
    let store = server.open_store().await;
    let admin = server.token("ops", "admin");
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = store.head().await.expect("head");
    loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let head = store.head().await.expect("head");
        let projections = server.send(Method::GET, "/v1/admin/projections", Some(&admin), None, &[]).await;
        let caught_up = projections.body.as_array().is_some_and(|all| {
            all.iter()
                .all(|p| p["lag_events"].as_u64() == Some(0) && p["dead_letters"].as_array().is_none_or(Vec::is_empty))
        });
        if head == last && caught_up {
            return;
        }
        assert!(Instant::now() < deadline, "the server never settled: {}", projections.text);
        last = head;
    }
}

/// Every read model's answers through the query API, by path (positions mapped by `positions`,
/// paging cursors and notification ids left out).
async fn read_models(
    server: &StayServer,
    store: &EventStore,
    positions: &HashMap<String, String>,
) -> BTreeMap<String, Value> {
    let events = feed(store).await;
    let ids = |kind: &str| -> BTreeSet<String> {
        events.iter().filter(|(_, e)| e.aggregate_type == kind).map(|(_, e)| e.aggregate_id.clone()).collect()
    };
    let actors: BTreeSet<String> =
        events.iter().filter_map(|(_, e)| e.metadata.get("actor").and_then(Value::as_str).map(str::to_owned)).collect();
    let admin = server.token("ops", "admin");
    let mut paths: Vec<(String, String)> = vec![("/v1/rooms?limit=1000".into(), admin.clone())];
    for room in ids("Room") {
        paths.push((format!("/v1/rooms/{room}"), admin.clone()));
        paths.push((format!("/v1/rooms/{room}/reviews"), admin.clone()));
    }
    for reservation in ids("Reservation") {
        paths.push((format!("/v1/reservations/{reservation}"), admin.clone()));
    }
    for actor in &actors {
        let guest = server.token(actor, "guest");
        paths.push((format!("/v1/me/reservations?limit=1000#{actor}"), guest.clone()));
        paths.push((format!("/v1/me/notifications#{actor}"), guest));
    }
    let mut answers = BTreeMap::new();
    for (path, token) in paths {
        let request = path.split('#').next().unwrap_or(&path).to_owned();
        let answer = server.send(Method::GET, &request, Some(&token), None, &[]).await;
        let mut body = answer.body.clone();
        normalise(&mut body, positions);
        answers.insert(path, json!({"status": answer.status, "body": body}));
    }
    answers
}

/// Maps positions (`positions` empty: leaves them) and drops paging cursors.
fn normalise(value: &mut Value, positions: &HashMap<String, String>) {
    match value {
        Value::Object(map) => {
            map.remove("next_cursor");
            // The notifications model names a notification after its event's position, which is
            // the store's own token: the same notification has another id after a move.
            map.remove("notification_id");
            for (key, field) in map.iter_mut() {
                if key.contains("position") {
                    if let Some(mapped) = field.as_str().and_then(|p| positions.get(p)) {
                        *field = Value::String(mapped.clone());
                    }
                } else {
                    normalise(field, positions);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| normalise(item, positions)),
        _ => {}
    }
}

/// Fills a running server with `stay seed`: rooms of three hosts, reservations with every card
/// outcome (the provider's errors and silences end at a 3 s payment deadline), cancellations while
/// pending and once confirmed, reviews and replies.
async fn seed(server: &StayServer) {
    let args = [
        "seed",
        "--url",
        server.url(),
        "--jwt-secret",
        TEST_SECRET,
        "--rooms",
        "6",
        "--hosts",
        "3",
        "--guests",
        "4",
        "--reservations",
        "30",
        "--seed",
        "12",
        "--json",
    ];
    let output = stay_async(args.map(str::to_owned).to_vec()).await;
    assert_ok(&output, "stay seed");
}

#[tokio::test]
async fn a_log_filled_by_stay_seed_on_sqlite_moves_to_postgres_with_every_event_and_read_model() {
    let mut source =
        StayServer::start_with(Backend::Sqlite, &["--payment-deadline", "3s", "--payment-call-timeout", "1s"]).await;
    seed(&source).await;
    settle(&source).await;
    let work = TestSqlite::create();

    // Exported while the source runs.
    let file = export(&source.store_url(), work.dir(), "export.jsonl").await;
    let closing: Value = serde_json::from_str(lines(&file).last().expect("closing line")).expect("JSON");
    assert_eq!(closing["end"], true, "{closing}");
    let count = closing["count"].as_u64().expect("count");
    assert!(count > 50, "a real log: {closing}");

    // The target server has run once (so it is migrated and has its read-model tables), then is stopped.
    let mut target = StayServer::start(Backend::Postgres).await;
    target.kill();
    let out = import(&target.store_url(), &file, &[]).await;
    assert_ok(&out, "stay import");
    assert!(text(&out.stdout).contains(&format!("imported {count} events")), "{}", text(&out.stdout));

    let (from, to) = (
        source.open_store().await,
        EventStore::open(&target.store_url(), StoreOptions::default()).await.expect("open"),
    );
    let positions = assert_same_log(&from, &to).await;
    assert_eq!(positions.len() as u64, count);

    // Read models rebuilt on the target equal the source's.
    // (Not `restart`: after a kill it would signal process id 0, this test's own process group.)
    target.crash_and_restart();
    let out = stay_async(vec![
        "projections".into(),
        "rebuild".into(),
        "--all".into(),
        "--store".into(),
        store_arg(&target.store_url()),
    ])
    .await;
    assert_ok(&out, "stay projections rebuild --all");
    let rebuilt = text(&out.stdout);
    for model in ["roomview", "reservations", "notifications", "reviews"] {
        assert!(rebuilt.contains(&format!("{model}: version 2 is live")), "{rebuilt}");
    }
    settle(&target).await;
    let (expected, actual) =
        (read_models(&source, &from, &positions).await, read_models(&target, &to, &HashMap::new()).await);
    assert_eq!(expected.keys().collect::<Vec<_>>(), actual.keys().collect::<Vec<_>>());
    for (path, answer) in &expected {
        assert_eq!(answer["status"], 200, "{path} on the source: {answer}");
        assert_eq!(Some(answer), actual.get(path), "{path}");
    }
    // The target's server wrote nothing of its own on the imported log.
    assert_eq!(feed(&to).await.len() as u64, count, "the target's server appended events to the imported log");

    // The same file again: already imported, nothing to do.
    let again = import(&target.store_url(), &file, &[]).await;
    assert_ok(&again, "stay import again");
    assert!(text(&again.stdout).contains("imported already"), "{}", text(&again.stdout));
    source.kill();
}

#[tokio::test]
async fn a_log_moves_from_postgres_to_sqlite_and_on_to_sqlite_unchanged() {
    let source = StayServer::start(Backend::Postgres).await;
    // Besides what `stay seed` makes: a price change and a delisting.
    fill(&source).await;
    settle(&source).await;
    let work = TestSqlite::create();
    let first = export(&source.store_url(), work.dir(), "from-postgres.jsonl").await;

    let (middle, last) = (Target::create(Backend::Sqlite).await, Target::create(Backend::Sqlite).await);
    assert_ok(&import(&middle.url(), &first, &[]).await, "import into SQLite");
    let second = export(&middle.url(), work.dir(), "from-sqlite.jsonl").await;
    assert_ok(&import(&last.url(), &second, &[]).await, "import into SQLite again");
    let third = export(&last.url(), work.dir(), "again.jsonl").await;

    assert_same_log(&source.open_store().await, &middle.open().await).await;
    assert_same_log(&middle.open().await, &last.open().await).await;
    // Payloads are written canonically, so the same log exports to the same bytes on any backend.
    let bytes = |path: &Path| std::fs::read(path).expect("read");
    assert_eq!(text(&bytes(&first)), text(&bytes(&second)), "SQLite exports what PostgreSQL exported");
    assert_eq!(bytes(&second), bytes(&third));
}

/// A small log written straight into a store: `streams` aggregates of `per_stream` events, their
/// appends interleaved, with payloads that exercise JSON escaping.
async fn write_log(store: &EventStore, streams: usize, per_stream: usize, per_append: usize) {
    let appends: Vec<Append> = (0..per_stream.div_ceil(per_append))
        .flat_map(|round| {
            (0..streams).map(move |s| {
                let first = round * per_append;
                let events = (first..(first + per_append).min(per_stream))
                    .map(|n| NewEvent {
                        event_type: "Noted".into(),
                        event_version: "1".into(),
                        payload: json!({"n": n, "text": format!("ä \"{s}\"\n"), "price": 12.5, "list": [1, null]}),
                    })
                    .collect();
                Append {
                    aggregate_type: "Probe".into(),
                    aggregate_id: format!("probe-{s}"),
                    expected_version: first as u64,
                    events,
                    metadata: CommandContext::new(format!("writer-{s}")).metadata(Utc::now()),
                }
            })
        })
        .collect();
    for chunk in appends.chunks(streams) {
        for result in futures::future::join_all(chunk.iter().cloned().map(|a| store.append(a))).await {
            result.expect("append");
        }
    }
}

/// A source store with a small log, exported; answers the directory holding both and the file.
async fn small_export(streams: usize, per_stream: usize) -> (TestSqlite, PathBuf) {
    let work = TestSqlite::create();
    let url = StoreUrl::Sqlite(work.path());
    let store = EventStore::open(&url, StoreOptions::default()).await.expect("open");
    store.migrate().await.expect("migrate");
    write_log(&store, streams, per_stream, 5).await;
    let file = export(&url, work.dir(), "export.jsonl").await;
    (work, file)
}

async fn a_damaged_file_is_refused_with_its_line_and_imports_nothing(backend: Backend) {
    let (work, file) = small_export(3, 4).await;
    let original = lines(&file);
    assert_eq!(original.len(), 13);
    let write = |name: &str, lines: &[String]| -> PathBuf {
        let path = work.dir().join(name);
        std::fs::write(&path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).expect("write");
        path
    };
    let mut tampered = original.clone();
    tampered[6] = tampered[6].replace("12.5", "125");
    assert_ne!(tampered[6], original[6]);
    let mut not_json = original.clone();
    not_json[3] = "{\"aggregate_type\": \"Probe\"".into();
    let mut cut = original.clone();
    cut.truncate(9);
    let mut recount = original.clone();
    recount[12] = recount[12].replace("\"count\":12", "\"count\":11");
    let cases = [
        ("tampered.jsonl", tampered, "line 7 "),
        ("not-json.jsonl", not_json, "line 4 "),
        ("truncated.jsonl", cut, "truncated"),
        ("recount.jsonl", recount, "line 13"),
    ];
    for (name, lines, said) in cases {
        let target = Target::create(backend).await;
        let out = import(&target.url(), &write(name, &lines), &[]).await;
        assert!(!out.status.success(), "{name} was imported: {}", text(&out.stdout));
        let stderr = text(&out.stderr);
        assert!(stderr.contains(said) && stderr.contains("nothing was imported"), "{name}: {stderr}");
        assert!(feed(&target.open().await).await.is_empty(), "{name}: events were imported");
    }
}

#[tokio::test]
async fn a_damaged_file_is_refused_with_its_line_on_sqlite() {
    a_damaged_file_is_refused_with_its_line_and_imports_nothing(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_damaged_file_is_refused_with_its_line_on_postgres() {
    a_damaged_file_is_refused_with_its_line_and_imports_nothing(Backend::Postgres).await;
}

async fn a_store_with_events_is_refused(backend: Backend) {
    let (_work, file) = small_export(2, 3).await;
    let target = Target::create(backend).await;
    write_log(&target.open().await, 1, 1, 1).await;
    let out = import(&target.url(), &file, &[]).await;
    assert!(!out.status.success(), "imported into a non-empty store: {}", text(&out.stdout));
    assert!(text(&out.stderr).contains("not empty"), "{}", text(&out.stderr));
    assert_eq!(feed(&target.open().await).await.len(), 1, "nothing was added");

    // Nor may a second, different file follow a finished import.
    let (_other, other_file) = small_export(1, 2).await;
    let fresh = Target::create(backend).await;
    assert_ok(&import(&fresh.url(), &file, &[]).await, "import");
    let out = import(&fresh.url(), &other_file, &[]).await;
    assert!(!out.status.success(), "a second file was imported: {}", text(&out.stdout));
    assert!(text(&out.stderr).contains("another file"), "{}", text(&out.stderr));
}

#[tokio::test]
async fn a_store_with_events_is_refused_on_sqlite() {
    a_store_with_events_is_refused(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_store_with_events_is_refused_on_postgres() {
    a_store_with_events_is_refused(Backend::Postgres).await;
}

async fn a_killed_import_resumes_without_duplicates_or_gaps(backend: Backend) {
    const BATCH: u64 = 100;
    let (work, file) = small_export(40, 1_000).await;
    let total = 40_000u64;
    let target = Target::create(backend).await;
    let store = target.open().await;

    let mut child = Command::new(stay_binary())
        .args([
            "import",
            "--store",
            &store_arg(&target.url()),
            &file.display().to_string(),
            "--batch",
            &BATCH.to_string(),
        ])
        .env_remove("STAY_STORE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start stay import");
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.head().await.expect("head") == Position::START {
        assert!(Instant::now() < deadline, "the import never committed a batch");
        assert!(child.try_wait().expect("wait").is_none(), "the import ended before it could be killed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().expect("kill -9 the import");
    let _ = child.wait();
    let partial = feed(&store).await.len() as u64;
    assert!(partial > 0 && partial < total, "killed halfway: {partial} of {total} events");
    assert_eq!(partial % BATCH, 0, "whole batches only: {partial}");

    let out = import(&target.url(), &file, &[]).await;
    assert_ok(&out, "the resumed import");
    assert!(text(&out.stdout).contains(&format!("resumed after {partial}")), "{}", text(&out.stdout));

    let source = EventStore::open(&StoreUrl::Sqlite(work.path()), StoreOptions::default()).await.expect("open");
    assert_same_log(&source, &target.open().await).await;
    let again = export(&target.url(), work.dir(), "again.jsonl").await;
    assert_eq!(std::fs::read(&file).expect("read"), std::fs::read(&again).expect("read"), "the same log");
}

#[tokio::test]
async fn a_killed_import_resumes_on_sqlite() {
    a_killed_import_resumes_without_duplicates_or_gaps(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_killed_import_resumes_on_postgres() {
    a_killed_import_resumes_without_duplicates_or_gaps(Backend::Postgres).await;
}

#[tokio::test]
async fn export_writes_every_field_of_an_event_and_a_closing_digest() {
    let (_work, file) = small_export(1, 2).await;
    let all = lines(&file);
    assert_eq!(all.len(), 3);
    let first: Value = serde_json::from_str(&all[0]).expect("JSON");
    let fields: Vec<&str> = first.as_object().expect("object").keys().map(String::as_str).collect();
    let mut expected = vec![
        "aggregate_type",
        "aggregate_id",
        "sequence",
        "event_type",
        "event_version",
        "payload",
        "metadata",
        "recorded_at",
        "chain",
    ];
    expected.sort_unstable();
    assert_eq!(fields, expected);
    assert_eq!((first["aggregate_type"].as_str(), first["sequence"].as_u64()), (Some("Probe"), Some(1)));
    let at = DateTime::parse_from_rfc3339(first["recorded_at"].as_str().expect("time")).expect("RFC 3339");
    assert_eq!(first["recorded_at"], at.with_timezone(&Utc).to_rfc3339_opts(SecondsFormat::Micros, true));
    let closing: Value = serde_json::from_str(&all[2]).expect("JSON");
    // The digest is what `head -n -1 FILE | sha256sum` prints.
    let sum = Command::new("sh")
        .args(["-c", &format!("head -n -1 '{}' | sha256sum", file.display())])
        .output()
        .expect("sha256sum");
    let digest = text(&sum.stdout).split_whitespace().next().unwrap_or_default().to_owned();
    assert_eq!(digest.len(), 64, "{}", text(&sum.stderr));
    assert_eq!(closing, json!({"end": true, "format": "stay-export/1", "count": 2, "sha256": digest}));
}
