//! The event-store contract, run against every backend (DESIGN.md §4.2): SQLite always,
//! PostgreSQL always (CI has it), EventStoreDB when `STAY_TEST_EVENTSTOREDB_URL` names a server.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use stay_store::{
    Append, CommandContext, EventStore, ExecuteError, Executor, ExecutorConfig, NewEvent, Position, Snapshot,
    StoreError, StoreOptions, StoreUrl, SystemClock,
};
use stay_tests::tally::{self, added, Tally, TallyCommand, TallyError, TallyEvent};
use stay_tests::{read_feed_until, TestPostgres, TestSqlite};
use uuid::Uuid;

/// A store on a throw-away database, kept alive for the test.
struct Harness {
    store: EventStore,
    _sqlite: Option<TestSqlite>,
    _postgres: Option<TestPostgres>,
}

fn options() -> StoreOptions {
    StoreOptions { upcasters: Arc::new(tally::upcasters()), ..StoreOptions::default() }
}

async fn sqlite() -> Harness {
    let dir = TestSqlite::create();
    let store = EventStore::open(&StoreUrl::Sqlite(dir.path()), options()).await.expect("open sqlite");
    store.migrate().await.expect("migrate sqlite");
    Harness { store, _sqlite: Some(dir), _postgres: None }
}

async fn postgres() -> Harness {
    let db = TestPostgres::create().await;
    let store = EventStore::open(&StoreUrl::Postgres(db.url().to_owned()), options()).await.expect("open postgres");
    store.migrate().await.expect("migrate postgres");
    Harness { store, _sqlite: None, _postgres: Some(db) }
}

#[cfg(feature = "eventstoredb")]
async fn eventstoredb() -> Harness {
    let url = std::env::var("STAY_TEST_EVENTSTOREDB_URL")
        .expect("STAY_TEST_EVENTSTOREDB_URL must name an EventStoreDB server (docker-compose provides one)");
    // The feed only carries the aggregate types it is told of; the suite writes `Tally`.
    let separator = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{separator}stayAggregateTypes=Tally");
    let store = EventStore::open(&StoreUrl::EventStoreDb(url), options()).await.expect("open eventstoredb");
    store.migrate().await.expect("migrate eventstoredb");
    Harness { store, _sqlite: None, _postgres: None }
}

fn executor(store: &EventStore) -> Executor<Tally> {
    Executor::new(store.clone(), Arc::new(()), Arc::new(SystemClock))
}

fn new_id() -> String {
    Uuid::new_v4().to_string()
}

fn append(id: &str, expected_version: u64, events: Vec<NewEvent>) -> Append {
    Append {
        aggregate_type: "Tally".to_owned(),
        aggregate_id: id.to_owned(),
        expected_version,
        events,
        metadata: CommandContext::new("tester").metadata(Utc::now()),
    }
}

// ---- the contract -------------------------------------------------------------------------

async fn appended_events_read_back_the_same_everywhere(store: &EventStore) {
    let (a, b) = (new_id(), new_id());
    let start = store.head().await.expect("head");
    let context = CommandContext::new("guest-7").correlated_to("reservation-1").caused_by("event-0");
    let metadata = context.metadata(Utc::now());
    let first = store
        .append(Append { metadata: metadata.clone(), ..append(&a, 0, vec![added(1), added(2), added(3)]) })
        .await
        .expect("append a");
    let second = store.append(append(&b, 0, vec![added(10), added(20)])).await.expect("append b");
    assert_eq!(first.len(), 3);
    assert_eq!(second.len(), 2);
    assert!(first.windows(2).all(|w| w[0] < w[1]), "positions rise within an append: {first:?}");
    assert!(first.last() < second.first(), "a later commit has a later position");

    let loaded = store.load_events::<Tally>(&a, 0).await.expect("load");
    assert_eq!(loaded.iter().map(|e| e.sequence).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(loaded[1].payload, json!({"Added": {"amount": 2}}));
    assert_eq!(loaded[1].event_type, "Added");
    assert_eq!(loaded[1].event_version, "1.0");
    assert_eq!(loaded[0].metadata["correlation_id"], "reservation-1");
    assert_eq!(loaded[0].metadata["causation_id"], "event-0");
    assert_eq!(loaded[0].metadata["actor"], "guest-7");
    assert_eq!(loaded[0].metadata["command_id"], json!(context.command_id));
    assert_eq!(store.load_events::<Tally>(&a, 2).await.expect("load tail").len(), 1);

    // PostgreSQL may hold committed events back while older transactions run (anywhere in the
    // cluster): read until they are through.
    let feed = read_feed_until(store, start, 5, Duration::from_secs(10)).await;
    assert_eq!(feed.len(), 5);
    assert_eq!(feed.iter().map(|e| e.position).collect::<Vec<_>>(), [first.clone(), second.clone()].concat());
    assert_eq!(feed[0].aggregate_id, a);
    assert_eq!(feed[4].aggregate_id, b);
    assert_eq!(feed[4].sequence, 2);
    assert_eq!(feed[4].decode::<Tally>().expect("decode"), TallyEvent::Added { amount: 20 });
    assert!((feed[0].recorded_at - metadata.recorded_at).num_milliseconds().abs() < 1);
    for event in &feed {
        let text = event.position.to_string();
        assert_eq!(text.parse::<Position>().expect("parse"), event.position);
    }
    assert_eq!(store.read_feed(first[2], 100).await.expect("feed after").len(), 2);
    assert_eq!(store.read_feed(first[0], 2).await.expect("feed limit").len(), 2);
    assert_eq!(store.head().await.expect("head"), second[1]);
    let stream = store.read_stream("Tally", &b).await.expect("stream");
    assert_eq!(stream.iter().map(|e| e.position).collect::<Vec<_>>(), second);
}

async fn a_stale_or_early_expected_version_is_a_conflict(store: &EventStore) {
    let id = new_id();
    store.append(append(&id, 0, vec![added(1)])).await.expect("first");
    assert!(matches!(store.append(append(&id, 0, vec![added(2)])).await, Err(StoreError::Conflict)));
    assert!(matches!(store.append(append(&id, 5, vec![added(2)])).await, Err(StoreError::Conflict)));
    store.append(append(&id, 1, vec![added(2)])).await.expect("second");
    let sequences: Vec<usize> =
        store.load_events::<Tally>(&id, 0).await.expect("load").iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, vec![1, 2], "refused appends leave nothing behind");
}

async fn a_conflicting_append_fails_alone_while_its_neighbours_commit(store: &EventStore) {
    // 16 appends race for the first event of one stream while 16 others start their own streams;
    // on SQLite they share commit groups. Exactly one racer wins, and every other stream lands.
    let contested = new_id();
    let mut tasks = Vec::new();
    for i in 0..32 {
        let store = store.clone();
        let id = if i % 2 == 0 { contested.clone() } else { new_id() };
        tasks.push(tokio::spawn(async move { (i % 2 == 0, store.append(append(&id, 0, vec![added(i + 1)])).await) }));
    }
    let (mut won, mut conflicted, mut others) = (0, 0, 0);
    for task in tasks {
        match task.await.expect("task") {
            (true, Ok(_)) => won += 1,
            (true, Err(StoreError::Conflict)) => conflicted += 1,
            (false, Ok(_)) => others += 1,
            (contested, Err(err)) => panic!("unexpected failure (contested: {contested}): {err}"),
        }
    }
    assert_eq!((won, conflicted, others), (1, 15, 16));
    assert_eq!(store.load_events::<Tally>(&contested, 0).await.expect("load").len(), 1);
}

async fn thirty_two_concurrent_commands_on_one_aggregate_all_land(store: &EventStore) {
    let id = new_id();
    // Four executors stand for four processes: their commands really collide in the store.
    let executors: Vec<Arc<Executor<Tally>>> = (0..4).map(|_| Arc::new(executor(store))).collect();
    let mut tasks = Vec::new();
    for i in 0..32i64 {
        let executor = executors[i as usize % 4].clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let context = CommandContext::new("tester");
            executor.execute(&id, TallyCommand::Add(i + 1), &context).await.map(|c| (context.command_id, c))
        }));
    }
    let mut command_ids = HashSet::new();
    for task in tasks {
        let (command_id, committed) = task.await.expect("task").expect("every command lands");
        assert_eq!(committed.events.len(), 1);
        command_ids.insert(command_id);
    }
    let events = store.load_events::<Tally>(&id, 0).await.expect("load");
    assert_eq!(events.iter().map(|e| e.sequence).collect::<Vec<_>>(), (1..=32).collect::<Vec<_>>());
    let landed: HashSet<String> =
        events.iter().map(|e| e.metadata["command_id"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(landed, command_ids, "each command's event exactly once");
    let (state, version) = executors[0].load(&id).await.expect("state");
    assert_eq!((state.total, state.additions, version), ((1..=32).sum::<i64>(), 32, 32));
    let conflicts: u64 = executors.iter().map(|e| e.stats().conflicts.load(std::sync::atomic::Ordering::Relaxed)).sum();
    assert!(conflicts > 0, "the four executors really collided, and retried");
}

async fn the_feed_sees_every_event_once_in_order_under_concurrent_writers(store: &EventStore) {
    const WRITERS: usize = 16;
    const EVENTS_EACH: i64 = 1000;
    let start = store.head().await.expect("head");
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            read_feed_until(&store, start, WRITERS * EVENTS_EACH as usize, Duration::from_secs(240)).await
        })
    };
    let executor = Arc::new(executor(store));
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let executor = executor.clone();
        writers.push(tokio::spawn(async move {
            let id = new_id();
            for amount in 1..=EVENTS_EACH {
                executor.execute(&id, TallyCommand::Add(amount), &CommandContext::new("writer")).await.expect("append");
            }
            id
        }));
    }
    let mut ids = HashSet::new();
    for writer in writers {
        ids.insert(writer.await.expect("writer"));
    }
    let seen = reader.await.expect("reader");
    assert_eq!(seen.len(), WRITERS * EVENTS_EACH as usize, "the reader saw every event");
    let mut next_sequence: HashMap<&str, u64> = HashMap::new();
    let mut unique = HashSet::new();
    for pair in seen.windows(2) {
        assert!(pair[0].position < pair[1].position, "feed positions strictly rise: {:?} then {:?}", pair[0], pair[1]);
    }
    for event in &seen {
        assert!(ids.contains(&event.aggregate_id), "only the writers' events");
        assert!(unique.insert((event.aggregate_id.as_str(), event.sequence)), "no event twice");
        let next = next_sequence.entry(event.aggregate_id.as_str()).or_insert(1);
        assert_eq!(event.sequence, *next, "each aggregate's events in order");
        *next += 1;
    }
}

async fn upcasters_apply_on_every_read(store: &EventStore) {
    let id = new_id();
    let start = store.head().await.expect("head");
    let legacy =
        NewEvent { event_type: "Added".into(), event_version: "0.1".into(), payload: json!({"Added": {"n": 5}}) };
    store.append(append(&id, 0, vec![legacy])).await.expect("legacy append");
    let loaded = store.load_events::<Tally>(&id, 0).await.expect("load");
    assert_eq!(loaded[0].event_version, "1.0.0", "the upcaster's version");
    assert_eq!(loaded[0].payload, json!({"Added": {"amount": 5}}));
    let stream = store.read_stream("Tally", &id).await.expect("stream");
    assert_eq!(stream[0].decode::<Tally>().expect("decode"), TallyEvent::Added { amount: 5 });
    let feed = read_feed_until(store, start, 1, Duration::from_secs(10)).await;
    let ours = feed.iter().find(|e| e.aggregate_id == id).expect("the legacy event is in the feed");
    assert_eq!((ours.event_version.as_str(), ours.payload.clone()), ("1.0.0", json!({"Added": {"amount": 5}})));
    let (state, _) = executor(store).load(&id).await.expect("aggregate");
    assert_eq!(state.total, 5);
}

async fn the_executor_answers_refusals_no_ops_and_positions(store: &EventStore) {
    let executor = executor(store);
    let id = new_id();
    let refused = executor.execute(&id, TallyCommand::Add(0), &CommandContext::new("t")).await;
    assert!(matches!(refused, Err(ExecuteError::Rejected(TallyError::NothingToAdd))));
    let none = executor.execute(&id, TallyCommand::AddAll(vec![]), &CommandContext::new("t")).await.expect("no-op");
    assert!(none.events.is_empty());
    assert_eq!(none.last_position(), None);
    let committed =
        executor.execute(&id, TallyCommand::AddAll(vec![4, 5]), &CommandContext::new("t")).await.expect("two");
    assert_eq!(committed.version, 2);
    assert_eq!(committed.events.iter().map(|e| e.sequence).collect::<Vec<_>>(), vec![1, 2]);
    let feed = store.read_stream("Tally", &id).await.expect("stream");
    assert_eq!(
        committed.events.iter().map(|e| e.position).collect::<Vec<_>>(),
        feed.iter().map(|e| e.position).collect::<Vec<_>>()
    );
    assert_eq!(committed.last_position(), Some(feed[1].position));
}

fn tally_snapshot(id: &str, last_sequence: u64, state: serde_json::Value) -> Snapshot {
    Snapshot {
        aggregate_type: "Tally".to_owned(),
        aggregate_id: id.to_owned(),
        last_sequence,
        state,
        taken_at: Utc::now(),
    }
}

async fn snapshots_shorten_cold_loads_and_stay_correct(store: &EventStore) {
    let config = ExecutorConfig { snapshot_every: 10, ..ExecutorConfig::default() };
    let warm = Executor::<Tally>::with_config(store.clone(), Arc::new(()), Arc::new(SystemClock), config.clone());
    let id = new_id();
    for amount in 1..=25 {
        warm.execute(&id, TallyCommand::Add(amount), &CommandContext::new("t")).await.expect("add");
    }
    // Snapshots are written off the command path; give them a moment.
    let mut snapshot = None;
    for _ in 0..50 {
        snapshot = store.load_snapshot("Tally", &id).await.expect("snapshot");
        if matches!(snapshot, Some((20, _))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (sequence, state) = snapshot.expect("a snapshot was taken");
    assert_eq!(sequence, 20);
    assert_eq!(state["total"], json!((1..=20).sum::<i64>()));
    let cold = Executor::<Tally>::with_config(store.clone(), Arc::new(()), Arc::new(SystemClock), config.clone());
    let (state, version) = cold.load(&id).await.expect("cold load");
    assert_eq!((state.total, version), ((1..=25).sum::<i64>(), 25));

    // A snapshot that no longer fits the aggregate's shape is ignored, not trusted.
    store.save_snapshot(tally_snapshot(&id, 24, json!({"unexpected": true}))).await.expect("save");
    let cold = Executor::<Tally>::with_config(store.clone(), Arc::new(()), Arc::new(SystemClock), config.clone());
    let (state, version) = cold.load(&id).await.expect("load past bad snapshot");
    assert_eq!((state.total, version), ((1..=25).sum::<i64>(), 25));

    // A cold load starts from the newest snapshot (the marker total proves it was read, not replayed).
    store.save_snapshot(tally_snapshot(&id, 25, json!({"total": 999_999, "additions": 25}))).await.expect("save");
    let cold = Executor::<Tally>::with_config(store.clone(), Arc::new(()), Arc::new(SystemClock), config);
    let (state, version) = cold.load(&id).await.expect("load from snapshot");
    assert_eq!((state.total, version), (999_999, 25));
}

async fn waiting_readers_wake_on_commit_and_time_out_when_idle(store: &EventStore) {
    // A poll interval of a minute: only a real wake-up can end the wait below in time.
    let store = &EventStore::from_backend(
        store.backend().clone(),
        StoreOptions { poll_interval: Duration::from_secs(60), ..options() },
    );
    let head = store.head().await.expect("head");
    let started = tokio::time::Instant::now();
    assert!(!store.wait_for_events(head, Duration::from_millis(300)).await.expect("idle wait"));
    assert!(started.elapsed() >= Duration::from_millis(300));

    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let woke = store.wait_for_events(head, Duration::from_secs(10)).await.expect("wait");
            (woke, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    store.append(append(&new_id(), 0, vec![added(1)])).await.expect("append");
    let (woke, waited) = waiter.await.expect("waiter");
    assert!(woke);
    assert!(waited < Duration::from_secs(1), "woken by the commit, not by polling: {waited:?}");
}

async fn migrating_again_changes_nothing(store: &EventStore) {
    assert!(store.migrate().await.expect("again").is_empty());
    assert!(store.pending_migrations().await.expect("pending").is_empty());
}

/// Generates, for one backend, a module with a test per clause of the contract. `$harness` opens
/// the backend; `$attr`s go on every test (the EventStoreDB ones are ignored without a server).
macro_rules! conformance {
    ($backend:ident, $harness:path $(, #[$attr:meta])*) => {
        mod $backend {
            conformance!(@tests $harness, [$(#[$attr])*] ;
                appended_events_read_back_the_same_everywhere,
                a_stale_or_early_expected_version_is_a_conflict,
                a_conflicting_append_fails_alone_while_its_neighbours_commit,
                thirty_two_concurrent_commands_on_one_aggregate_all_land,
                the_feed_sees_every_event_once_in_order_under_concurrent_writers,
                upcasters_apply_on_every_read,
                the_executor_answers_refusals_no_ops_and_positions,
                snapshots_shorten_cold_loads_and_stay_correct,
                waiting_readers_wake_on_commit_and_time_out_when_idle,
                migrating_again_changes_nothing
            );
        }
    };
    (@tests $harness:path, $attrs:tt ; $($test:ident),*) => {
        $( conformance!(@one $harness, $attrs, $test); )*
    };
    (@one $harness:path, [$($attr:tt)*], $test:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        $($attr)*
        async fn $test() {
            let harness = $harness().await;
            super::$test(&harness.store).await;
        }
    };
}

conformance!(sqlite, super::sqlite);
conformance!(postgres, super::postgres);
#[cfg(feature = "eventstoredb")]
conformance!(
    eventstoredb,
    super::eventstoredb_turn,
    #[ignore = "needs an EventStoreDB server: set STAY_TEST_EVENTSTOREDB_URL, run with --ignored"]
);

/// One EventStoreDB server serves every test, and several tests count the whole feed: they take
/// turns.
#[cfg(feature = "eventstoredb")]
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An EventStoreDB harness held for one test's turn.
#[cfg(feature = "eventstoredb")]
struct Turn {
    harness: Harness,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

#[cfg(feature = "eventstoredb")]
impl std::ops::Deref for Turn {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.harness
    }
}

#[cfg(feature = "eventstoredb")]
async fn eventstoredb_turn() -> Turn {
    let turn = ONE_AT_A_TIME.lock().await;
    Turn { harness: eventstoredb().await, _turn: turn }
}

// ---- `stay import` into EventStoreDB --------------------------------------------------------

/// Opens the EventStoreDB test server with a feed of `aggregate_type` alone. The server is shared
/// by every test and keeps what they wrote, so a fresh type makes an empty store of its own.
#[cfg(feature = "eventstoredb")]
async fn eventstoredb_store_of(aggregate_type: &str) -> EventStore {
    let url = std::env::var("STAY_TEST_EVENTSTOREDB_URL")
        .expect("STAY_TEST_EVENTSTOREDB_URL must name an EventStoreDB server (docker-compose provides one)");
    let separator = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{separator}stayAggregateTypes={aggregate_type}");
    EventStore::open(&StoreUrl::EventStoreDb(url), options()).await.expect("open eventstoredb")
}

/// `stay import` into EventStoreDB (issue 12): a log exported from SQLite goes in by batches, is
/// interrupted and resumed, and the target's feed then holds the source's events in the source's
/// order with their sequences, metadata and times (to the microsecond); a stale or second import
/// and a non-empty target are refused.
#[cfg(feature = "eventstoredb")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs an EventStoreDB server: set STAY_TEST_EVENTSTOREDB_URL, run with --ignored"]
async fn an_exported_log_imports_into_eventstoredb_keeping_order_sequences_and_times() {
    use stay_store::{EventKey, ImportError, ImportedEvent};

    let _turn = ONE_AT_A_TIME.lock().await;
    // The source: interleaved appends of three aggregates, some of several events.
    let source = sqlite().await;
    let (a, b, c) = (new_id(), new_id(), new_id());
    for (id, expected, events) in [
        (&a, 0, vec![added(1), added(2)]),
        (&b, 0, vec![added(3)]),
        (&a, 2, vec![added(4)]),
        (&c, 0, vec![added(5), added(6), added(7)]),
        (&b, 1, vec![added(8)]),
    ] {
        source.store.append(append(id, expected, events)).await.expect("source append");
    }
    let exported = source.store.read_feed(Position::START, 100).await.expect("source feed");
    assert_eq!(exported.len(), 9);

    // Under a fresh aggregate type, so the shared server's feed for it starts empty.
    let kind = format!("Imported{}", Uuid::new_v4().simple());
    let file: Vec<ImportedEvent> = exported
        .iter()
        .map(|e| ImportedEvent {
            aggregate_type: kind.clone(),
            aggregate_id: e.aggregate_id.clone(),
            sequence: e.sequence,
            event_type: e.event_type.clone(),
            event_version: e.event_version.clone(),
            payload: e.payload.clone(),
            metadata: e.metadata.clone(),
            recorded_at: e.recorded_at,
        })
        .collect();
    let target = eventstoredb_store_of(&kind).await;
    let digest = format!("{:064x}", Uuid::new_v4().as_u128());

    let started = target.begin_import(&digest, 9).await.expect("begin");
    assert_eq!(started.imported, 0);
    let first = target.import_batch(&started, &file[..2]).await.expect("batch 1");
    let second = target.import_batch(&first, &file[2..4]).await.expect("batch 2");
    // Interrupted here: a second run resumes after the fourth event, which is the store's last.
    let resumed = target.begin_import(&digest, 9).await.expect("resume");
    assert_eq!(resumed, second);
    let key = |e: &ImportedEvent| EventKey {
        aggregate_type: e.aggregate_type.clone(),
        aggregate_id: e.aggregate_id.clone(),
        sequence: e.sequence,
    };
    assert_eq!(target.last_event().await.expect("last event"), Some(key(&file[3])));
    // A run still holding older progress cannot write over the resumed one.
    assert!(matches!(target.import_batch(&first, &file[2..4]).await, Err(ImportError::Concurrent)));
    let third = target.import_batch(&resumed, &file[4..7]).await.expect("batch 3");
    let done = target.import_batch(&third, &file[7..]).await.expect("batch 4");
    assert!(done.is_complete());

    let feed = target.read_feed(Position::START, 100).await.expect("target feed");
    let shape = |e: &stay_store::RecordedEvent| {
        (
            e.aggregate_id.clone(),
            e.sequence,
            e.event_type.clone(),
            e.event_version.clone(),
            e.payload.clone(),
            e.metadata.clone(),
            e.recorded_at,
        )
    };
    assert_eq!(feed.iter().map(shape).collect::<Vec<_>>(), exported.iter().map(shape).collect::<Vec<_>>());
    assert!(feed.iter().all(|e| e.aggregate_type == kind));
    assert!(feed.windows(2).all(|w| w[0].position < w[1].position), "the feed's order is the file's");
    assert_eq!(target.last_event().await.expect("last event"), Some(key(&file[8])));

    // Done: the same file is nothing to do, another file is refused.
    assert!(target.begin_import(&digest, 9).await.expect("again").is_complete());
    let other = format!("{:064x}", Uuid::new_v4().as_u128());
    assert!(
        matches!(target.begin_import(&other, 9).await, Err(ImportError::AnotherImport { digest: d }) if d == digest)
    );

    // A store holding events no import wrote is not empty.
    let busy_kind = format!("Busy{}", Uuid::new_v4().simple());
    let busy = eventstoredb_store_of(&busy_kind).await;
    let own = Append { aggregate_type: busy_kind.clone(), ..append(&new_id(), 0, vec![added(1)]) };
    busy.append(own).await.expect("append");
    assert!(matches!(busy.begin_import(&digest, 9).await, Err(ImportError::NotEmpty { events: 1 })));
}
