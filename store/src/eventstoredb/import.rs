//! `stay import` into EventStoreDB: another store's log appended with its own sequences,
//! metadata and recorded times, in file order, resumable after a kill at any point.
//!
//! **What is written.** Each event goes to its aggregate's stream (`{Type}-{id}`) expecting the
//! revision before its sequence (no stream for sequence 1), so the stream revisions are the
//! source's sequences. Consecutive events of one aggregate in the file go in one append; appends
//! are sent one after another, each awaited, so `$all` holds the events in the file's order. The
//! server stamps its own `created` time, but Stay reads an event's time from the envelope's
//! metadata `recorded_at` (`codec`), which carries the file's time exactly (the source's own text
//! when it names the same instant, else the file's time with all its digits). Event ids are the
//! codec's deterministic ids, so an append resent after a lost answer is recognised by the server
//! as already written instead of being written twice.
//!
//! **Progress.** EventStoreDB has no transaction spanning streams, so progress lives in a stream
//! of its own, `stay_import_{feed}` ([`progress_stream`]; no `-`, so never part of a feed), whose
//! newest record says which file is being imported and how far it got: `imported` events are in,
//! and events up to `writing` may be in too. Each batch is three steps, each atomic on its own:
//!
//! 1. a record "writing `imported`..`imported + n`", appended expecting the revision of the record
//!    read before it (a compare-and-set: two imports at once cannot both go on);
//! 2. the batch's appends, in file order;
//! 3. a record "`imported + n` in", expecting the revision of step 1's record.
//!
//! A kill between any two appends leaves the store holding a prefix of the file (appends are
//! whole and sequential) whose length is between the newest record's `imported` and `writing`.
//! The next run counts the feed's events, which is exactly that prefix, records it, and goes on
//! after it; the command also checks that the store's last event is the file's line there. So
//! nothing is written twice and nothing is skipped. What is not atomic: a batch as a whole (only
//! each aggregate's run of events within it is), and the refusal of a non-empty target, which
//! counts the events and then claims the progress stream with two requests (a writer that
//! appends between them is noticed by the next run or by the command's last-event check, not
//! prevented).
//!
//! **Refusals**, as the SQL backends: a store whose feed holds events but no import record is
//! not empty; a record of another file is another import; a feed whose count is outside the
//! record's window had something else write to it.

use std::ops::Range;

use chrono::{DateTime, SecondsFormat, Utc};
use eventstore::{EventData, ExpectedRevision, ReadStreamOptions, StreamPosition};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::aggregate_streams::AggregateStreams;
use super::codec::{event_data, expected_revision, known_position, stream_name, Decoded, Envelope};
use super::repository::{append_to_stream, read_all_page, read_stream_with, Direction};
use super::{EventStoreDbStore, BACKWARD_PAGE};
use crate::error::StoreError;
use crate::event::parse_time;
use crate::import::{EventKey, ImportError, ImportProgress, ImportedEvent};
use crate::position::Position;

/// The event type of a progress record.
const PROGRESS_EVENT_TYPE: &str = "ImportProgressed";
/// Namespace of progress stream names and record ids (a fixed random UUID: changing it would
/// hide an interrupted import's progress from the next version).
const PROGRESS_NAMESPACE: Uuid = Uuid::from_u128(0x2f4e_8a61_93c0_4b7d_a1e5_5c08_d36f_19b2);

/// One record of the progress stream: how far the import of one file got.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ImportRecord {
    /// The file's SHA-256 (hex).
    digest: String,
    /// Events in the file.
    total: u64,
    /// The file's first `imported` events are in the store.
    imported: u64,
    /// The file's events up to this one may be in too (a batch was being written); equal to
    /// `imported` between batches.
    writing: u64,
}

impl ImportRecord {
    /// The record of `progress` between batches.
    fn settled(progress: &ImportProgress) -> Self {
        Self {
            digest: progress.digest.clone(),
            total: progress.total,
            imported: progress.imported,
            writing: progress.imported,
        }
    }

    fn progress(&self) -> ImportProgress {
        ImportProgress { digest: self.digest.clone(), total: self.total, imported: self.imported }
    }

    fn is_settled(&self) -> bool {
        self.writing == self.imported
    }
}

/// The stream holding the import progress of the store that `streams` select: one per feed, so
/// Stay stores sharing a database (each with its own `stayAggregateTypes`) each have theirs.
/// Named `stay_import_all` for every aggregate stream, else `stay_import_` and a digest of the
/// sorted types. It has no `-`, so no feed ever delivers it.
pub(super) fn progress_stream(streams: &AggregateStreams) -> String {
    match streams {
        AggregateStreams::All => "stay_import_all".to_owned(),
        AggregateStreams::Only(types) => {
            let mut types: Vec<&str> = types.iter().map(String::as_str).collect();
            types.sort_unstable();
            types.dedup();
            let id = Uuid::new_v5(&PROGRESS_NAMESPACE, types.join("\0").as_bytes());
            format!("stay_import_{}", id.simple())
        }
    }
}

/// What the record alone decides, before the store's events are counted: another file's record
/// is a refusal, a finished import is done (the store may have moved on since: a server ran on
/// it). `None`: the events must be counted ([`resume`]).
fn recorded(found: Option<&ImportRecord>, digest: &str) -> Result<Option<ImportProgress>, ImportError> {
    match found {
        Some(record) if record.digest != digest => Err(ImportError::AnotherImport { digest: record.digest.clone() }),
        Some(record) if record.imported >= record.total => Ok(Some(record.progress())),
        _ => Ok(None),
    }
}

/// Where an import of `digest` starts or resumes, given the record found and the number of
/// events the feed holds, and the record to write first (none when the found one says it).
/// Events are appended in file order, one append after another, so the store holds a prefix of
/// the file; an interrupted batch leaves it anywhere in the record's window.
fn resume(
    found: Option<&ImportRecord>,
    digest: &str,
    total: u64,
    events: u64,
) -> Result<(ImportProgress, Option<ImportRecord>), ImportError> {
    let Some(record) = found else {
        if events > 0 {
            return Err(ImportError::NotEmpty { events });
        }
        let progress = ImportProgress { digest: digest.to_owned(), total, imported: 0 };
        let claim = ImportRecord::settled(&progress);
        return Ok((progress, Some(claim)));
    };
    if events < record.imported || events > record.writing {
        return Err(ImportError::Diverged { events, imported: record.imported });
    }
    let progress = ImportProgress { imported: events, ..record.progress() };
    let settle = ImportRecord::settled(&progress);
    let write = (settle != *record).then_some(settle);
    Ok((progress, write))
}

/// The progress record's revision, if the store's newest record is the settled state this
/// import left (anything else: another import moved it).
fn own_turn(found: Option<&(u64, ImportRecord)>, progress: &ImportProgress) -> Result<u64, ImportError> {
    match found {
        Some((revision, record)) if record.is_settled() && record.progress() == *progress => Ok(*revision),
        _ => Err(ImportError::Concurrent),
    }
}

/// The appends of a batch: runs of consecutive events of one aggregate with consecutive
/// sequences, in file order (each run is one atomic append).
fn runs(events: &[ImportedEvent]) -> Vec<Range<usize>> {
    let mut runs: Vec<Range<usize>> = Vec::new();
    for (i, event) in events.iter().enumerate() {
        let continues = runs.last().is_some_and(|run| {
            let last = &events[run.end - 1];
            last.aggregate_type == event.aggregate_type
                && last.aggregate_id == event.aggregate_id
                && last.sequence.checked_add(1) == Some(event.sequence)
        });
        match runs.last_mut() {
            Some(run) if continues => run.end = i + 1,
            _ => runs.push(i..i + 1),
        }
    }
    runs
}

/// One append of a batch.
#[derive(Debug)]
struct StreamAppend {
    stream: String,
    first_sequence: u64,
    expected: ExpectedRevision,
    data: Vec<EventData>,
}

/// The batch's appends, built (and checked) before anything is written: an event type or
/// aggregate type the feed would not deliver, or a sequence 0, refuses the whole batch.
fn plan(events: &[ImportedEvent], streams: &AggregateStreams) -> Result<Vec<StreamAppend>, StoreError> {
    let mut appends = Vec::new();
    for run in runs(events) {
        let events = &events[run];
        let first = &events[0];
        if first.sequence == 0 {
            return Err(StoreError::Schema(format!(
                "{} {}: event sequences start at 1, not 0",
                first.aggregate_type, first.aggregate_id
            )));
        }
        let event_types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        streams.check_writable(&first.aggregate_type, &event_types)?;
        let stream = stream_name(&first.aggregate_type, &first.aggregate_id);
        let mut data = Vec::with_capacity(events.len());
        for event in events {
            data.push(event_data(&event.event_type, &event.payload, &imported_envelope(event)?, &stream)?);
        }
        appends.push(StreamAppend {
            stream,
            first_sequence: first.sequence,
            expected: expected_revision(first.sequence - 1),
            data,
        });
    }
    Ok(appends)
}

/// The envelope of an imported event: its own sequence and metadata, with `recorded_at` naming
/// the file's time, which is what the feed reads back as the event's time.
pub(super) fn imported_envelope(event: &ImportedEvent) -> Result<Envelope, StoreError> {
    let metadata = with_recorded_at(&event.metadata, event.recorded_at).ok_or_else(|| {
        StoreError::Schema(format!(
            "{} {} #{}: its metadata is not a JSON object, so it cannot carry the recorded time",
            event.aggregate_type, event.aggregate_id, event.sequence
        ))
    })?;
    Ok(Envelope::new(&event.aggregate_type, &event.aggregate_id, event.sequence, &event.event_version, &metadata))
}

/// `metadata` with `recorded_at` naming `at`: kept as it is when it already names that instant
/// (Stay's own metadata always does), else set to `at` with every digit it has. `None` when the
/// metadata is not an object, which has no place for it.
fn with_recorded_at(metadata: &Value, at: DateTime<Utc>) -> Option<Value> {
    let Value::Object(map) = metadata else { return None };
    let named = map.get("recorded_at").and_then(Value::as_str).and_then(|text| parse_time(text).ok());
    if named == Some(at) {
        return Some(metadata.clone());
    }
    let mut map = map.clone();
    map.insert("recorded_at".to_owned(), Value::String(at.to_rfc3339_opts(SecondsFormat::AutoSi, true)));
    Some(Value::Object(map))
}

/// The id of a progress record: it follows the stream, the revision the record follows and its
/// content, so a resent record is recognised by the server.
fn record_id(stream: &str, expected: ExpectedRevision, record: &ImportRecord) -> Result<Uuid, StoreError> {
    let name = format!("{stream}\0{expected:?}\0{}", serde_json::to_string(record)?);
    Ok(Uuid::new_v5(&PROGRESS_NAMESPACE, name.as_bytes()))
}

impl EventStoreDbStore {
    /// Starts or resumes the import of a file (see the module doc for the refusals).
    pub(crate) async fn begin_import(&self, digest: &str, total: u64) -> Result<ImportProgress, ImportError> {
        let stream = progress_stream(&self.inner.streams);
        let found = self.latest_record(&stream).await?;
        let record = found.as_ref().map(|(_, record)| record);
        if let Some(progress) = recorded(record, digest)? {
            return Ok(progress);
        }
        let events = self.distance_after(Position::START, u64::MAX).await?.events;
        let (progress, write) = resume(record, digest, total, events)?;
        if let Some(write) = write {
            let expected =
                found.as_ref().map_or(ExpectedRevision::NoStream, |(revision, _)| ExpectedRevision::Exact(*revision));
            self.write_record(&stream, expected, &write).await?;
        }
        Ok(progress)
    }

    /// The newest event of the feed, read back from the end of `$all`.
    pub(crate) async fn last_event(&self) -> Result<Option<EventKey>, StoreError> {
        let mut from = StreamPosition::End;
        // Everything at or after `ceiling` has been looked at.
        let mut ceiling: Option<eventstore::Position> = None;
        loop {
            let page = read_all_page(&self.inner.client, from, BACKWARD_PAGE, Direction::Backwards).await?;
            let start = ceiling;
            for event in &page {
                if ceiling.is_some_and(|c| event.position >= c) {
                    continue;
                }
                ceiling = Some(event.position);
                if self.inner.streams.contains(&event.stream_id, &event.event_type) {
                    let decoded = Decoded::from_stored(event)?;
                    return Ok(Some(EventKey {
                        aggregate_type: decoded.aggregate_type,
                        aggregate_id: decoded.aggregate_id,
                        sequence: decoded.sequence,
                    }));
                }
            }
            match ceiling {
                Some(c) if page.len() == BACKWARD_PAGE && ceiling != start => from = StreamPosition::Position(c),
                _ => return Ok(None),
            }
        }
    }

    /// Appends the file's next events (a non-empty batch after `progress.imported`) between two
    /// progress records (see the module doc); answers the new progress.
    pub(crate) async fn import_batch(
        &self,
        progress: &ImportProgress,
        events: &[ImportedEvent],
    ) -> Result<ImportProgress, ImportError> {
        let appends = plan(events, &self.inner.streams)?;
        let next = ImportProgress { imported: progress.imported + events.len() as u64, ..progress.clone() };
        let stream = progress_stream(&self.inner.streams);
        let revision = own_turn(self.latest_record(&stream).await?.as_ref(), progress)?;
        let writing = ImportRecord { writing: next.imported, ..ImportRecord::settled(progress) };
        self.write_record(&stream, ExpectedRevision::Exact(revision), &writing).await?;
        let mut last = None;
        for append in appends {
            match append_to_stream(&self.inner.client, &append.stream, append.expected, append.data).await {
                Ok(written) => last = known_position(written.position).or(last),
                Err(eventstore::Error::WrongExpectedVersion { .. }) => {
                    return Err(ImportError::StreamDiverged { stream: append.stream, sequence: append.first_sequence })
                }
                Err(err) => return Err(StoreError::from(err).into()),
            }
        }
        let settled = ImportRecord::settled(&next);
        self.write_record(&stream, ExpectedRevision::Exact(revision.saturating_add(1)), &settled).await?;
        if let Some(last) = last {
            self.inner.signal.advance(last);
        }
        Ok(next)
    }

    /// The newest progress record and its revision, if the stream exists.
    async fn latest_record(&self, stream: &str) -> Result<Option<(u64, ImportRecord)>, StoreError> {
        // `End` reads backwards: the one event read is the newest.
        let options = ReadStreamOptions::default().position(StreamPosition::End).max_count(1);
        let events = read_stream_with(&self.inner.client, stream, &options).await?;
        events
            .first()
            .map(|event| {
                let record = serde_json::from_slice(&event.data).map_err(|e| {
                    StoreError::Decode(format!("{stream} #{}: not a Stay import record: {e}", event.revision))
                })?;
                Ok((event.revision, record))
            })
            .transpose()
    }

    /// Appends a progress record if the stream is still at `expected`; another import moved it
    /// otherwise.
    async fn write_record(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        record: &ImportRecord,
    ) -> Result<(), ImportError> {
        let data = EventData::json(PROGRESS_EVENT_TYPE, record)
            .map_err(StoreError::from)?
            .id(record_id(stream, expected, record)?);
        match append_to_stream(&self.inner.client, stream, expected, vec![data]).await {
            Ok(_) => Ok(()),
            Err(eventstore::Error::WrongExpectedVersion { .. }) => Err(ImportError::Concurrent),
            Err(err) => Err(StoreError::from(err).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use chrono::TimeZone;
    use serde_json::json;

    use super::*;
    use crate::eventstoredb::codec::event_id;

    fn record(digest: &str, total: u64, imported: u64, writing: u64) -> ImportRecord {
        ImportRecord { digest: digest.into(), total, imported, writing }
    }

    fn progress(digest: &str, total: u64, imported: u64) -> ImportProgress {
        ImportProgress { digest: digest.into(), total, imported }
    }

    fn time() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap() + chrono::Duration::microseconds(123_456)
    }

    fn event(aggregate_type: &str, aggregate_id: &str, sequence: u64) -> ImportedEvent {
        ImportedEvent {
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
            sequence,
            event_type: "RoomOpened".into(),
            event_version: "1.0".into(),
            payload: json!({"room_id": aggregate_id, "sequence": sequence}),
            metadata: json!({
                "command_id": "c-1",
                "correlation_id": "res-7",
                "actor": "guest-1",
                "recorded_at": time().to_rfc3339_opts(SecondsFormat::Micros, true),
            }),
            recorded_at: time(),
        }
    }

    /// The event as the server would hand it back after the import's append, with a server
    /// time that is not the event's.
    fn stored(event: &ImportedEvent) -> eventstore::RecordedEvent {
        let envelope = imported_envelope(event).unwrap();
        eventstore::RecordedEvent {
            stream_id: stream_name(&event.aggregate_type, &event.aggregate_id),
            id: Uuid::nil(),
            revision: event.sequence - 1,
            event_type: event.event_type.clone(),
            data: serde_json::to_vec(&event.payload).unwrap().into(),
            metadata: HashMap::new(),
            custom_metadata: serde_json::to_vec(&envelope).unwrap().into(),
            is_json: true,
            position: eventstore::Position { commit: 900, prepare: 900 },
            created: Utc::now(),
        }
    }

    #[test]
    fn an_empty_target_is_claimed_by_a_first_record() {
        let (start, write) = resume(None, "d", 10, 0).unwrap();
        assert_eq!(start, progress("d", 10, 0));
        assert_eq!(write, Some(record("d", 10, 0, 0)));
    }

    #[test]
    fn a_target_with_events_and_no_record_is_not_empty() {
        assert!(matches!(resume(None, "d", 10, 3), Err(ImportError::NotEmpty { events: 3 })));
    }

    #[test]
    fn another_files_record_is_another_import() {
        let other = record("e", 10, 4, 4);
        assert!(matches!(recorded(Some(&other), "d"), Err(ImportError::AnotherImport { digest }) if digest == "e"));
    }

    #[test]
    fn a_finished_import_is_done_without_counting_the_events() {
        assert_eq!(recorded(Some(&record("d", 10, 10, 10)), "d").unwrap(), Some(progress("d", 10, 10)));
        assert_eq!(recorded(Some(&record("d", 10, 4, 8)), "d").unwrap(), None);
        assert_eq!(recorded(None, "d").unwrap(), None);
    }

    #[test]
    fn a_kill_between_batches_resumes_after_the_recorded_events() {
        let (start, write) = resume(Some(&record("d", 10, 4, 4)), "d", 10, 4).unwrap();
        assert_eq!(start, progress("d", 10, 4));
        assert_eq!(write, None, "the record already says so");
    }

    #[test]
    fn a_kill_inside_a_batch_resumes_after_what_reached_the_store() {
        let interrupted = record("d", 10, 4, 8);
        for events in 4..=8 {
            let (start, write) = resume(Some(&interrupted), "d", 10, events).unwrap();
            assert_eq!(start, progress("d", 10, events));
            assert_eq!(write, Some(record("d", 10, events, events)), "the resume is recorded before writing");
        }
    }

    #[test]
    fn a_count_outside_the_records_window_means_something_else_wrote() {
        let interrupted = record("d", 10, 4, 8);
        for events in [0, 3, 9] {
            assert!(matches!(
                resume(Some(&interrupted), "d", 10, events),
                Err(ImportError::Diverged { events: e, imported: 4 }) if e == events
            ));
        }
        assert!(matches!(resume(Some(&record("d", 10, 4, 4)), "d", 10, 5), Err(ImportError::Diverged { .. })));
    }

    #[test]
    fn a_batch_goes_on_only_from_the_settled_record_it_left() {
        let at = progress("d", 10, 4);
        assert_eq!(own_turn(Some(&(7, record("d", 10, 4, 4))), &at).unwrap(), 7);
        for found in
            [None, Some((7, record("d", 10, 4, 6))), Some((7, record("d", 10, 6, 6))), Some((7, record("e", 10, 4, 4)))]
        {
            assert!(matches!(own_turn(found.as_ref(), &at), Err(ImportError::Concurrent)), "{found:?}");
        }
    }

    #[test]
    fn consecutive_events_of_one_aggregate_go_in_one_append_in_file_order() {
        let batch = [
            event("Room", "a", 1),
            event("Room", "a", 2),
            event("Room", "b", 1),
            event("Room", "a", 3),
            event("Room", "a", 4),
            event("Reservation", "a", 1),
            event("Room", "b", 2),
            event("Room", "b", 4),
        ];
        assert_eq!(runs(&batch), vec![0..2, 2..3, 3..5, 5..6, 6..7, 7..8]);
        assert!(runs(&[]).is_empty());

        let appends = plan(&batch, &AggregateStreams::of_types(&["Room", "Reservation"])).unwrap();
        let described: Vec<(&str, u64, ExpectedRevision, usize)> =
            appends.iter().map(|a| (a.stream.as_str(), a.first_sequence, a.expected, a.data.len())).collect();
        assert_eq!(
            described,
            vec![
                ("Room-a", 1, ExpectedRevision::NoStream, 2),
                ("Room-b", 1, ExpectedRevision::NoStream, 1),
                ("Room-a", 3, ExpectedRevision::Exact(1), 2),
                ("Reservation-a", 1, ExpectedRevision::NoStream, 1),
                ("Room-b", 2, ExpectedRevision::Exact(0), 1),
                // A gap in the file is not papered over: the server refuses the expectation.
                ("Room-b", 4, ExpectedRevision::Exact(2), 1),
            ]
        );
    }

    #[test]
    fn a_batch_the_feed_would_not_deliver_is_refused_whole() {
        let streams = AggregateStreams::of_types(&["Room"]);
        let batch = [event("Room", "a", 1), event("Invoice", "i", 1)];
        assert!(matches!(plan(&batch, &streams), Err(StoreError::Schema(m)) if m.contains("Invoice")));
        assert!(
            matches!(plan(&[event("Room", "a", 0)], &streams), Err(StoreError::Schema(m)) if m.contains("start at 1"))
        );
        let mut system = event("Room", "a", 1);
        system.event_type = "$metadata".into();
        assert!(matches!(plan(&[system], &streams), Err(StoreError::Schema(_))));
    }

    #[test]
    fn an_imported_event_reads_back_as_the_source_recorded_it() {
        let source = event("Room", "r-1", 3);
        let decoded = Decoded::from_stored(&stored(&source)).unwrap();
        assert_eq!(decoded.recorded_at, source.recorded_at, "to the microsecond, not the server's time");
        assert_eq!(decoded.metadata, source.metadata, "Stay's own metadata is kept as it was");
        assert_eq!(
            (decoded.aggregate_type.as_str(), decoded.aggregate_id.as_str(), decoded.sequence),
            ("Room", "r-1", 3)
        );
        assert_eq!((decoded.event_type.as_str(), decoded.event_version.as_str()), ("RoomOpened", "1.0"));
        assert_eq!(decoded.payload, source.payload);
    }

    #[test]
    fn the_files_time_wins_and_keeps_every_digit() {
        // Metadata without a time, with another instant, or with the same instant in other words.
        let nanos = time() + chrono::Duration::nanoseconds(789);
        for metadata in [
            json!({"actor": "system"}),
            json!({"actor": "system", "recorded_at": "2020-01-01T00:00:00Z"}),
            json!({"actor": "system", "recorded_at": "not a time"}),
        ] {
            let source = ImportedEvent { metadata: metadata.clone(), recorded_at: nanos, ..event("Room", "r-1", 1) };
            let decoded = Decoded::from_stored(&stored(&source)).unwrap();
            assert_eq!(decoded.recorded_at, nanos, "{metadata}");
            assert_eq!(decoded.metadata["actor"], "system");
        }
        let same = json!({"recorded_at": "2024-05-01T12:00:00.123456+02:00"});
        let source = ImportedEvent { metadata: same.clone(), ..event("Room", "r-1", 1) };
        assert_eq!(Decoded::from_stored(&stored(&source)).unwrap().metadata, same, "the source's text is kept");
    }

    #[test]
    fn metadata_that_cannot_carry_the_time_is_refused() {
        let source = ImportedEvent { metadata: json!(null), ..event("Room", "r-1", 2) };
        assert!(matches!(imported_envelope(&source), Err(StoreError::Schema(m)) if m.contains("Room r-1 #2")));
    }

    #[test]
    fn a_resent_import_append_carries_the_same_ids() {
        let id = |event: &ImportedEvent| {
            let stream = stream_name(&event.aggregate_type, &event.aggregate_id);
            event_id(&stream, event.sequence, &event.event_type, &event.payload, &imported_envelope(event).unwrap())
                .unwrap()
        };
        assert_eq!(id(&event("Room", "a", 1)), id(&event("Room", "a", 1)));
        assert_ne!(id(&event("Room", "a", 1)), id(&event("Room", "a", 2)));
        let later = ImportedEvent { recorded_at: time() + chrono::Duration::microseconds(1), ..event("Room", "a", 1) };
        assert_ne!(id(&event("Room", "a", 1)), id(&later));
        let writing = record("d", 10, 4, 8);
        let id = |expected, record: &ImportRecord| record_id("stay_import_all", expected, record).unwrap();
        assert_eq!(id(ExpectedRevision::Exact(3), &writing), id(ExpectedRevision::Exact(3), &writing));
        assert_ne!(id(ExpectedRevision::Exact(3), &writing), id(ExpectedRevision::Exact(4), &writing));
        assert_ne!(id(ExpectedRevision::Exact(3), &writing), id(ExpectedRevision::Exact(3), &record("d", 10, 8, 8)));
    }

    #[test]
    fn the_progress_stream_belongs_to_the_feed_and_is_never_in_one() {
        let all = AggregateStreams::All;
        let some = AggregateStreams::of_types(&["Room", "Reservation"]);
        let same = AggregateStreams::of_types(&["Reservation", "Room", "Room"]);
        let other = AggregateStreams::of_types(&["Room"]);
        assert_eq!(progress_stream(&all), "stay_import_all");
        assert_eq!(progress_stream(&some), progress_stream(&same));
        assert_ne!(progress_stream(&some), progress_stream(&other));
        for streams in [&all, &some, &other] {
            let name = progress_stream(streams);
            assert!(name.starts_with("stay_import_"));
            for feed in [&all, &some, &other] {
                assert!(!feed.contains(&name, PROGRESS_EVENT_TYPE), "{name} in {feed:?}");
            }
        }
    }
}
