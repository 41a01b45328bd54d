//! The EventStoreDB backend (cargo feature `eventstoredb`), for users who already run it.
//!
//! **Streams.** Each aggregate is one stream, `{aggregate_type}-{aggregate_id}`, so EventStoreDB's
//! own `$ce-{Type}` category projection works. An event's type is our `event_type`, its data the
//! JSON payload, and its JSON custom metadata an envelope holding the aggregate type and id, the
//! sequence, the event version and our metadata map (plus `$correlationId`/`$causationId`), so an
//! event can be rebuilt from itself. Snapshots live beside the stream, in
//! `snapshot-{type}-{id}`, limited to one event by `$maxCount`.
//!
//! **Revisions.** Sequence N (1-based) is stream revision N-1. An append after version V expects
//! no stream when V = 0 and revision V-1 otherwise; the server refuses a stale expectation, which
//! we answer as `StoreError::Conflict`. Event ids are UUID v5 of stream, sequence and content: a
//! retried identical append is deduplicated by the server, while another command's events at the
//! same sequence still conflict (ids of stream and sequence alone would let the server take the
//! loser of a race for a retry of the winner and answer it with success).
//!
//! **Positions.** The feed is `$all` in log order, and a position is an event's (commit, prepare)
//! pair, which orders `$all`. `read_all` in eventstore 4.0 takes no server-side filter, so the feed
//! reads `$all` page by page and keeps the events of our aggregate streams ([`AggregateStreams`]:
//! by default the streams of Stay's aggregate types; appends of other types are refused, as the
//! feed would never deliver them). Stretches of `$all` found without feed events (EventStoreDB's
//! own, snapshots, other applications') are remembered, so polling readers do not rescan them
//! (`feed`). An append answers only its last event's position, so the store reads the new events
//! back from their stream, which reports each event's `$all` position on servers from 22.6; with
//! older servers it looks for them at the end of `$all`.
//! EventStoreDB has no open transactions to wait for: an append is visible whole and in log order,
//! so reading `$all` after a position never skips an event.
//!
//! **Wake-ups.** A catch-up `subscribe_to_all` with the same stream filter, started at the end,
//! pokes waiting feed readers when another process appends. It only wakes them: readers always
//! read the feed themselves, so a dropped subscription loses no event, only latency until the
//! reconnect (or the poll) — and no second delivery path can disagree with the feed.
//!
//! **Import.** `stay import` appends another store's log with its own sequences, metadata and
//! times, in file order, with its progress in a stream of its own (`import`).
//!
//! The user needs read access to `$all` (in a secure cluster: an admin or an explicit ACL), and
//! on a cluster the default `nodePreference=leader`, so reads follow writes.

mod aggregate_streams;
mod codec;
mod feed;
mod import;
mod repository;
mod url;
mod wake;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cqrs_es::persist::SerializedEvent;
use cqrs_es::Aggregate;
use eventstore::{Client, ClientSettings, StreamPosition};
use serde_json::Value;
use tokio::task::JoinHandle;

pub use aggregate_streams::AggregateStreams;
pub use repository::EventStoreDbRepository;

use feed::{EmptyRanges, KnownHead};

use codec::{
    event_data, expected_revision, known_position, read_from, recorded_at_of, stream_name, to_position, Decoded,
    Envelope, SnapshotRecord,
};
use repository::{append_to_stream, read_all_page, read_stream_from, read_stream_page, Direction};
use url::{describe, split_aggregate_types_param};

use crate::error::StoreError;
use crate::event::{load_through, Append, RecordedEvent, Snapshot};
use crate::position::{FeedDistance, Position};
use crate::redact::redact_password;
use crate::signal::FeedSignal;

/// Smallest `$all` page of a feed read: a reader asking for one event should not pay one round
/// trip per system event in between.
const FEED_PAGE_MIN: usize = 32;
/// Largest `$all` page of a feed read.
const FEED_PAGE_MAX: usize = 1024;
// A page must hold more than the already-seen event a read may start with, or a read could stall.
const _: () = assert!(FEED_PAGE_MIN >= 2 && FEED_PAGE_MAX >= FEED_PAGE_MIN);
/// `$all` page when reading backwards from the end (head, and finding appended events).
const BACKWARD_PAGE: usize = 256;
/// How far back from the end of `$all` an append looks for its events when the server does not
/// report positions on stream reads (servers before 22.6).
const POSITION_SCAN_LIMIT: usize = 4096;

/// The EventStoreDB event store. Cheap to clone; the wake-up subscription ends with the last clone.
#[derive(Clone)]
pub struct EventStoreDbStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    repository: EventStoreDbRepository,
    streams: AggregateStreams,
    signal: FeedSignal,
    /// Stretches of `$all` without feed events, so polling readers do not rescan them.
    empty: Mutex<EmptyRanges>,
    /// The last answer of `head`, so the next one scans back only to it.
    known_head: Mutex<Option<KnownHead>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl fmt::Debug for EventStoreDbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The client is not `Debug`, and its settings hold credentials.
        f.debug_struct("EventStoreDbStore").field("streams", &self.inner.streams).finish_non_exhaustive()
    }
}

impl From<eventstore::Error> for StoreError {
    fn from(err: eventstore::Error) -> Self {
        match err {
            eventstore::Error::WrongExpectedVersion { .. } => StoreError::Conflict,
            err => StoreError::database(err),
        }
    }
}

impl EventStoreDbStore {
    /// Connects to the server named by an `esdb://` or `esdb+discover://` connection string and
    /// starts the wake-up subscription. The feed's streams are those of `aggregate_types` (each
    /// aggregate's `Aggregate::TYPE`, listed where the store is opened), unless our own URL
    /// parameter `stayAggregateTypes` (comma-separated types, or `*` for every aggregate stream)
    /// says otherwise.
    pub async fn connect(url: &str, aggregate_types: &[String]) -> Result<Self, StoreError> {
        let (url, types) = split_aggregate_types_param(url);
        let streams = match types {
            Some(types) => AggregateStreams::parse(&types)?,
            None => AggregateStreams::of_types(aggregate_types),
        };
        Self::connect_with(&url, streams).await
    }

    /// Connects with an explicit choice of the feed's streams (the URL is passed on as it is).
    pub async fn connect_with(url: &str, streams: AggregateStreams) -> Result<Self, StoreError> {
        streams.validate()?;
        let settings: ClientSettings = url
            .parse()
            .map_err(|e| StoreError::UnsupportedUrl(format!("{}: {}", redact_password(url), describe(&e))))?;
        let runtime = tokio::runtime::Handle::try_current().map_err(StoreError::database)?;
        let client = Client::with_runtime_handle(runtime, settings)?;
        probe(&client).await?;
        Self::from_client(client, streams)
    }

    /// Wraps a client (not contacted yet) and starts the wake-up subscription. Needs a Tokio runtime.
    pub fn from_client(client: Client, streams: AggregateStreams) -> Result<Self, StoreError> {
        streams.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(StoreError::database)?;
        let signal = FeedSignal::new();
        let tasks =
            vec![runtime.spawn(wake::wake_feed_readers(client.clone(), streams.subscription_filter(), signal.clone()))];
        let repository = EventStoreDbRepository::new(client.clone(), streams.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                repository,
                streams,
                signal,
                empty: Mutex::default(),
                known_head: Mutex::default(),
                tasks,
            }),
        })
    }

    /// The client, for what only EventStoreDB can do.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Which streams form the feed.
    pub fn aggregate_streams(&self) -> &AggregateStreams {
        &self.inner.streams
    }

    /// The cqrs-es repository over this server, used to load aggregates.
    pub fn repository(&self) -> &EventStoreDbRepository {
        &self.inner.repository
    }

    pub(crate) fn signal(&self) -> &FeedSignal {
        &self.inner.signal
    }

    /// An aggregate's events after `after_sequence`, in order, as stored (not upcast).
    pub async fn load_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        after_sequence: u64,
    ) -> Result<Vec<SerializedEvent>, StoreError> {
        load_through::<_, A>(self.repository(), aggregate_id, after_sequence).await
    }

    /// Appends one aggregate's events atomically if its stream is still at `expected_version`;
    /// returns each event's `$all` position.
    pub async fn append(&self, append: Append) -> Result<Vec<Position>, StoreError> {
        if append.events.is_empty() {
            return Ok(Vec::new());
        }
        let event_types: Vec<&str> = append.events.iter().map(|e| e.event_type.as_str()).collect();
        self.inner.streams.check_writable(&append.aggregate_type, &event_types)?;
        let stream = stream_name(&append.aggregate_type, &append.aggregate_id);
        let metadata = serde_json::to_value(append.metadata.to_map())?;
        let mut data = Vec::with_capacity(append.events.len());
        for (i, event) in append.events.iter().enumerate() {
            let sequence = append.expected_version.saturating_add(i as u64 + 1);
            let envelope =
                Envelope::new(&append.aggregate_type, &append.aggregate_id, sequence, &event.event_version, &metadata);
            data.push(event_data(&event.event_type, &event.payload, &envelope, &stream)?);
        }
        let written =
            append_to_stream(&self.inner.client, &stream, expected_revision(append.expected_version), data).await?;
        // The first new event has revision `expected_version` (its sequence minus one).
        let positions =
            self.appended_positions(&stream, append.expected_version, append.events.len(), written.position).await;
        if let Some(last) = positions.last() {
            self.inner.signal.advance(*last);
        }
        Ok(positions)
    }

    /// Up to `limit` events after `after` (exclusive), in `$all` order.
    pub async fn read_feed(&self, after: Position, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut events = Vec::new();
        if limit == 0 {
            return Ok(events);
        }
        let page_size = feed_page_size(limit);
        // Everything at or before `floor` has been looked at; none of it after `quiet_since` is
        // in the feed.
        let mut floor = lock(&self.inner.empty).skip(after);
        let mut quiet_since = after;
        loop {
            let page = read_all_page(&self.inner.client, read_from(floor), page_size, Direction::Forwards).await?;
            let start = floor;
            for event in &page {
                let position = to_position(event.position);
                // The read starts at `floor` inclusively when an event sits there.
                if position <= floor {
                    continue;
                }
                floor = position;
                if !self.inner.streams.contains(&event.stream_id, &event.event_type) {
                    continue;
                }
                events.push(Decoded::from_stored(event)?.into_recorded(position));
                quiet_since = position;
                if events.len() == limit {
                    return Ok(events);
                }
            }
            if page.len() < page_size {
                lock(&self.inner.empty).record(quiet_since, floor);
                return Ok(events);
            }
            if floor == start {
                return Err(stalled_read(floor));
            }
        }
    }

    /// How far the feed runs ahead of `after`. Commit positions are byte offsets in the log, not
    /// counts, so the feed's events after it are counted by reading `$all` forward (their stream
    /// names and types only; no payload is decoded), up to `cap`; the time is the first one's as
    /// Stay recorded it (the server's own time when its envelope has none).
    pub async fn distance_after(&self, after: Position, cap: u64) -> Result<FeedDistance, StoreError> {
        let mut distance = FeedDistance::default();
        if cap == 0 {
            return Ok(distance);
        }
        let page_size = feed_page_size(usize::try_from(cap).unwrap_or(usize::MAX));
        let mut floor = lock(&self.inner.empty).skip(after);
        loop {
            let page = read_all_page(&self.inner.client, read_from(floor), page_size, Direction::Forwards).await?;
            let start = floor;
            for event in &page {
                let position = to_position(event.position);
                if position <= floor {
                    continue;
                }
                floor = position;
                if !self.inner.streams.contains(&event.stream_id, &event.event_type) {
                    continue;
                }
                distance.first_recorded_at.get_or_insert_with(|| recorded_at_of(event));
                distance.events += 1;
                if distance.events >= cap {
                    return Ok(distance);
                }
            }
            if page.len() < page_size {
                return Ok(distance);
            }
            if floor == start {
                return Err(stalled_read(floor));
            }
        }
    }

    /// One aggregate's whole stream with positions (for audit). Servers before 22.6 report no
    /// positions on stream reads; those events carry `Position::START`.
    pub async fn read_stream(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let events = read_stream_from(&self.inner.client, &stream_name(aggregate_type, aggregate_id), 0).await?;
        events
            .iter()
            .map(|e| Ok(Decoded::from_stored(e)?.into_recorded(known_position(e.position).unwrap_or(Position::START))))
            .collect()
    }

    /// The position of the newest event of the feed (`START` when there is none).
    pub async fn head(&self) -> Result<Position, StoreError> {
        let known = *lock(&self.inner.known_head);
        let mut from = StreamPosition::End;
        // Everything at or after `ceiling` has been looked at.
        let mut ceiling: Option<eventstore::Position> = None;
        let mut top = None;
        let head = 'scan: loop {
            let page = read_all_page(&self.inner.client, from, BACKWARD_PAGE, Direction::Backwards).await?;
            let start = ceiling;
            for event in &page {
                if ceiling.is_some_and(|c| event.position >= c) {
                    continue;
                }
                ceiling = Some(event.position);
                let position = to_position(event.position);
                top.get_or_insert(position);
                // Nothing newer matched, and nothing between the last answer and its top does.
                if let Some(known) = known.filter(|k| position <= k.top) {
                    break 'scan known.head;
                }
                if self.inner.streams.contains(&event.stream_id, &event.event_type) {
                    break 'scan position;
                }
            }
            match ceiling {
                Some(c) if page.len() == BACKWARD_PAGE && ceiling != start => from = StreamPosition::Position(c),
                _ => break 'scan Position::START,
            }
        };
        if let Some(top) = top {
            *lock(&self.inner.known_head) = Some(KnownHead { top, head });
        }
        Ok(head)
    }

    /// The newest snapshot of an aggregate: its last sequence and state.
    pub async fn load_snapshot(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<(u64, Value)>, StoreError> {
        let snapshot = repository::latest_snapshot(&self.inner.client, aggregate_type, aggregate_id).await?;
        Ok(snapshot.map(|s| (s.last_sequence, s.state)))
    }

    /// Records a snapshot, kept only if newer than the one stored.
    pub async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let record = SnapshotRecord {
            aggregate_type: snapshot.aggregate_type,
            aggregate_id: snapshot.aggregate_id,
            last_sequence: snapshot.last_sequence,
            snapshot_version: 0,
            state: snapshot.state,
            taken_at: snapshot.taken_at,
        };
        repository::save_snapshot(&self.inner.client, record).await
    }

    /// The `$all` positions of `count` events just appended to `stream` from `first_revision`.
    /// The append has committed, so this never fails: what it cannot learn it approximates,
    /// loudly (see the module doc).
    async fn appended_positions(
        &self,
        stream: &str,
        first_revision: u64,
        count: usize,
        written: eventstore::Position,
    ) -> Vec<Position> {
        let mut found: Vec<Option<Position>> = vec![None; count];
        match read_stream_page(&self.inner.client, stream, first_revision, count).await {
            Ok(events) => {
                for event in &events {
                    note_position(&mut found, first_revision, event.revision, known_position(event.position));
                }
            }
            Err(err) => tracing::debug!(error = %err, stream, "could not read appended events back"),
        }
        if count == 1 && found[0].is_none() {
            // A single event's position is the append's own.
            found[0] = known_position(written);
        }
        if found.iter().any(Option::is_none) {
            self.scan_for_appended(stream, first_revision, &mut found).await;
        }
        if found.iter().any(Option::is_none) {
            tracing::warn!(
                stream,
                first_revision,
                count,
                "positions of appended events unknown; using the append's position for them"
            );
            // Fill from the back so positions never decrease within the append.
            let mut later = known_position(written).unwrap_or(Position::START);
            for slot in found.iter_mut().rev() {
                match slot {
                    Some(position) => later = *position,
                    None => *slot = Some(later),
                }
            }
        }
        found.into_iter().map(|p| p.unwrap_or(Position::START)).collect()
    }

    /// Looks for appended events at the end of `$all` (servers that report no positions on
    /// stream reads), within `POSITION_SCAN_LIMIT` events.
    async fn scan_for_appended(&self, stream: &str, first_revision: u64, found: &mut [Option<Position>]) {
        let mut from = StreamPosition::End;
        let mut ceiling: Option<eventstore::Position> = None;
        let mut scanned = 0;
        while scanned < POSITION_SCAN_LIMIT && found.iter().any(Option::is_none) {
            let page = match read_all_page(&self.inner.client, from, BACKWARD_PAGE, Direction::Backwards).await {
                Ok(page) => page,
                Err(err) => {
                    tracing::debug!(error = %err, stream, "could not look for appended events in $all");
                    return;
                }
            };
            let start = ceiling;
            for event in &page {
                if ceiling.is_some_and(|c| event.position >= c) {
                    continue;
                }
                ceiling = Some(event.position);
                if event.stream_id == stream {
                    note_position(found, first_revision, event.revision, Some(to_position(event.position)));
                }
            }
            scanned += page.len();
            match ceiling {
                Some(c) if page.len() == BACKWARD_PAGE && ceiling != start => from = StreamPosition::Position(c),
                _ => return,
            }
        }
    }
}

/// Locks what feed reads remember; a panic elsewhere cannot leave it inconsistent (every update
/// is a single assignment or insert), so a poisoned lock is simply taken over.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Records `position` for the event at `revision` if it is one of those appended from `first_revision`.
fn note_position(found: &mut [Option<Position>], first_revision: u64, revision: u64, position: Option<Position>) {
    let slot =
        revision.checked_sub(first_revision).and_then(|i| usize::try_from(i).ok()).and_then(|i| found.get_mut(i));
    if let Some(slot @ None) = slot {
        *slot = position;
    }
}

/// The `$all` page for a feed read of `limit` events: at least two, so a page that starts with
/// the already-seen event at the start still moves on.
fn feed_page_size(limit: usize) -> usize {
    limit.saturating_add(1).clamp(FEED_PAGE_MIN, FEED_PAGE_MAX)
}

fn stalled_read(at: Position) -> StoreError {
    StoreError::Database(format!("EventStoreDB returned no event after {at} in a full page of $all").into())
}

/// Checks at start-up that the server answers and lets us read `$all`, which the feed needs.
async fn probe(client: &Client) -> Result<(), StoreError> {
    match read_all_page(client, StreamPosition::End, 1, Direction::Backwards).await {
        Ok(_) => Ok(()),
        Err(eventstore::Error::AccessDenied) => Err(StoreError::Database(
            "EventStoreDB refused to let this user read $all, which the event feed needs".into(),
        )),
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::time::Duration;

    use serde_json::json;
    use stay_domain::Room;

    use super::*;
    use crate::event::{CommandContext, NewEvent};
    use chrono::Utc;
    use cqrs_es::persist::PersistedEventRepository;

    /// A store whose server does not exist: enough for everything decided before the network.
    fn offline_store() -> EventStoreDbStore {
        let settings = "esdb://127.0.0.1:1?tls=false&maxDiscoverAttempts=1&discoveryInterval=10".parse().unwrap();
        EventStoreDbStore::from_client(Client::new(settings).unwrap(), AggregateStreams::of_types(&["Room"])).unwrap()
    }

    fn append(aggregate_type: &str) -> Append {
        Append {
            aggregate_type: aggregate_type.into(),
            aggregate_id: "r-1".into(),
            expected_version: 0,
            events: vec![NewEvent { event_type: "RoomOpened".into(), event_version: "1.0".into(), payload: json!({}) }],
            metadata: CommandContext::new("test").metadata(Utc::now()),
        }
    }

    fn send<F: Future + Send>(_: F) {}

    fn types() -> Vec<String> {
        vec!["Room".to_owned()]
    }

    #[tokio::test]
    async fn every_future_is_send() {
        let store = offline_store();
        send(EventStoreDbStore::connect("esdb://127.0.0.1:1?tls=false", &[]));
        send(store.distance_after(Position::START, 10));
        send(store.load_events::<Room>("r-1", 0));
        send(store.append(append("Room")));
        send(store.read_feed(Position::START, 10));
        send(store.read_stream("Room", "r-1"));
        send(store.head());
        send(store.load_snapshot("Room", "r-1"));
        send(store.save_snapshot(Snapshot {
            aggregate_type: "Room".to_owned(),
            aggregate_id: "r-1".to_owned(),
            last_sequence: 3,
            state: json!({}),
            taken_at: Utc::now(),
        }));
        let repo = store.repository();
        send(repo.get_events::<Room>("r-1"));
        send(repo.get_last_events::<Room>("r-1", 2));
        send(repo.get_snapshot::<Room>("r-1"));
        send(repo.persist::<Room>(&[], None));
        send(repo.stream_events::<Room>("r-1"));
        send(repo.stream_all_events::<Room>());
        send(store.begin_import("d", 1));
        send(store.last_event());
        let progress = crate::import::ImportProgress { digest: "d".to_owned(), total: 1, imported: 0 };
        send(store.import_batch(&progress, &[]));
    }

    #[tokio::test]
    async fn what_needs_no_server_is_answered_without_one() {
        let store = offline_store();
        let mut empty = append("Room");
        empty.events.clear();
        assert!(store.append(empty).await.unwrap().is_empty());
        assert!(store.read_feed(Position::START, 0).await.unwrap().is_empty());
        // An aggregate type outside the feed is refused before anything is written.
        assert!(matches!(store.append(append("Invoice")).await, Err(StoreError::Schema(_))));
        // So is an import batch the feed would not deliver.
        let progress = crate::import::ImportProgress { digest: "d".to_owned(), total: 1, imported: 0 };
        let invoice = crate::import::ImportedEvent {
            aggregate_type: "Invoice".into(),
            aggregate_id: "i-1".into(),
            sequence: 1,
            event_type: "InvoiceIssued".into(),
            event_version: "1.0".into(),
            payload: json!({}),
            metadata: json!({}),
            recorded_at: Utc::now(),
        };
        let refused = store.import_batch(&progress, &[invoice]).await;
        assert!(matches!(refused, Err(crate::import::ImportError::Store(StoreError::Schema(_)))), "{refused:?}");
        assert!(format!("{store:?}").contains("Room"));
    }

    #[tokio::test]
    async fn the_repository_refuses_malformed_batches_before_writing() {
        let store = offline_store();
        let event = |sequence: usize| {
            SerializedEvent::new(
                "r-1".into(),
                sequence,
                "Room".into(),
                "RoomOpened".into(),
                "1.0".into(),
                json!({}),
                json!({}),
            )
        };
        let repo = store.repository();
        for batch in [vec![event(1), event(3)], vec![event(0)]] {
            let outcome = repo.persist::<Room>(&batch, None).await;
            assert!(matches!(outcome, Err(cqrs_es::persist::PersistenceError::UnknownError(_))), "{outcome:?}");
        }
        assert!(repo.persist::<Room>(&[], None).await.is_ok());
    }

    #[tokio::test]
    async fn the_wake_up_subscription_ends_with_the_last_clone() {
        let store = offline_store();
        let task = store.inner.tasks[0].abort_handle();
        let clone = store.clone();
        drop(store);
        tokio::task::yield_now().await;
        assert!(!task.is_finished());
        drop(clone);
        for _ in 0..100 {
            if task.is_finished() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the wake-up task outlived the store");
    }

    #[tokio::test]
    async fn bad_connection_strings_are_refused_without_leaking_credentials() {
        let err = EventStoreDbStore::connect("esdb://admin:s3cret@db:notaport", &types()).await.unwrap_err();
        assert!(matches!(&err, StoreError::UnsupportedUrl(m) if !m.contains("s3cret")), "{err}");
        let err = EventStoreDbStore::connect("esdb://db:2113?stayAggregateTypes=$all", &types()).await.unwrap_err();
        assert!(matches!(err, StoreError::UnsupportedUrl(_)));
        let err = EventStoreDbStore::connect("esdb://db:2113?nodePreference=nowhere", &types()).await.unwrap_err();
        assert!(matches!(err, StoreError::UnsupportedUrl(_)));
        // No list of types from the edge, and none in the URL: a feed of nothing is refused.
        let err = EventStoreDbStore::connect("esdb://db:2113?tls=false", &[]).await.unwrap_err();
        assert!(matches!(&err, StoreError::UnsupportedUrl(m) if m.contains("aggregate type")), "{err}");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_an_error_not_a_hang() {
        let url = "esdb://127.0.0.1:1?tls=false&maxDiscoverAttempts=1&discoveryInterval=10&gossipTimeout=500";
        let outcome = tokio::time::timeout(Duration::from_secs(60), EventStoreDbStore::connect(url, &types())).await;
        assert!(matches!(outcome, Ok(Err(StoreError::Database(_)))), "{outcome:?}");
    }

    #[test]
    fn feed_pages_always_move_on() {
        assert_eq!(feed_page_size(1), FEED_PAGE_MIN);
        assert_eq!(feed_page_size(100), 101);
        assert_eq!(feed_page_size(usize::MAX), FEED_PAGE_MAX);
    }

    #[test]
    fn appended_positions_fill_their_own_slots_only() {
        let mut found = vec![None; 3];
        note_position(&mut found, 10, 9, Some(Position::new(1, 1)));
        note_position(&mut found, 10, 11, Some(Position::new(7, 7)));
        note_position(&mut found, 10, 11, Some(Position::new(8, 8)));
        note_position(&mut found, 10, 13, Some(Position::new(9, 9)));
        assert_eq!(found, vec![None, Some(Position::new(7, 7)), None]);
    }

    #[test]
    fn wrong_expected_version_is_a_conflict() {
        let err = eventstore::Error::WrongExpectedVersion {
            expected: eventstore::ExpectedRevision::Exact(3),
            current: eventstore::CurrentRevision::Current(4),
        };
        assert!(matches!(StoreError::from(err), StoreError::Conflict));
        assert!(matches!(StoreError::from(eventstore::Error::ConnectionClosed), StoreError::Database(_)));
    }
}
