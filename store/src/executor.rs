//! The command executor: load, handle, persist, retry — and say where the events landed.
//!
//! cqrs-es 0.5's `CqrsFramework::execute` returns nothing, never retries a conflict, and its
//! snapshot stores apply events twice (DESIGN.md §4.1), so Stay runs commands here:
//!
//! 1. take the aggregate's lock stripe, so commands to one aggregate in this process queue rather
//!    than collide (other processes are still caught by the store's version check);
//! 2. first try, with no read at all: `handle` the command on the cached state as it is (or, when
//!    the aggregate is not cached, on a new one at version 0) and append expecting that version.
//!    An event written since (by another process, or before the cache knew the aggregate) makes
//!    the append conflict (and step 4 follows); a refusal or a no-op decided on that state is not
//!    trusted, and step 3 decides again at once;
//! 3. load the aggregate: from the in-process cache plus the events appended since its version,
//!    or from our own snapshot plus the events after it, or from the start — so a command's cost
//!    does not grow with the stream's length — then `handle` the command, collect its events and
//!    append them expecting the loaded version;
//! 4. on a conflict, forget the cached state, wait by the [`Backoff`] schedule and go to step 3;
//! 5. answer with the committed events and their global positions.
//!
//! Each command runs in an `execute` span naming the aggregate, the command and its correlation
//! id, and recording the attempts it took and the version and position it reached.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use stay_domain::Clock;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::error::StoreError;
use crate::event::{Append, CommandContext, EventMetadata, NewEvent, Snapshot};
use crate::position::Position;
use crate::store::EventStore;

/// How the executor retries, caches and snapshots.
#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    /// Attempts per command before a conflict is reported (at least 1).
    pub max_attempts: u32,
    /// The waits between attempts after a conflict. How many there are is `max_attempts` less
    /// one, so the schedule's own limit (`times`) is not used.
    pub backoff: Backoff,
    /// A snapshot is taken each time a stream passes a multiple of this many events (0: never).
    pub snapshot_every: u64,
    /// Aggregates kept in the in-process cache.
    pub cache_capacity: usize,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self { max_attempts: 25, backoff: CONFLICT_BACKOFF, snapshot_every: 200, cache_capacity: 10_000 }
    }
}

/// Waits after conflicts: ceilings of 2 ms doubling to 100 ms, those of the full-jitter waits this
/// schedule replaced (1 ms × 2^attempt, capped at 100 ms). A conflict means another writer has
/// just committed, so the first retry should come almost at once.
const CONFLICT_BACKOFF: Backoff = Backoff::new(Duration::from_millis(2), Duration::from_millis(100));

/// Why a command produced no events.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError<E: std::error::Error> {
    /// The aggregate refused the command (a business rule).
    #[error(transparent)]
    Rejected(E),
    /// Other writers kept changing the aggregate; the command was not applied.
    #[error("the aggregate kept changing under the command; gave up after {attempts} attempts")]
    Conflict {
        /// How many times the command was tried.
        attempts: u32,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An event the command appended, with where it landed.
#[derive(Clone, Debug, PartialEq)]
pub struct CommittedEvent<E> {
    /// Its sequence in the aggregate's stream.
    pub sequence: u64,
    /// Its place in the global feed.
    pub position: Position,
    /// The event.
    pub event: E,
    /// Its metadata.
    pub metadata: EventMetadata,
}

/// What a command did.
#[derive(Clone, Debug, PartialEq)]
pub struct Committed<E> {
    /// The aggregate the command went to.
    pub aggregate_id: String,
    /// The aggregate's version after the command.
    pub version: u64,
    /// The events appended; empty when the command changed nothing (an idempotent repeat).
    pub events: Vec<CommittedEvent<E>>,
    /// How many attempts it took.
    pub attempts: u32,
}

impl<E> Committed<E> {
    /// The position of the last event appended, if any.
    pub fn last_position(&self) -> Option<Position> {
        self.events.last().map(|e| e.position)
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct ExecutorStats {
    /// Commands that committed (with or without events).
    pub committed: AtomicU64,
    /// Commands the aggregate refused.
    pub rejected: AtomicU64,
    /// Conflicts met (each followed by a retry or a give-up).
    pub conflicts: AtomicU64,
    /// Commands given up after `max_attempts` conflicts.
    pub gave_up: AtomicU64,
    /// Aggregate loads that missed the cache.
    pub cache_misses: AtomicU64,
}

const LOCK_STRIPES: usize = 1024;

/// Runs commands against aggregates of type `A` in one event store.
pub struct Executor<A: Aggregate> {
    store: EventStore,
    services: Arc<A::Services>,
    clock: Arc<dyn Clock>,
    config: ExecutorConfig,
    cache: Mutex<AggregateCache<A>>,
    locks: Box<[tokio::sync::Mutex<()>]>,
    stats: Arc<ExecutorStats>,
}

impl<A: Aggregate> fmt::Debug for Executor<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor").field("aggregate", &A::TYPE).field("config", &self.config).finish()
    }
}

impl<A: Aggregate + 'static> Executor<A> {
    /// An executor with the default configuration.
    pub fn new(store: EventStore, services: Arc<A::Services>, clock: Arc<dyn Clock>) -> Self {
        Self::with_config(store, services, clock, ExecutorConfig::default())
    }

    /// An executor with its own configuration.
    pub fn with_config(
        store: EventStore,
        services: Arc<A::Services>,
        clock: Arc<dyn Clock>,
        config: ExecutorConfig,
    ) -> Self {
        let locks = (0..LOCK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect();
        Self {
            store,
            services,
            clock,
            cache: Mutex::new(AggregateCache::new(config.cache_capacity)),
            config,
            locks,
            stats: Arc::default(),
        }
    }

    /// The counters of this executor.
    pub fn stats(&self) -> Arc<ExecutorStats> {
        self.stats.clone()
    }

    /// The store it writes to.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// Runs `command` on aggregate `aggregate_id`, retrying conflicts; returns what it committed.
    pub async fn execute(
        &self,
        aggregate_id: &str,
        command: A::Command,
        context: &CommandContext,
    ) -> Result<Committed<A::Event>, ExecuteError<A::Error>>
    where
        A::Command: Clone,
        A::Error: std::error::Error,
    {
        // Info, so the default filter (`stay_store=info`) keeps it. The log output shows a span
        // only as the context of the events inside it: a command that logs nothing prints
        // nothing, while what it does log (a give-up after conflicts, an unreadable snapshot, the
        // retries at debug level) names the aggregate, the command and the business transaction
        // a person searches logs for. The cost is the span's bookkeeping: its fields borrow what
        // the caller holds, and the position is formatted only by a subscriber that records it.
        let span = tracing::info_span!(
            "execute",
            aggregate = A::TYPE,
            aggregate_id,
            command_id = context.command_id.as_str(),
            correlation_id = context.correlation_id.as_str(),
            attempts = tracing::field::Empty,
            version = tracing::field::Empty,
            position = tracing::field::Empty,
        );
        let (outcome, attempts) =
            self.execute_with_retries(aggregate_id, command, context).instrument(span.clone()).await;
        span.record("attempts", attempts);
        if let Ok(committed) = &outcome {
            span.record("version", committed.version);
            if let Some(position) = committed.last_position() {
                span.record("position", tracing::field::display(position));
            }
        }
        outcome
    }

    /// `execute` without its span: the outcome, and how many attempts it took.
    async fn execute_with_retries(
        &self,
        aggregate_id: &str,
        command: A::Command,
        context: &CommandContext,
    ) -> (Result<Committed<A::Event>, ExecuteError<A::Error>>, u32)
    where
        A::Command: Clone,
        A::Error: std::error::Error,
    {
        let max_attempts = self.config.max_attempts.max(1);
        // `max_attempts` tries have one wait fewer between them.
        let mut waits = self.config.backoff.times(max_attempts as usize - 1).waits();
        let _stripe = self.locks[stripe_of(aggregate_id)].lock().await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            // The first attempt is made without reading the store when it can be (see the
            // module's step 2); the append's expected version catches a state that was behind.
            let fast = match attempt {
                1 => self.attempt_on_cache(aggregate_id, command.clone(), context).await,
                _ => None,
            };
            let outcome = match fast {
                Some(outcome) => outcome,
                None => self.attempt(aggregate_id, command.clone(), context, attempt).await,
            };
            match outcome {
                Err(ExecuteError::Store(StoreError::Conflict)) => {
                    self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                    match waits.next_wait() {
                        Some(wait) => {
                            tracing::debug!(attempt, ?wait, "conflict; trying again");
                            tokio::time::sleep(wait).await;
                        }
                        None => break,
                    }
                }
                Err(err @ ExecuteError::Rejected(_)) => {
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    return (Err(err), attempt);
                }
                other => {
                    if other.is_ok() {
                        self.stats.committed.fetch_add(1, Ordering::Relaxed);
                    }
                    return (other, attempt);
                }
            }
        }
        self.stats.gave_up.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(aggregate = A::TYPE, aggregate_id, attempts = attempt, "command gave up after conflicts");
        (Err(ExecuteError::Conflict { attempts: attempt }), attempt)
    }

    /// The aggregate's current state and version, as a command would see it.
    pub async fn load(&self, aggregate_id: &str) -> Result<(A, u64), StoreError>
    where
        A: Clone,
    {
        let _stripe = self.locks[stripe_of(aggregate_id)].lock().await;
        let (state, version) = self.load_state(aggregate_id).await?;
        let answer = state.clone();
        self.cache_lock().put(aggregate_id, state, version);
        Ok((answer, version))
    }

    /// The cached state and version, without looking at the store (`None` when not cached). It
    /// may be behind the store: only for a caller that tolerates that, such as a saga step that
    /// looks again at the stored state whenever a write it decided on is refused.
    pub async fn cached(&self, aggregate_id: &str) -> Option<(A, u64)>
    where
        A: Clone,
    {
        let _stripe = self.locks[stripe_of(aggregate_id)].lock().await;
        let cache = self.cache_lock();
        cache.entries.get(aggregate_id).map(|(state, version)| (state.clone(), *version))
    }

    /// The command decided without reading the store, on the cached state — or, for an
    /// aggregate not in the cache, on a new one (a command creating an aggregate is the common
    /// case there; for an aggregate that exists, the append at version 0 conflicts). `None` when
    /// the command is refused or changes nothing: a refusal or a no-op decided on a state that
    /// may be behind is not an answer, so the caller decides again on the state as stored.
    async fn attempt_on_cache(
        &self,
        aggregate_id: &str,
        command: A::Command,
        context: &CommandContext,
    ) -> Option<Result<Committed<A::Event>, ExecuteError<A::Error>>> {
        let cached = self.cache_lock().take(aggregate_id);
        let (mut state, version) = cached.unwrap_or_default();
        let sink = EventSink::default();
        // The state handled the command halfway: it is dropped, and the next attempt loads it.
        state.handle(command, &self.services, &sink).await.ok()?;
        let events = sink.collect().await;
        if events.is_empty() {
            return None;
        }
        Some(self.commit(aggregate_id, state, version, events, context, 1).await)
    }

    async fn attempt(
        &self,
        aggregate_id: &str,
        command: A::Command,
        context: &CommandContext,
        attempt: u32,
    ) -> Result<Committed<A::Event>, ExecuteError<A::Error>> {
        // The state leaves the cache while the command runs (the stripe lock keeps other local
        // commands out) and goes back only once its events are committed; a refused or failed
        // command drops it, so a half-applied state is never reused.
        let (mut state, version) = self.load_state(aggregate_id).await?;
        let sink = EventSink::default();
        state.handle(command, &self.services, &sink).await.map_err(ExecuteError::Rejected)?;
        let events = sink.collect().await;
        if events.is_empty() {
            self.cache_lock().put(aggregate_id, state, version);
            return Ok(Committed {
                aggregate_id: aggregate_id.to_owned(),
                version,
                events: Vec::new(),
                attempts: attempt,
            });
        }
        self.commit(aggregate_id, state, version, events, context, attempt).await
    }

    /// Appends `events`, decided on `state` at `version`; on success the new state is cached.
    async fn commit(
        &self,
        aggregate_id: &str,
        state: A,
        version: u64,
        events: Vec<A::Event>,
        context: &CommandContext,
        attempt: u32,
    ) -> Result<Committed<A::Event>, ExecuteError<A::Error>> {
        let metadata = context.metadata(self.clock.now());
        let append = Append {
            aggregate_type: A::TYPE.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            expected_version: version,
            events: events.iter().map(NewEvent::from_domain).collect::<Result<_, _>>()?,
            metadata: metadata.clone(),
        };
        let positions = self.store.append(append).await?;
        let new_version = version + events.len() as u64;
        self.maybe_snapshot(aggregate_id, &state, version, new_version);
        self.cache_lock().put(aggregate_id, state, new_version);

        let committed = events
            .into_iter()
            .zip(positions)
            .enumerate()
            .map(|(i, (event, position))| CommittedEvent {
                sequence: version + 1 + i as u64,
                position,
                event,
                metadata: metadata.clone(),
            })
            .collect();
        Ok(Committed {
            aggregate_id: aggregate_id.to_owned(),
            version: new_version,
            events: committed,
            attempts: attempt,
        })
    }

    /// Cached state plus the events since, or snapshot plus the events since, or a full replay.
    async fn load_state(&self, aggregate_id: &str) -> Result<(A, u64), StoreError> {
        let cached = self.cache_lock().take(aggregate_id);
        let (mut state, mut version) = match cached {
            Some(entry) => entry,
            None => {
                self.stats.cache_misses.fetch_add(1, Ordering::Relaxed);
                self.load_snapshot(aggregate_id).await?
            }
        };
        for event in self.store.load_events::<A>(aggregate_id, version).await? {
            if event.sequence as u64 != version + 1 {
                return Err(StoreError::Decode(format!(
                    "{} {aggregate_id}: expected sequence {}, found {}",
                    A::TYPE,
                    version + 1,
                    event.sequence
                )));
            }
            let payload: A::Event = serde_json::from_value(event.payload)
                .map_err(|e| StoreError::Decode(format!("{} {aggregate_id} #{}: {e}", A::TYPE, event.sequence)))?;
            state.apply(payload);
            version += 1;
        }
        Ok((state, version))
    }

    async fn load_snapshot(&self, aggregate_id: &str) -> Result<(A, u64), StoreError> {
        if self.config.snapshot_every == 0 {
            return Ok((A::default(), 0));
        }
        match self.store.load_snapshot(A::TYPE, aggregate_id).await? {
            None => Ok((A::default(), 0)),
            Some((version, payload)) => match serde_json::from_value::<A>(payload) {
                Ok(state) => Ok((state, version)),
                Err(err) => {
                    // A snapshot from an older shape of the aggregate: replay from the start instead.
                    tracing::info!(aggregate = A::TYPE, aggregate_id, error = %err, "ignoring unreadable snapshot");
                    Ok((A::default(), 0))
                }
            },
        }
    }

    fn maybe_snapshot(&self, aggregate_id: &str, state: &A, old_version: u64, new_version: u64) {
        let every = self.config.snapshot_every;
        if every == 0 || old_version / every == new_version / every {
            return;
        }
        let payload = match serde_json::to_value(state) {
            Ok(payload) => payload,
            Err(err) => {
                tracing::warn!(aggregate = A::TYPE, aggregate_id, error = %err, "cannot serialise snapshot");
                return;
            }
        };
        let snapshot = Snapshot {
            aggregate_type: A::TYPE.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            last_sequence: new_version,
            state: payload,
            taken_at: self.clock.now(),
        };
        let store = self.store.clone();
        // A snapshot is an optimisation: written after the commit, off the command's path.
        tokio::spawn(async move {
            let aggregate_id = snapshot.aggregate_id.clone();
            if let Err(err) = store.save_snapshot(snapshot).await {
                tracing::warn!(aggregate = A::TYPE, aggregate_id, error = %err, "snapshot not saved");
            }
        });
    }

    fn cache_lock(&self) -> std::sync::MutexGuard<'_, AggregateCache<A>> {
        // The cache holds no invariant a panic could break halfway.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn stripe_of(aggregate_id: &str) -> usize {
    let mut hasher = DefaultHasher::new();
    aggregate_id.hash(&mut hasher);
    (hasher.finish() as usize) % LOCK_STRIPES
}

/// A bounded map from aggregate id to (state, version); evicts the oldest entries first.
struct AggregateCache<A> {
    entries: HashMap<String, (A, u64)>,
    order: VecDeque<String>,
    capacity: usize,
}

impl<A> AggregateCache<A> {
    fn new(capacity: usize) -> Self {
        Self { entries: HashMap::new(), order: VecDeque::new(), capacity }
    }

    fn take(&mut self, id: &str) -> Option<(A, u64)> {
        self.entries.remove(id)
    }

    fn put(&mut self, id: &str, state: A, version: u64) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.insert(id.to_owned(), (state, version)).is_none() {
            self.order.push_back(id.to_owned());
        }
        while self.entries.len() > self.capacity {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.entries.remove(&oldest);
                }
                None => break,
            }
        }
        // Ids taken out and put back are queued again; now and then drop every queue entry but an
        // id's newest, so eviction follows recent use.
        if self.order.len() > self.capacity.saturating_mul(2) {
            let mut seen = std::collections::HashSet::new();
            let mut newest_first: Vec<String> = Vec::with_capacity(self.entries.len());
            for id in self.order.drain(..).rev() {
                if self.entries.contains_key(&id) && seen.insert(id.clone()) {
                    newest_first.push(id);
                }
            }
            self.order = newest_first.into_iter().rev().collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use chrono::Utc;
    use cqrs_es::DomainEvent;
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::clock::SystemClock;
    use crate::store::{StoreOptions, StoreUrl};

    const ID: &str = "c-1";

    /// A counter whose every command races another writer, as often as the test says.
    #[derive(Clone, Debug, Default, Serialize, Deserialize)]
    struct Counter {
        count: u64,
    }

    #[derive(Clone, Debug)]
    struct Increment;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Incremented;

    impl DomainEvent for Incremented {
        fn event_type(&self) -> String {
            "Incremented".to_owned()
        }
        fn event_version(&self) -> String {
            "1.0".to_owned()
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("never refused")]
    struct Never;

    /// The other writer: appends to the counter's stream between the executor's load and its
    /// append, for the first `races` commands' attempts.
    struct Rival {
        store: EventStore,
        races: AtomicU32,
    }

    impl Rival {
        async fn race(&self, version: u64) {
            if self.races.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_err() {
                return;
            }
            let append = Append {
                aggregate_type: Counter::TYPE.to_owned(),
                aggregate_id: ID.to_owned(),
                expected_version: version,
                events: vec![NewEvent::from_domain(&Incremented).expect("event")],
                metadata: CommandContext::new("rival").metadata(Utc::now()),
            };
            self.store.append(append).await.expect("the rival's append");
        }
    }

    impl Aggregate for Counter {
        const TYPE: &'static str = "Counter";
        type Command = Increment;
        type Event = Incremented;
        type Error = Never;
        type Services = Rival;

        async fn handle(&mut self, _: Increment, rival: &Rival, sink: &EventSink<Self>) -> Result<(), Never> {
            rival.race(self.count).await;
            sink.write(Incremented, self).await;
            Ok(())
        }

        fn apply(&mut self, _: Incremented) {
            self.count += 1;
        }
    }

    async fn executor(races: u32, config: ExecutorConfig) -> (tempfile::TempDir, Executor<Counter>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EventStore::open(&StoreUrl::Sqlite(dir.path().join("stay.db")), StoreOptions::default())
            .await
            .expect("open");
        store.migrate().await.expect("migrate");
        let rival = Rival { store: store.clone(), races: AtomicU32::new(races) };
        let executor = Executor::with_config(store, Arc::new(rival), Arc::new(SystemClock), config);
        (dir, executor)
    }

    #[tokio::test]
    async fn a_command_decided_on_a_cached_state_that_fell_behind_lands_on_the_stored_one() {
        let (_dir, first) = executor(0, ExecutorConfig::default()).await;
        // Another process's executor over the same store.
        let rival = Rival { store: first.store().clone(), races: AtomicU32::new(0) };
        let second: Executor<Counter> = Executor::with_config(
            first.store().clone(),
            Arc::new(rival),
            Arc::new(SystemClock),
            ExecutorConfig::default(),
        );
        let context = CommandContext::new("test");
        first.execute(ID, Increment, &context).await.expect("first, now cached at version 1");
        second.execute(ID, Increment, &context).await.expect("the other process: version 2");

        // Tried first on the cached state (version 1): the append conflicts, and the command is
        // decided again on the stored state.
        let committed = first.execute(ID, Increment, &context).await.expect("landed");
        assert_eq!(committed.version, 3);
        assert_eq!(committed.events[0].sequence, 3);
        let (state, version) = first.load(ID).await.expect("load");
        assert_eq!((state.count, version), (3, 3));
        assert_eq!(first.stats().conflicts.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn conflicts_wait_from_2_ms_doubling_to_100_ms() {
        let config = ExecutorConfig::default();
        assert_eq!(config.backoff, Backoff::new(Duration::from_millis(2), Duration::from_millis(100)));
        assert_eq!(config.max_attempts, 25);
    }

    #[tokio::test]
    async fn a_conflict_is_retried_after_a_wait_until_the_command_lands() {
        let (_dir, executor) = executor(3, ExecutorConfig::default()).await;
        let started = tokio::time::Instant::now();
        let committed = executor.execute(ID, Increment, &CommandContext::new("test")).await.expect("landed");
        // Each wait is at least half its ceiling: 1 + 2 + 4 ms for three conflicts.
        assert!(started.elapsed() >= Duration::from_millis(7), "{:?}", started.elapsed());
        assert_eq!(committed.attempts, 4);
        assert_eq!(committed.version, 4, "three rival events, then ours");
        assert_eq!(committed.events.len(), 1);
        let stats = executor.stats();
        assert_eq!(stats.conflicts.load(Ordering::Relaxed), 3);
        assert_eq!(stats.committed.load(Ordering::Relaxed), 1);
        assert_eq!(stats.gave_up.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_command_gives_up_after_its_configured_attempts() {
        let config = ExecutorConfig { max_attempts: 3, ..ExecutorConfig::default() };
        let (_dir, executor) = executor(u32::MAX, config).await;
        let outcome = executor.execute(ID, Increment, &CommandContext::new("test")).await;
        assert!(matches!(outcome, Err(ExecuteError::Conflict { attempts: 3 })), "{outcome:?}");
        let stats = executor.stats();
        assert_eq!(stats.conflicts.load(Ordering::Relaxed), 3);
        assert_eq!(stats.gave_up.load(Ordering::Relaxed), 1);
        assert_eq!(stats.committed.load(Ordering::Relaxed), 0);
        let (state, version) = executor.load(ID).await.expect("load");
        assert_eq!((state.count, version), (3, 3), "only the rival's events were written");
    }

    #[tokio::test]
    async fn one_attempt_gives_up_at_the_first_conflict() {
        let config = ExecutorConfig { max_attempts: 1, ..ExecutorConfig::default() };
        let (_dir, executor) = executor(1, config).await;
        let outcome = executor.execute(ID, Increment, &CommandContext::new("test")).await;
        assert!(matches!(outcome, Err(ExecuteError::Conflict { attempts: 1 })), "{outcome:?}");
    }

    /// A span's fields by name, as a subscriber sees them.
    type SpanFields = HashMap<&'static str, String>;

    /// Every span's name and fields.
    #[derive(Clone, Default)]
    struct SpanLog {
        spans: Arc<Mutex<Vec<(&'static str, SpanFields)>>>,
    }

    struct Fields<'a>(&'a mut SpanFields);

    impl tracing::field::Visit for Fields<'_> {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
            self.0.insert(field.name(), format!("{value:?}"));
        }

        fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
            self.0.insert(field.name(), value.to_owned());
        }
    }

    impl SpanLog {
        fn fields(&self, name: &str) -> Vec<SpanFields> {
            let spans = self.spans.lock().expect("span log");
            spans.iter().filter(|(n, _)| *n == name).map(|(_, fields)| fields.clone()).collect()
        }
    }

    impl tracing::Subscriber for SpanLog {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }

        fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            let mut fields = HashMap::new();
            span.record(&mut Fields(&mut fields));
            let mut spans = self.spans.lock().expect("span log");
            spans.push((span.metadata().name(), fields));
            tracing::span::Id::from_u64(spans.len() as u64)
        }

        fn record(&self, span: &tracing::span::Id, values: &tracing::span::Record<'_>) {
            let mut spans = self.spans.lock().expect("span log");
            let index = usize::try_from(span.into_u64() - 1).expect("an index");
            values.record(&mut Fields(&mut spans[index].1));
        }

        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, _: &tracing::Event<'_>) {}
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[tokio::test]
    async fn each_command_runs_in_a_span_with_its_ids_and_what_it_did() {
        let log = SpanLog::default();
        // The test runtime polls on this thread only, so a thread-local subscriber sees it all.
        let _subscriber = tracing::subscriber::set_default(log.clone());
        let (_dir, landing) = executor(1, ExecutorConfig::default()).await;
        let context = CommandContext::new("test").with_command_id("cmd-1").correlated_to("res-7");
        // With one thread-local subscriber, tracing asks only the registering thread's subscriber
        // whether a callsite is wanted, and a test on another thread may have asked first (and
        // been told no): ask again from here, just before the span is made.
        tracing::callsite::rebuild_interest_cache();
        let committed = landing.execute(ID, Increment, &context).await.expect("landed");

        let spans = log.fields("execute");
        assert_eq!(spans.len(), 1, "{spans:?}");
        let span = &spans[0];
        assert_eq!(span["aggregate"], "Counter");
        assert_eq!(span["aggregate_id"], ID);
        assert_eq!(span["command_id"], "cmd-1");
        assert_eq!(span["correlation_id"], "res-7");
        assert_eq!(span["attempts"], "2");
        assert_eq!(span["version"], "2");
        let position = committed.last_position().expect("a position");
        assert_eq!(span["position"], position.to_string());

        // A command that gives up records its attempts, and no version or position.
        let config = ExecutorConfig { max_attempts: 2, ..ExecutorConfig::default() };
        let (_other_dir, giving_up) = executor(u32::MAX, config).await;
        tracing::callsite::rebuild_interest_cache();
        giving_up.execute(ID, Increment, &context).await.expect_err("gave up");
        let spans = log.fields("execute");
        let span = &spans[1];
        assert_eq!(span["attempts"], "2");
        assert!(!span.contains_key("version") && !span.contains_key("position"), "{span:?}");
    }
}
