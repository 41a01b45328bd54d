//! How far each read model has got, watched by one task per model and shared by every query.
//!
//! A query needs a model's live version (which tables to read) and, with `min_position`, its
//! checkpoint (how far that version has applied the feed). Read by each query, that is one or two
//! round trips more per query, and a waiting query used to poll them every few milliseconds on its
//! own: with hundreds waiting, hundreds of pollers. Here one task per model reads them and
//! publishes a [`Progress`] on a `watch` channel. Waiting queries wait on the channel; plain ones
//! take the published progress without a round trip, and it keys roomview's cached answers
//! (`room_cache`).
//!
//! When to read again: a checkpoint can only move when the feed holds events after it, and the
//! store tells when events are committed ([`EventStore::wait_for_events`], woken by commits in this
//! process and by notifications across processes). The watcher's `signal` tells when the model's
//! checkpoint moves: on PostgreSQL the database announces every move, whichever process made it
//! (`stay_store::checkpoint_moves`); elsewhere this process's projector tells of its own commits
//! ([`stay_projections::runner::Committed`]). So the watcher
//! - sleeps while the feed holds nothing after the published checkpoint (looking again at least
//!   every `idle_recheck`);
//! - when it does, reads the feed's head and then only the checkpoint, until the checkpoint has
//!   reached that head: with a signal, once per move (and every `fallback` meanwhile — for a
//!   projector in another process that this process's signal cannot hear, or every
//!   `announced_fallback` with the database's announcements, in case one was missed);
//!   without one, one small query every `refresh` (every `slow_refresh` once the checkpoint has
//!   not moved for `stalled`: a projector that is down should not cost a query per `refresh`);
//! - reads the live version again when the checkpoint stands still, at most every
//!   `version_recheck`: a rebuild's switch leaves the old version's checkpoint standing, so a
//!   switch is noticed that soon, and a checkpoint that moves needs no such look.
//!
//! The task runs while queries ask: the first one starts it, and it stops after `dormant_after`
//! with no query and nobody waiting, clearing what it published (a restarted watcher never answers
//! from a reading taken before its pause). It holds its owner weakly and stops as soon as the
//! owner (the query routes' state) is dropped, which is when the server stops. A database error
//! keeps the last reading, is logged the first time and then at most every `ERROR_LOG_EVERY`, and
//! the next look comes after a backoff.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use stay_projections::runner::{checkpoint_name, versions};
use stay_store::{Backoff, EventStore, Position, SqlDatabase, StoreError};
use tokio::sync::watch;
use tracing::Instrument;

/// How often the same run of database errors is logged again.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(30);

/// A read model's progress: the version queries read and how far that version has applied the
/// feed. Ordered by version, then checkpoint: a later reading never compares lower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Progress {
    /// The live version.
    pub version: i64,
    /// Its checkpoint: every event up to it is in that version's tables.
    pub checkpoint: Position,
}

/// Reads a model's progress now, straight from the database.
async fn read_progress(db: &SqlDatabase, model: &str) -> Result<Progress, StoreError> {
    let version = versions(db, model).await?.live;
    let checkpoint = db.checkpoint(&checkpoint_name(model, version)).await?;
    Ok(Progress { version, checkpoint })
}

/// How a watcher paces itself.
#[derive(Clone, Copy, Debug)]
pub struct WatchTiming {
    /// Between looks while the projector has events to apply.
    pub refresh: Duration,
    /// Between looks once the checkpoint has stood still for `stalled` with events waiting.
    pub slow_refresh: Duration,
    /// How long the checkpoint may stand still with events waiting before looks slow down.
    pub stalled: Duration,
    /// With a projector's signal: the longest wait for it before looking anyway (the model's
    /// worker may run in another process).
    pub fallback: Duration,
    /// The same when the signal is the database's announcement of the checkpoint's moves
    /// (PostgreSQL), which hears every process's projector: a look only in case one was missed.
    pub announced_fallback: Duration,
    /// The longest sleep while the feed holds nothing new (a rebuild's switch is noticed by then).
    pub idle_recheck: Duration,
    /// How often the live version is read again while the checkpoint stands still.
    pub version_recheck: Duration,
    /// With no query for this long and nobody waiting, the task stops until the next query.
    pub dormant_after: Duration,
    /// A plain query trusts a reading at most this old (older: the database is failing; it reads
    /// for itself and uses no cached answer).
    pub max_age: Duration,
    /// Waits after database errors.
    pub retry: Backoff,
}

impl Default for WatchTiming {
    fn default() -> Self {
        Self {
            refresh: Duration::from_millis(2),
            slow_refresh: Duration::from_millis(25),
            stalled: Duration::from_secs(1),
            fallback: Duration::from_millis(100),
            announced_fallback: Duration::from_secs(1),
            idle_recheck: Duration::from_millis(250),
            version_recheck: Duration::from_millis(50),
            dormant_after: Duration::from_secs(5),
            max_age: Duration::from_secs(1),
            retry: Backoff::new(Duration::from_millis(50), Duration::from_secs(1)),
        }
    }
}

/// One model's watcher: the published progress and the task that keeps it current. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ProgressWatch {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    model: &'static str,
    store: EventStore,
    db: SqlDatabase,
    timing: WatchTiming,
    /// Moves when this process's projector commits a batch of the model, if it runs the model.
    signal: Option<watch::Receiver<u64>>,
    /// The latest reading (`None` before the task's first one, and while it sleeps).
    published: watch::Sender<Option<Progress>>,
    /// Whether a task is running (at most one is).
    running: AtomicBool,
    /// Never sent on: dropped with the last handle, which wakes the task's receiver with an error,
    /// so the task stops at once rather than at its next look.
    _owner_alive: watch::Sender<()>,
    owner_gone: watch::Receiver<()>,
    /// Times below are milliseconds since `epoch`, plus one (0 means never).
    epoch: Instant,
    last_demand: AtomicU64,
    /// When the task last read the database successfully.
    last_good: AtomicU64,
    /// Queries waiting for a position.
    waiting: AtomicUsize,
    /// Reads of the progress from the database (the task's looks, successful or not, and a
    /// query's own reads when the task had no reading to give), since the start.
    reads: AtomicU64,
}

impl Inner {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    fn is_idle(&self) -> bool {
        let since = self.now().saturating_sub(self.last_demand.load(Ordering::SeqCst));
        self.waiting.load(Ordering::SeqCst) == 0 && u128::from(since) > self.timing.dormant_after.as_millis()
    }

    /// Starts the task unless one runs.
    fn start(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        if self.running.compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            let span = tracing::info_span!("progress_watcher", projection = self.model);
            runtime.spawn(watch_model(Arc::downgrade(self), OwnerGone(self.owner_gone.clone())).instrument(span));
        }
    }

    /// The task's way out when nobody asks: forget the reading, then stop, unless a query came
    /// meanwhile and found the task still running (then it runs on). True when the task must end.
    fn go_dormant(&self) -> bool {
        self.last_good.store(0, Ordering::SeqCst);
        self.published.send_replace(None);
        self.running.store(false, Ordering::SeqCst);
        // A query that marked its demand before `running` turned false did not start a task.
        let resume =
            !self.is_idle() && self.running.compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst).is_ok();
        if !resume {
            tracing::debug!(projection = self.model, "no query for a while: the progress watcher sleeps");
        }
        !resume
    }

    /// Publishes a reading taken just now.
    fn publish(&self, progress: Progress) {
        self.published.send_if_modified(|published| {
            let changed = *published != Some(progress);
            *published = Some(progress);
            changed
        });
        self.last_good.store(self.now(), Ordering::SeqCst);
    }
}

/// What a wait for a position ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waited {
    /// The model reached the position: read this progress.
    Reached(Progress),
    /// The deadline passed first; the last reading, if the watcher had one.
    TimedOut(Option<Progress>),
}

impl ProgressWatch {
    /// A watcher of `model`; its task starts with the first query.
    pub fn new(model: &'static str, store: EventStore, db: SqlDatabase, timing: WatchTiming) -> Self {
        Self::woken_by(model, store, db, timing, None)
    }

    /// A watcher of `model` that, while the model is behind, reads its progress when `signal`
    /// moves (this process's projector committed) rather than polling for it.
    pub fn woken_by(
        model: &'static str,
        store: EventStore,
        db: SqlDatabase,
        timing: WatchTiming,
        signal: Option<watch::Receiver<u64>>,
    ) -> Self {
        let (owner_alive, owner_gone) = watch::channel(());
        let inner = Inner {
            model,
            store,
            db,
            timing,
            signal,
            published: watch::channel(None).0,
            running: AtomicBool::new(false),
            _owner_alive: owner_alive,
            owner_gone,
            epoch: Instant::now(),
            last_demand: AtomicU64::new(0),
            last_good: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            reads: AtomicU64::new(0),
        };
        Self { inner: Arc::new(inner) }
    }

    /// The model watched.
    pub fn model(&self) -> &'static str {
        self.inner.model
    }

    /// Notes that a query needs the progress, starting the task if it sleeps.
    fn demand(&self) {
        self.inner.last_demand.store(self.inner.now(), Ordering::SeqCst);
        if !self.inner.running.load(Ordering::SeqCst) {
            self.inner.start();
        }
    }

    /// The current progress for a query without `min_position`: the watcher's reading if it is
    /// running and has read the database within `max_age`; `None` otherwise (read it yourself).
    pub fn current(&self) -> Option<Progress> {
        self.demand();
        let last_good = self.inner.last_good.load(Ordering::SeqCst);
        let age = self.inner.now().saturating_sub(last_good);
        if last_good == 0 || u128::from(age) > self.inner.timing.max_age.as_millis() {
            return None;
        }
        *self.inner.published.borrow()
    }

    /// Waits until the published checkpoint has reached `wanted`, or `deadline` passes. Answers at
    /// once when it already has; otherwise it is woken by the watcher's readings only.
    pub async fn reached(&self, wanted: Position, deadline: tokio::time::Instant) -> Waited {
        let _waiting = Waiting::new(&self.inner);
        self.demand();
        let mut published = self.inner.published.subscribe();
        let reached = |p: &Option<Progress>| p.is_some_and(|p| p.checkpoint >= wanted);
        let outcome = match tokio::time::timeout_at(deadline, published.wait_for(reached)).await {
            Ok(Ok(progress)) => *progress,
            // Timed out, or the watcher is gone (the server is stopping).
            Ok(Err(_)) | Err(_) => None,
        };
        match outcome {
            Some(progress) => Waited::Reached(progress),
            None => Waited::TimedOut(*published.borrow()),
        }
    }

    /// Reads the progress from the database now, for a query the watcher had no reading for.
    pub async fn read_now(&self) -> Result<Progress, StoreError> {
        self.inner.reads.fetch_add(1, Ordering::SeqCst);
        metrics::counter!("stay_query_progress_reads_total", "projection" => self.inner.model, "by" => "query")
            .increment(1);
        read_progress(&self.inner.db, self.inner.model).await
    }

    /// How often the model's progress was read from the database so far (each read is one to
    /// three small queries): by the task, however many queries asked, and by queries that found
    /// no reading. For tests and metrics.
    pub fn reads(&self) -> u64 {
        self.inner.reads.load(Ordering::SeqCst)
    }

    /// Queries waiting for a position now.
    pub fn waiting(&self) -> usize {
        self.inner.waiting.load(Ordering::SeqCst)
    }

    /// Whether the task is running.
    pub fn is_running(&self) -> bool {
        self.inner.running.load(Ordering::SeqCst)
    }

    /// The published progress (`None` while the task sleeps or has not read yet), with no demand
    /// noted: for tests, and to wait for a reading.
    pub fn subscribe(&self) -> watch::Receiver<Option<Progress>> {
        self.inner.published.subscribe()
    }
}

/// Counts a waiting query while it lives.
struct Waiting<'a>(&'a Inner);

impl<'a> Waiting<'a> {
    fn new(inner: &'a Inner) -> Self {
        inner.waiting.fetch_add(1, Ordering::SeqCst);
        Self(inner)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Logs a run of database errors: the first at once, then at most every `ERROR_LOG_EVERY`.
#[derive(Debug, Default)]
struct ErrorLog {
    failures: u64,
    last_logged: Option<Instant>,
}

impl ErrorLog {
    fn failed(&mut self, model: &str, err: &StoreError) {
        self.failures += 1;
        if self.last_logged.is_none_or(|at| at.elapsed() >= ERROR_LOG_EVERY) {
            self.last_logged = Some(Instant::now());
            tracing::warn!(
                projection = model,
                error = %err,
                failures = self.failures,
                "the progress watcher cannot read the model's progress; queries keep its last reading"
            );
        }
    }

    fn succeeded(&mut self, model: &str) {
        if self.failures > 0 {
            tracing::info!(projection = model, failures = self.failures, "the progress watcher reads again");
        }
        *self = Self::default();
    }
}

/// What the task knows between looks.
struct Look {
    known: Option<Progress>,
    /// When the checkpoint last moved.
    last_move: Instant,
    /// When the live version was last read.
    version_read: Instant,
}

impl Look {
    fn new() -> Self {
        Self { known: None, last_move: Instant::now(), version_read: Instant::now() }
    }

    /// Reads the checkpoint of the known version; and the live version too when nothing is known
    /// yet, or when the checkpoint stood still and the version was last read `version_recheck`
    /// ago (a rebuild's switch leaves the old version's checkpoint standing, so a checkpoint that
    /// moves needs no such look).
    async fn take(&mut self, db: &SqlDatabase, model: &str, version_recheck: Duration) -> Result<Progress, StoreError> {
        let progress = match self.known {
            None => {
                self.version_read = Instant::now();
                read_progress(db, model).await?
            }
            Some(known) => {
                let checkpoint = db.checkpoint(&checkpoint_name(model, known.version)).await?;
                if checkpoint > known.checkpoint || self.version_read.elapsed() < version_recheck {
                    Progress { version: known.version, checkpoint }
                } else {
                    self.version_read = Instant::now();
                    let live = versions(db, model).await?.live;
                    if live == known.version {
                        Progress { version: live, checkpoint }
                    } else {
                        Progress { version: live, checkpoint: db.checkpoint(&checkpoint_name(model, live)).await? }
                    }
                }
            }
        };
        if self.known.is_none_or(|known| progress > known) {
            self.last_move = Instant::now();
        }
        self.known = Some(progress);
        Ok(progress)
    }
}

/// The watcher's task: look, publish, wait for a reason to look again; until nobody asks or the
/// owner is dropped.
///
/// While the feed's head (as last seen) is ahead of the checkpoint, each look is one query, the
/// checkpoint, every `refresh`. Once the checkpoint has reached that head, the task waits for the
/// feed to hold something after it and then reads the new head.
async fn watch_model(owner: Weak<Inner>, mut stopped: OwnerGone) {
    let Some(inner) = owner.upgrade() else { return };
    let (model, store, db, timing) = (inner.model, inner.store.clone(), inner.db.clone(), inner.timing);
    let mut signal = inner.signal.clone();
    drop(inner);
    let mut look = Look::new();
    // The feed's head when last read, while the projector has yet to reach it.
    let mut head: Option<Position> = None;
    let mut errors = ErrorLog::default();
    let mut retry = timing.retry.waits();
    tracing::debug!("the progress watcher starts");
    loop {
        {
            let Some(inner) = owner.upgrade() else { return };
            if inner.is_idle() && inner.go_dormant() {
                return;
            }
        }
        if let Some(signal) = signal.as_mut() {
            // Commits from here on wake the next wait; the look below sees those before.
            signal.borrow_and_update();
        }
        let taken = look.take(&db, model, timing.version_recheck).await;
        let Some(inner) = owner.upgrade() else { return };
        inner.reads.fetch_add(1, Ordering::SeqCst);
        metrics::counter!("stay_query_progress_reads_total", "projection" => model, "by" => "watcher").increment(1);
        let progress = match taken {
            Ok(progress) => {
                inner.publish(progress);
                errors.succeeded(model);
                retry.reset();
                progress
            }
            Err(err) => {
                errors.failed(model, &err);
                drop(inner);
                if !pause(retry.next_wait().unwrap_or(timing.retry.max), &mut stopped).await {
                    return;
                }
                continue;
            }
        };
        drop(inner);
        let behind = head.is_some_and(|head| progress.checkpoint < head);
        if !behind {
            // Caught up with the head last seen: wait for the feed to hold something after the
            // checkpoint (at once if it already does), then see how far it goes.
            let pending = tokio::select! {
                () = stopped.wait() => return,
                pending = store.wait_for_events(progress.checkpoint, timing.idle_recheck) => pending,
            };
            let read_head = match pending {
                Ok(false) => Ok(None),
                Ok(true) => store.head().await.map(Some),
                Err(err) => Err(err),
            };
            head = match read_head {
                Ok(head) => head,
                Err(err) => {
                    errors.failed(model, &err);
                    if !pause(retry.next_wait().unwrap_or(timing.retry.max), &mut stopped).await {
                        return;
                    }
                    None
                }
            };
            if head.is_none() {
                // Nothing new (or the feed cannot be read): look again now, which also notices a
                // rebuild's switch.
                continue;
            }
        }
        // The projector has events to apply: with its signal, wait for its next commit (or the
        // fallback, for a projector in another process); without, give it a moment (a longer one
        // if it seems stuck).
        if let Some(commits) = signal.as_mut() {
            tokio::select! {
                () = stopped.wait() => return,
                changed = commits.changed() => if changed.is_err() {
                    // The projector is gone: poll as without one.
                    signal = None;
                },
                () = tokio::time::sleep(timing.fallback) => {}
            }
            continue;
        }
        let wait = if look.last_move.elapsed() >= timing.stalled { timing.slow_refresh } else { timing.refresh };
        if !pause(wait, &mut stopped).await {
            return;
        }
    }
}

/// Completes when the watcher's owner is dropped.
struct OwnerGone(watch::Receiver<()>);

impl OwnerGone {
    async fn wait(&mut self) {
        // Nothing is ever sent: this ends only when the sender is dropped with its owner.
        while self.0.changed().await.is_ok() {}
    }

    fn is_gone(&self) -> bool {
        self.0.has_changed().is_err()
    }
}

/// Sleeps `wait`; false when the watcher must stop meanwhile.
async fn pause(wait: Duration, stopped: &mut OwnerGone) -> bool {
    if wait.is_zero() {
        return !stopped.is_gone();
    }
    tokio::select! {
        () = stopped.wait() => false,
        () = tokio::time::sleep(wait) => true,
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;
    use stay_projections::PROJECTION_MIGRATIONS;
    use stay_store::{Append, CommandContext, NewEvent, StoreOptions, StoreUrl};
    use tempfile::TempDir;

    use super::*;

    const MODEL: &str = "probe";

    /// A migrated SQLite store; the test plays the projector by moving `probe`'s checkpoint.
    struct Fixture {
        store: EventStore,
        db: SqlDatabase,
        appended: u64,
        _dir: TempDir,
    }

    impl Fixture {
        async fn new() -> Self {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let url = StoreUrl::Sqlite(dir.path().join("stay.db"));
            let store = EventStore::open(&url, StoreOptions::default()).await.expect("open the store");
            store.migrate().await.expect("migrate the store");
            let db = store.sql_database().expect("a SQL database beside the log");
            db.migrate(&PROJECTION_MIGRATIONS).await.expect("migrate the runner's tables");
            Self { store, db, appended: 0, _dir: dir }
        }

        fn watch(&self, timing: WatchTiming) -> ProgressWatch {
            ProgressWatch::new(MODEL, self.store.clone(), self.db.clone(), timing)
        }

        /// Commits an event for the projector to apply; answers its position.
        async fn append(&mut self) -> Position {
            let append = Append {
                aggregate_type: "Probe".into(),
                aggregate_id: "p".into(),
                expected_version: self.appended,
                events: vec![NewEvent { event_type: "Noted".into(), event_version: "1".into(), payload: json!({}) }],
                metadata: CommandContext::new("test").metadata(Utc::now()),
            };
            self.appended += 1;
            *self.store.append(append).await.expect("append").first().expect("a position")
        }

        /// What the projector's batch does to the checkpoint of version 1.
        async fn apply_up_to(&self, position: Position) {
            let name = checkpoint_name(MODEL, 1);
            let mut tx = self.db.begin().await.expect("begin");
            let from = tx.checkpoint(&name).await.expect("checkpoint");
            tx.save_checkpoint(&name, from, position).await.expect("move the checkpoint");
            tx.commit().await.expect("commit");
        }
    }

    fn quick() -> WatchTiming {
        WatchTiming {
            idle_recheck: Duration::from_millis(50),
            max_age: Duration::from_millis(300),
            retry: Backoff::new(Duration::from_millis(10), Duration::from_millis(20)),
            ..WatchTiming::default()
        }
    }

    fn later(seconds: u64) -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(seconds)
    }

    /// Waits (a bounded time) until `done` holds.
    async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until the watcher publishes a reading that satisfies `done`.
    async fn published(watch: &ProgressWatch, done: impl FnMut(&Option<Progress>) -> bool) -> Option<Progress> {
        let mut readings = watch.subscribe();
        let reading = tokio::time::timeout(Duration::from_secs(10), readings.wait_for(done))
            .await
            .expect("in time")
            .expect("the watcher lives");
        *reading
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_waiting_reads_are_woken_by_the_projectors_progress_and_share_one_watchers_looks() {
        let mut f = Fixture::new().await;
        let watch = f.watch(WatchTiming::default());
        let wanted = f.append().await;
        let waiters: Vec<_> = (0..200)
            .map(|_| {
                let watch = watch.clone();
                tokio::spawn(async move { watch.reached(wanted, later(30)).await })
            })
            .collect();
        eventually("all 200 reads wait", || watch.waiting() == 200).await;
        let looks_before = watch.reads();
        assert!(waiters.iter().all(|w| !w.is_finished()), "the position is not reached yet");

        f.apply_up_to(wanted).await;
        for waiter in waiters {
            match waiter.await.expect("no panic") {
                Waited::Reached(progress) => assert_eq!(progress, Progress { version: 1, checkpoint: wanted }),
                other => panic!("not woken by the progress: {other:?}"),
            }
        }

        // One task looked for all of them: far fewer looks than waiting reads.
        let looks = watch.reads() - looks_before;
        assert!(looks < 100, "{looks} looks at the database for 200 waiting reads");
        assert_eq!(watch.waiting(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_the_projectors_signal_a_wait_reads_once_per_commit_and_not_in_between() {
        let mut f = Fixture::new().await;
        let (commits, signal) = watch::channel(0u64);
        // A fallback far longer than the test: only the signal can wake the watcher in time.
        let timing = WatchTiming { fallback: Duration::from_secs(60), ..WatchTiming::default() };
        let watch = ProgressWatch::woken_by(MODEL, f.store.clone(), f.db.clone(), timing, Some(signal));
        let wanted = f.append().await;
        let waiter = {
            let watch = watch.clone();
            tokio::spawn(async move { watch.reached(wanted, later(30)).await })
        };
        eventually("the read waits", || watch.waiting() == 1).await;
        // The watcher has seen the event the projector has yet to apply…
        eventually("the watcher looked", || watch.reads() >= 1).await;
        tokio::time::sleep(Duration::from_millis(100)).await;

        // …and while the projector applies nothing, it does not look again.
        let before = watch.reads();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(watch.reads(), before, "no polling while the wait is idle");
        assert!(!waiter.is_finished());

        // The projector commits and says so: the waiting read is answered at once.
        f.apply_up_to(wanted).await;
        let committed = Instant::now();
        commits.send_modify(|n| *n += 1);
        let waited = tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("answered").expect("no panic");
        let took = committed.elapsed();
        assert_eq!(waited, Waited::Reached(Progress { version: 1, checkpoint: wanted }));
        assert!(took < Duration::from_millis(500), "answered {took:?} after the commit");
        assert!(watch.reads() - before <= 2, "one look per commit: {} looks", watch.reads() - before);
    }

    #[tokio::test]
    async fn a_position_already_reached_is_answered_at_once_and_one_never_reached_times_out() {
        let mut f = Fixture::new().await;
        let watch = f.watch(quick());
        let first = f.append().await;
        f.apply_up_to(first).await;
        watch.current();
        published(&watch, |p| p.is_some_and(|p| p.checkpoint == first)).await;

        // No time to wait at all, and no need to.
        let now = tokio::time::Instant::now();
        assert_eq!(watch.reached(first, now).await, Waited::Reached(Progress { version: 1, checkpoint: first }));

        let ahead = Position::new(first.major() + 1_000, 0);
        let waited = watch.reached(ahead, tokio::time::Instant::now() + Duration::from_millis(100)).await;
        assert_eq!(waited, Waited::TimedOut(Some(Progress { version: 1, checkpoint: first })));
    }

    #[tokio::test]
    async fn a_rebuilds_switch_to_the_next_version_is_published_with_no_new_event() {
        let mut f = Fixture::new().await;
        let watch = f.watch(quick());
        let first = f.append().await;
        f.apply_up_to(first).await;
        watch.current();
        published(&watch, |p| p.is_some_and(|p| p.checkpoint == first)).await;

        // Version 2 has caught up (as a rebuild does) and goes live.
        let mut tx = f.db.begin().await.expect("begin");
        tx.save_checkpoint(&checkpoint_name(MODEL, 2), Position::START, first).await.expect("v2's checkpoint");
        tx.run(
            "INSERT INTO projection_state (name, live_version, building_version, updated_at_ms) VALUES ($1, 2, NULL, 0)",
            &[MODEL.into()],
        )
        .await
        .expect("v2 is live");
        tx.commit().await.expect("commit");

        let switched = published(&watch, |p| p.is_some_and(|p| p.version == 2)).await;
        assert_eq!(switched, Some(Progress { version: 2, checkpoint: first }));
    }

    #[tokio::test]
    async fn the_watcher_keeps_its_last_reading_through_database_errors_and_reads_again_after_them() {
        let mut f = Fixture::new().await;
        let watch = f.watch(quick());
        let first = f.append().await;
        f.apply_up_to(first).await;
        watch.current();
        let good = published(&watch, |p| p.is_some_and(|p| p.checkpoint == first)).await;

        f.db.run("ALTER TABLE checkpoints RENAME TO checkpoints_away", &[]).await.expect("break the reads");
        let failed_from = watch.reads();
        eventually("the watcher keeps looking", || watch.reads() >= failed_from + 3).await;
        assert!(watch.is_running(), "it survives the errors");
        assert_eq!(*watch.subscribe().borrow(), good, "the last good reading stays published");
        eventually("a plain read stops trusting an old reading", || watch.current().is_none()).await;

        f.db.run("ALTER TABLE checkpoints_away RENAME TO checkpoints", &[]).await.expect("mend the reads");
        let second = f.append().await;
        f.apply_up_to(second).await;
        published(&watch, |p| p.is_some_and(|p| p.checkpoint == second)).await;
        assert_eq!(watch.current(), Some(Progress { version: 1, checkpoint: second }));
    }

    #[tokio::test]
    async fn the_watcher_sleeps_while_nobody_asks_and_wakes_with_the_next_query() {
        let f = Fixture::new().await;
        let watch = f.watch(WatchTiming { dormant_after: Duration::from_millis(100), ..quick() });
        assert!(!watch.is_running(), "nobody asked yet");
        watch.current();
        published(&watch, Option::is_some).await;
        assert!(watch.is_running());

        eventually("the watcher sleeps", || !watch.is_running()).await;
        assert_eq!(*watch.subscribe().borrow(), None, "a sleeping watcher publishes nothing");
        let looks = watch.reads();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(watch.reads(), looks, "no looks while asleep");

        assert_eq!(watch.current(), None, "the first read after the sleep reads for itself");
        assert!(watch.is_running(), "and wakes the watcher");
        published(&watch, Option::is_some).await;
    }

    #[tokio::test]
    async fn the_watcher_stops_as_soon_as_its_owner_is_dropped() {
        let f = Fixture::new().await;
        // Long idle waits: only the owner's drop can stop it within the test.
        let slow = WatchTiming {
            idle_recheck: Duration::from_secs(60),
            dormant_after: Duration::from_secs(60),
            ..WatchTiming::default()
        };
        let watch = f.watch(slow);
        watch.current();
        published(&watch, Option::is_some).await;

        // The server stops: its state, and with it the watcher's owner, is dropped.
        let mut readings = watch.subscribe();
        drop(watch);
        let ended =
            tokio::time::timeout(Duration::from_secs(2), async { while readings.changed().await.is_ok() {} }).await;
        assert!(ended.is_ok(), "the task let go of the channel: it has stopped");
    }
}
