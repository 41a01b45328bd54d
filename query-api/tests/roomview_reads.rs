//! The room routes over a real store and roomview, with the projector stepped by hand: a read
//! waiting for a position is answered once the projector reaches it, cached rooms are not served
//! once the model has moved past them, and a wait that runs out answers `projection_behind`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use chrono::Utc;
use http_body_util::BodyExt;
use secrecy::SecretString;
use serde_json::Value;
use stay_domain::{Address, Capacity, Currency, Description, PositiveMoney, RoomEvent, RoomId, RoomName, UserId};
use stay_http::JwtKeys;
use stay_projections::models::roomview::RoomView;
use stay_projections::runner::initialize;
use stay_projections::{Projector, ReadModel, RunnerConfig, PROJECTION_MIGRATIONS};
use stay_query_api::progress::WatchTiming;
use stay_query_api::QueryState;
use stay_store::{Append, CommandContext, EventStore, NewEvent, Position, StoreOptions, StoreUrl, SystemClock};
use tempfile::TempDir;
use tower::ServiceExt;

/// A store with roomview, the query routes over it, and a projector that applies only when told.
struct World {
    store: EventStore,
    state: QueryState,
    routes: Router,
    projector: Projector,
    model: Arc<dyn ReadModel>,
    _dir: TempDir,
}

impl World {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = EventStore::open(&StoreUrl::Sqlite(dir.path().join("stay.db")), StoreOptions::default())
            .await
            .expect("open the store");
        store.migrate().await.expect("migrate the store");
        let db = store.sql_database().expect("a SQL database beside the log");
        db.migrate(&PROJECTION_MIGRATIONS).await.expect("migrate the runner's tables");
        let model: Arc<dyn ReadModel> = Arc::new(RoomView);
        initialize(&db, model.as_ref()).await.expect("roomview's tables");
        let projector = Projector::new(store.clone(), db.clone(), vec![model.clone()], RunnerConfig::default());
        let keys = JwtKeys::new(&SecretString::from("a secret for the query tests, long enough"));
        let timing = WatchTiming { idle_recheck: Duration::from_millis(50), ..WatchTiming::default() };
        let state = QueryState::with_timing(store.clone(), db, vec![model.clone()], keys, timing);
        let (routes, _) = stay_query_api::router(state.clone());
        Self { store, state, routes, projector, model, _dir: dir }
    }

    /// Appends a room's event; answers its position. The projector has not applied it yet.
    async fn record(&self, room: RoomId, expected_version: u64, event: &RoomEvent) -> Position {
        let append = Append {
            aggregate_type: "Room".into(),
            aggregate_id: room.to_string(),
            expected_version,
            events: vec![NewEvent::from_domain(event).expect("an event")],
            metadata: CommandContext::new("query-tests").metadata(Utc::now()),
        };
        *self.store.append(append).await.expect("append").first().expect("a position")
    }

    async fn register(&self, name: &str) -> (RoomId, Position) {
        let room = RoomId::generate(&SystemClock);
        let event = RoomEvent::RoomRegistered {
            room_id: room,
            host_id: UserId::new("host-1").expect("a user id"),
            name: RoomName::new(name).expect("a name"),
            description: Description::default(),
            address: Address::new("1 Main St").expect("an address"),
            nightly_price: PositiveMoney::from_minor(9_000, Currency::EUR).expect("a price"),
            capacity: Capacity::new(2).expect("a capacity"),
        };
        (room, self.record(room, 0, &event).await)
    }

    async fn rename(&self, room: RoomId, expected_version: u64, name: &str) -> Position {
        let event = RoomEvent::RoomDetailsChanged {
            room_id: room,
            name: Some(RoomName::new(name).expect("a name")),
            description: None,
            address: None,
            capacity: None,
        };
        self.record(room, expected_version, &event).await
    }

    /// Lets the projector apply everything recorded so far.
    async fn project(&self) {
        while self.projector.step(self.model.as_ref(), 1).await.expect("a batch").read > 0 {}
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        get(&self.routes, path).await
    }

    /// Waits until the roomview watcher has published a checkpoint at or after `position`.
    async fn watcher_sees(&self, position: Position) {
        let watch = self.state.progress("roomview");
        watch.current(); // as a query would: wakes the watcher if it sleeps
        let mut readings = watch.subscribe();
        tokio::time::timeout(
            Duration::from_secs(10),
            readings.wait_for(|p| p.is_some_and(|p| p.checkpoint >= position)),
        )
        .await
        .expect("the watcher sees the projector's progress")
        .expect("the watcher lives");
    }
}

async fn get(routes: &Router, path: &str) -> (StatusCode, Value) {
    let request = Request::get(path).body(Body::empty()).expect("a request");
    let answer = routes.clone().oneshot(request).await.expect("an answer");
    let status = answer.status();
    let bytes = answer.into_body().collect().await.expect("a body").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_room_is_not_served_once_the_model_has_moved_past_it() {
    let w = World::new().await;
    let (room, registered) = w.register("First").await;
    w.project().await;
    let path = format!("/v1/rooms/{room}");

    let (status, view) = w.get(&format!("{path}?min_position={registered}")).await;
    assert_eq!((status, view["name"].as_str()), (StatusCode::OK, Some("First")), "{view}");
    let (_, again) = w.get(&path).await;
    assert_eq!(again, view, "the same answer");
    let (_, page) = w.get("/v1/rooms?limit=20").await;
    assert_eq!(page["items"][0]["name"], "First", "{page}");
    let (_, page_again) = w.get("/v1/rooms?limit=20").await;
    assert_eq!(page_again, page);
    let counts = w.state.room_cache().counts();
    assert!(counts.room_hits >= 1 && counts.page_hits >= 1, "repeats are answered from memory: {counts:?}");

    // A change applied by the projector: a read with its position sees it, never the cached room.
    let renamed = w.rename(room, 1, "Second").await;
    w.project().await;
    let (status, view) = w.get(&format!("{path}?min_position={renamed}")).await;
    assert_eq!((status, view["name"].as_str()), (StatusCode::OK, Some("Second")), "{view}");
    assert_eq!(view["position"], renamed.to_string());
    let (_, page) = w.get(&format!("/v1/rooms?limit=20&min_position={renamed}")).await;
    assert_eq!(page["items"][0]["name"], "Second", "{page}");

    // A plain read sees a change once the watcher has seen the checkpoint move.
    let (_, before) = w.get(&path).await;
    assert_eq!(before["name"], "Second", "cached again at the new progress");
    let renamed_again = w.rename(room, 2, "Third").await;
    w.project().await;
    w.watcher_sees(renamed_again).await;
    let (_, view) = w.get(&path).await;
    assert_eq!(view["name"], "Third", "{view}");
    let (_, page) = w.get("/v1/rooms?limit=20").await;
    assert_eq!(page["items"][0]["name"], "Third", "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_reads_are_answered_when_the_projector_reaches_their_position() {
    let w = World::new().await;
    let (room, registered) = w.register("Before").await;
    w.project().await;
    w.watcher_sees(registered).await;
    for _ in 0..2 {
        let (_, view) = w.get(&format!("/v1/rooms/{room}")).await;
        assert_eq!(view["name"], "Before");
    }
    assert_eq!(w.state.room_cache().counts().room_hits, 1, "cached before the change");

    let renamed = w.rename(room, 1, "After").await;
    let path = format!("/v1/rooms/{room}?min_position={renamed}&wait_ms=20000");
    let reads: Vec<_> = (0..50)
        .map(|_| {
            let (routes, path) = (w.routes.clone(), path.clone());
            tokio::spawn(async move { get(&routes, &path).await })
        })
        .collect();
    let watch = w.state.progress("roomview");
    let deadline = Instant::now() + Duration::from_secs(10);
    while watch.waiting() < 50 {
        assert!(Instant::now() < deadline, "the reads never waited");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(reads.iter().all(|r| !r.is_finished()), "nothing answers before the projector applies the change");
    let looks_before = watch.reads();

    w.project().await;
    for read in reads {
        let (status, view) = tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("answered soon after the projector's progress")
            .expect("no panic");
        assert_eq!((status, view["name"].as_str()), (StatusCode::OK, Some("After")), "{view}");
    }
    let looks = watch.reads() - looks_before;
    assert!(looks < 25, "{looks} looks at the database for 50 waiting reads: they must share one watcher");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_whose_wait_runs_out_is_answered_projection_behind() {
    let w = World::new().await;
    let (room, _) = w.register("Room").await;
    w.project().await;
    let ahead = w.rename(room, 1, "Not yet").await;

    for path in [format!("/v1/rooms/{room}"), "/v1/rooms".to_owned()] {
        let started = Instant::now();
        let (status, problem) = w.get(&format!("{path}?min_position={ahead}&wait_ms=150")).await;
        assert_eq!((status, problem["code"].as_str()), (StatusCode::GATEWAY_TIMEOUT, Some("projection_behind")));
        assert!(started.elapsed() >= Duration::from_millis(140), "it waited as asked");
    }
    let (status, view) = w.get(&format!("/v1/rooms/{room}")).await;
    assert_eq!((status, view["name"].as_str()), (StatusCode::OK, Some("Room")), "plain reads still answer");
}
