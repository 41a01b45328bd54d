//! Our own cqrs-es `PersistedEventRepository` over the `eventstore` client (no published crate
//! does this for cqrs-es 0.5), and the stream reads and appends the store shares with it.

use std::fmt;

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayFeed, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use eventstore::{
    AppendToStreamOptions, Client, EventData, ExpectedRevision, ReadAllOptions, ReadStreamOptions, StreamMetadata,
    StreamPosition, WriteResult,
};
use serde_json::Value;

use super::aggregate_streams::{in_type_stream, AggregateStreams};
use super::codec::{
    event_data, expected_revision, snapshot_stream_name, stream_name, Decoded, Envelope, SnapshotRecord,
};
use crate::error::StoreError;

/// Events per read when a stream or `$all` is replayed page by page.
pub(super) const REPLAY_PAGE: usize = 512;
/// Events buffered between a replay task and its consumer.
const REPLAY_CHANNEL: usize = 256;
/// Tries of a snapshot save that lost a race to another snapshot writer.
const SNAPSHOT_SAVE_ATTEMPTS: usize = 3;

/// cqrs-es's event repository over EventStoreDB: one stream per aggregate, `{Type}-{id}`,
/// optimistic concurrency through the expected stream revision. Cheap to clone.
#[derive(Clone)]
pub struct EventStoreDbRepository {
    client: Client,
    streams: AggregateStreams,
}

impl fmt::Debug for EventStoreDbRepository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStoreDbRepository").field("streams", &self.streams).finish_non_exhaustive()
    }
}

impl EventStoreDbRepository {
    /// A repository over `client` that writes only the aggregate types `streams` selects.
    pub fn new(client: Client, streams: AggregateStreams) -> Self {
        Self { client, streams }
    }

    async fn load(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        after_sequence: u64,
    ) -> Result<Vec<SerializedEvent>, StoreError> {
        // Events after sequence S start at revision S (sequence S + 1).
        let events = read_stream_from(&self.client, &stream_name(aggregate_type, aggregate_id), after_sequence).await?;
        events.iter().map(|e| Decoded::from_stored(e)?.into_serialized()).collect()
    }

    /// Appends events of one aggregate after the sequence before the first of them.
    async fn append_serialized(&self, aggregate_type: &str, events: &[SerializedEvent]) -> Result<(), StoreError> {
        let Some(first) = events.first() else { return Ok(()) };
        if first.sequence == 0 {
            return Err(StoreError::Schema("event sequences start at 1".into()));
        }
        let event_types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        self.streams.check_writable(aggregate_type, &event_types)?;
        let stream = stream_name(aggregate_type, &first.aggregate_id);
        let mut data = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            if event.aggregate_id != first.aggregate_id || first.sequence.checked_add(i) != Some(event.sequence) {
                return Err(StoreError::Schema(format!(
                    "one append takes consecutive events of one aggregate; got {} #{} after {} #{}",
                    event.aggregate_id, event.sequence, first.aggregate_id, first.sequence
                )));
            }
            let envelope = Envelope::new(
                aggregate_type,
                &event.aggregate_id,
                event.sequence as u64,
                &event.event_version,
                &event.metadata,
            );
            data.push(event_data(&event.event_type, &event.payload, &envelope, &stream)?);
        }
        let expected_version = (first.sequence as u64).saturating_sub(1);
        append_to_stream(&self.client, &stream, expected_revision(expected_version), data).await?;
        Ok(())
    }
}

impl PersistedEventRepository for EventStoreDbRepository {
    async fn get_events<A: Aggregate>(&self, aggregate_id: &str) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.load(A::TYPE, aggregate_id, 0).await.map_err(persistence_error)
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.load(A::TYPE, aggregate_id, last_sequence as u64).await.map_err(persistence_error)
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        let Some(record) = latest_snapshot(&self.client, A::TYPE, aggregate_id).await.map_err(persistence_error)?
        else {
            return Ok(None);
        };
        let to_usize = |n: u64| {
            usize::try_from(n)
                .map_err(|_| persistence_error(StoreError::Decode(format!("snapshot counter {n} too large"))))
        };
        Ok(Some(SerializedSnapshot {
            aggregate_id: aggregate_id.to_owned(),
            aggregate: record.state,
            current_sequence: to_usize(record.last_sequence)?,
            current_snapshot: to_usize(record.snapshot_version)?,
        }))
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        self.append_serialized(A::TYPE, events).await.map_err(persistence_error)?;
        // The snapshot lives in its own stream, so it cannot commit atomically with the events.
        // It is only a shortcut for loading: once the events are in, a failed snapshot must not
        // turn the command into a failure.
        if let (Some((aggregate_id, state, snapshot_version)), Some(last)) = (snapshot_update, events.last()) {
            let record = SnapshotRecord {
                aggregate_type: A::TYPE.to_owned(),
                aggregate_id,
                last_sequence: last.sequence as u64,
                snapshot_version: snapshot_version as u64,
                state,
                taken_at: chrono::Utc::now(),
            };
            if let Err(err) = save_snapshot(&self.client, record).await {
                tracing::warn!(error = %err, aggregate = A::TYPE, "snapshot not saved; loads replay the events instead");
            }
        }
        Ok(())
    }

    async fn stream_events<A: Aggregate>(&self, aggregate_id: &str) -> Result<ReplayStream, PersistenceError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| PersistenceError::UnknownError(Box::new(e)))?;
        let (feed, stream) = ReplayStream::new(REPLAY_CHANNEL);
        runtime.spawn(replay_stream(self.client.clone(), stream_name(A::TYPE, aggregate_id), feed));
        Ok(stream)
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| PersistenceError::UnknownError(Box::new(e)))?;
        let (feed, stream) = ReplayStream::new(REPLAY_CHANNEL);
        runtime.spawn(replay_type(self.client.clone(), A::TYPE, feed));
        Ok(stream)
    }
}

/// How a store failure reads to cqrs-es.
fn persistence_error(err: StoreError) -> PersistenceError {
    match err {
        StoreError::Conflict => PersistenceError::OptimisticLockError,
        StoreError::Database(e) => PersistenceError::ConnectionError(e),
        err @ StoreError::Decode(_) => PersistenceError::DeserializationError(Box::new(err)),
        err => PersistenceError::UnknownError(Box::new(err)),
    }
}

/// Replays one stream into `feed`, page by page, until it ends or the consumer goes away.
async fn replay_stream(client: Client, stream: String, mut feed: ReplayFeed) {
    let mut from = 0;
    loop {
        let page = match read_stream_page(&client, &stream, from, REPLAY_PAGE).await {
            Ok(page) => page,
            Err(err) => {
                let _ = feed.push(Err(persistence_error(err.into()))).await;
                return;
            }
        };
        for event in &page {
            let event = Decoded::from_stored(event).and_then(Decoded::into_serialized).map_err(persistence_error);
            if feed.push(event).await.is_err() {
                return;
            }
        }
        match page.last() {
            Some(last) if page.len() == REPLAY_PAGE => from = last.revision.saturating_add(1),
            _ => return,
        }
    }
}

/// Replays every event of one aggregate type, in `$all` order, into `feed`. `read_all` takes no
/// server-side filter in eventstore 4.0, so the page is filtered here.
async fn replay_type(client: Client, aggregate_type: &'static str, mut feed: ReplayFeed) {
    let mut from = StreamPosition::Start;
    let mut floor = None;
    loop {
        let page = match read_all_page(&client, from, REPLAY_PAGE, Direction::Forwards).await {
            Ok(page) => page,
            Err(err) => {
                let _ = feed.push(Err(persistence_error(err.into()))).await;
                return;
            }
        };
        for event in &page {
            // A read starting at an event's position includes it again.
            if floor.is_some_and(|floor| event.position <= floor) {
                continue;
            }
            floor = Some(event.position);
            if !in_type_stream(&event.stream_id, aggregate_type) || event.event_type.starts_with('$') {
                continue;
            }
            let event = Decoded::from_stored(event).and_then(Decoded::into_serialized).map_err(persistence_error);
            if feed.push(event).await.is_err() {
                return;
            }
        }
        match (page.len() == REPLAY_PAGE, floor) {
            (true, Some(last)) => from = StreamPosition::Position(last),
            _ => return,
        }
    }
}

/// Which way a read goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Direction {
    Forwards,
    Backwards,
}

/// Up to `max` events of `$all` from `from` in `direction`. A forward read from an event's
/// position includes that event.
pub(super) async fn read_all_page(
    client: &Client,
    from: StreamPosition<eventstore::Position>,
    max: usize,
    direction: Direction,
) -> Result<Vec<eventstore::RecordedEvent>, eventstore::Error> {
    // `position` picks a direction for Start and End; the explicit one must come after it.
    let options = ReadAllOptions::default().position(from).max_count(max);
    let options = match direction {
        Direction::Forwards => options.forwards(),
        Direction::Backwards => options.backwards(),
    };
    let mut reader = client.read_all(&options).await?;
    let mut events = Vec::with_capacity(max.min(REPLAY_PAGE));
    while let Some(resolved) = reader.next().await? {
        if let Some(event) = resolved.event {
            events.push(event);
        }
    }
    Ok(events)
}

/// Up to `max` events of `stream` from revision `from`, in order; none when it does not exist.
pub(super) async fn read_stream_page(
    client: &Client,
    stream: &str,
    from: u64,
    max: usize,
) -> Result<Vec<eventstore::RecordedEvent>, eventstore::Error> {
    let options = ReadStreamOptions::default().position(StreamPosition::Position(from)).forwards().max_count(max);
    read_stream_with(client, stream, &options).await
}

/// Every event of `stream` from revision `from` on, in order; none when it does not exist.
pub(super) async fn read_stream_from(
    client: &Client,
    stream: &str,
    from: u64,
) -> Result<Vec<eventstore::RecordedEvent>, eventstore::Error> {
    let mut events = read_stream_page(client, stream, from, REPLAY_PAGE).await?;
    let mut last_page = events.len();
    while last_page == REPLAY_PAGE {
        let next = events.last().map_or(from, |e| e.revision.saturating_add(1));
        let page = read_stream_page(client, stream, next, REPLAY_PAGE).await?;
        last_page = page.len();
        events.extend(page);
    }
    Ok(events)
}

/// The events a stream read with `options` finds; none when the stream does not exist.
pub(super) async fn read_stream_with(
    client: &Client,
    stream: &str,
    options: &ReadStreamOptions,
) -> Result<Vec<eventstore::RecordedEvent>, eventstore::Error> {
    // A missing stream is reported either by the call or by the first read, depending on timing.
    let mut reader = match client.read_stream(stream, options).await {
        Ok(reader) => reader,
        Err(eventstore::Error::ResourceNotFound) => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut events = Vec::new();
    loop {
        match reader.next().await {
            Ok(Some(resolved)) => events.extend(resolved.event),
            Ok(None) | Err(eventstore::Error::ResourceNotFound) => return Ok(events),
            Err(err) => return Err(err),
        }
    }
}

/// Appends `events` to `stream` if it is at `expected`.
pub(super) async fn append_to_stream(
    client: &Client,
    stream: &str,
    expected: ExpectedRevision,
    events: Vec<EventData>,
) -> Result<WriteResult, eventstore::Error> {
    let options = AppendToStreamOptions::default().expected_revision(expected);
    client.append_to_stream(stream, &options, events).await
}

/// The newest snapshot of an aggregate, if any.
pub(super) async fn latest_snapshot(
    client: &Client,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Option<SnapshotRecord>, StoreError> {
    Ok(latest_snapshot_event(client, &snapshot_stream_name(aggregate_type, aggregate_id)).await?.map(|(_, s)| s))
}

async fn latest_snapshot_event(client: &Client, stream: &str) -> Result<Option<(u64, SnapshotRecord)>, StoreError> {
    // `End` reads backwards: the one event read is the newest.
    let options = ReadStreamOptions::default().position(StreamPosition::End).max_count(1);
    let events = read_stream_with(client, stream, &options).await?;
    events.first().map(|e| Ok((e.revision, SnapshotRecord::from_stored(e)?))).transpose()
}

/// Writes a snapshot unless the stored one is as new; the stream keeps only the newest.
pub(super) async fn save_snapshot(client: &Client, record: SnapshotRecord) -> Result<(), StoreError> {
    let stream = snapshot_stream_name(&record.aggregate_type, &record.aggregate_id);
    for _ in 0..SNAPSHOT_SAVE_ATTEMPTS {
        let latest = latest_snapshot_event(client, &stream).await?;
        if latest.as_ref().is_some_and(|(_, stored)| stored.last_sequence >= record.last_sequence) {
            return Ok(());
        }
        // Expecting the revision just read makes "keep only newer" hold against a concurrent saver.
        let expected = latest.map_or(ExpectedRevision::NoStream, |(revision, _)| ExpectedRevision::Exact(revision));
        match append_to_stream(client, &stream, expected, vec![record.event_data()?]).await {
            Ok(_) => {
                if expected == ExpectedRevision::NoStream {
                    keep_only_newest(client, &stream).await;
                }
                return Ok(());
            }
            Err(eventstore::Error::WrongExpectedVersion { .. }) => continue,
            Err(err) => return Err(err.into()),
        }
    }
    // Others keep saving snapshots of this aggregate; theirs serve as well as ours.
    Ok(())
}

/// Sets `$maxCount` 1 on a new snapshot stream so old snapshots are scavenged. Reads take the
/// newest anyway, so a failure only costs disk.
async fn keep_only_newest(client: &Client, stream: &str) {
    let metadata = StreamMetadata::builder().max_count(1).build();
    if let Err(err) = client.set_stream_metadata(stream, &AppendToStreamOptions::default(), &metadata).await {
        tracing::debug!(error = %err, stream, "could not limit the snapshot stream to one event");
    }
}
