//! How Stay's events sit in EventStoreDB: stream names, event ids, the envelope each event
//! carries in its custom metadata, and the mappings between our sequences and stream revisions
//! and between our positions and `$all` positions. Which streams form the feed is
//! `aggregate_streams.rs`; the connection string is `url.rs`.
//!
//! Everything here is pure, so it is tested without a server.

use chrono::{DateTime, Utc};
use cqrs_es::persist::SerializedEvent;
use eventstore::{EventData, ExpectedRevision, StreamPosition};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::error::StoreError;
use crate::event::{parse_time, RecordedEvent};
use crate::position::Position;

/// Snapshot streams are named `snapshot-{type}-{id}`; never part of the feed.
pub(super) const SNAPSHOT_PREFIX: &str = "snapshot-";
/// The event type of a snapshot record.
pub(super) const SNAPSHOT_EVENT_TYPE: &str = "Snapshot";
/// Namespace of our deterministic event ids (a fixed random UUID: changing it would stop a
/// retried append from being recognised across versions).
const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c1f_0f5e_2b7d_4c1a_9a53_0d2e_8b41_77c3);

/// The stream of one aggregate: `{aggregate_type}-{aggregate_id}` (what `$ce-{Type}` expects).
pub(super) fn stream_name(aggregate_type: &str, aggregate_id: &str) -> String {
    format!("{aggregate_type}-{aggregate_id}")
}

/// The stream holding one aggregate's snapshots: `snapshot-{aggregate_type}-{aggregate_id}`.
pub(super) fn snapshot_stream_name(aggregate_type: &str, aggregate_id: &str) -> String {
    format!("{SNAPSHOT_PREFIX}{aggregate_type}-{aggregate_id}")
}

/// What the server must find before an append after `expected_version` (the sequence of the
/// last event the writer saw): no stream for a new aggregate, else that event's revision.
pub(super) fn expected_revision(expected_version: u64) -> ExpectedRevision {
    match revision_of(expected_version) {
        None => ExpectedRevision::NoStream,
        Some(revision) => ExpectedRevision::Exact(revision),
    }
}

/// The stream revision of 1-based sequence `sequence` (`None` for 0, which names no event).
pub(super) fn revision_of(sequence: u64) -> Option<u64> {
    sequence.checked_sub(1)
}

/// The 1-based sequence of the event at stream revision `revision`.
pub(super) fn sequence_of(revision: u64) -> u64 {
    revision.saturating_add(1)
}

/// Our position of an `$all` position: commit first, then prepare — the order of `$all`.
pub(super) fn to_position(position: eventstore::Position) -> Position {
    Position::new(position.commit, position.prepare)
}

/// Where a forward `$all` read for events after `after` starts. Such a read includes an event
/// that sits exactly at the start, so readers still drop events at or before `after`.
pub(super) fn read_from(after: Position) -> StreamPosition<eventstore::Position> {
    if after == Position::START {
        StreamPosition::Start
    } else {
        StreamPosition::Position(eventstore::Position { commit: after.major(), prepare: after.minor() })
    }
}

/// The position a stream read reports, when it reports one. Servers before 22.6 know positions
/// only on `$all` reads and send `u64::MAX` (their -1) on stream reads.
pub(super) fn known_position(position: eventstore::Position) -> Option<Position> {
    let unknown =
        position.commit == u64::MAX || position.prepare == u64::MAX || (position.commit == 0 && position.prepare == 0);
    (!unknown).then(|| to_position(position))
}

/// The JSON custom metadata of every event we write: enough to rebuild the event without the
/// stream name. `$correlationId`/`$causationId` are EventStoreDB's own conventions, so its
/// `$by_correlation_id` projection works on our events too.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Envelope {
    pub(super) aggregate_type: String,
    pub(super) aggregate_id: String,
    /// Informational (for raw exports): on read, the stream revision is authoritative.
    pub(super) sequence: u64,
    pub(super) event_version: String,
    /// Our metadata map (command, correlation, causation, actor, time).
    #[serde(default)]
    pub(super) metadata: Value,
    #[serde(rename = "$correlationId", default, skip_serializing_if = "Option::is_none")]
    pub(super) correlation_id: Option<String>,
    #[serde(rename = "$causationId", default, skip_serializing_if = "Option::is_none")]
    pub(super) causation_id: Option<String>,
}

impl Envelope {
    /// The envelope of event `sequence` of an aggregate.
    pub(super) fn new(
        aggregate_type: &str,
        aggregate_id: &str,
        sequence: u64,
        event_version: &str,
        metadata: &Value,
    ) -> Self {
        let field = |key: &str| metadata.get(key).and_then(Value::as_str).map(str::to_owned);
        Self {
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            sequence,
            event_version: event_version.to_owned(),
            correlation_id: field("correlation_id"),
            causation_id: field("causation_id"),
            metadata: metadata.clone(),
        }
    }
}

/// The deterministic id of an event: the same append (same stream, sequence, type, version,
/// payload and metadata) gets the same ids, so the server treats a retry as already done.
/// Content is part of the id on purpose: with ids of stream and sequence alone, a racing writer
/// at the same expected version would carry the winner's ids, and the server would answer its
/// append as an idempotent success instead of a wrong expected version.
pub(super) fn event_id(
    stream: &str,
    sequence: u64,
    event_type: &str,
    payload: &Value,
    envelope: &Envelope,
) -> Result<Uuid, StoreError> {
    let mut name = Vec::with_capacity(256);
    for part in [stream.as_bytes(), sequence.to_string().as_bytes(), event_type.as_bytes()] {
        name.extend_from_slice(part);
        name.push(0);
    }
    name.extend_from_slice(&serde_json::to_vec(payload)?);
    name.push(0);
    name.extend_from_slice(&serde_json::to_vec(envelope)?);
    Ok(Uuid::new_v5(&EVENT_ID_NAMESPACE, &name))
}

/// One event as it goes to the server.
pub(super) fn event_data(
    event_type: &str,
    payload: &Value,
    envelope: &Envelope,
    stream: &str,
) -> Result<EventData, StoreError> {
    let id = event_id(stream, envelope.sequence, event_type, payload, envelope)?;
    Ok(EventData::json(event_type, payload)?.id(id).metadata_as_json(envelope)?)
}

/// One of our events as read back from the server.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Decoded {
    pub(super) aggregate_type: String,
    pub(super) aggregate_id: String,
    pub(super) sequence: u64,
    pub(super) event_type: String,
    pub(super) event_version: String,
    pub(super) payload: Value,
    pub(super) metadata: Value,
    pub(super) recorded_at: DateTime<Utc>,
}

impl Decoded {
    /// Rebuilds an event from what the server stored: type and data from the event, the rest
    /// from our envelope; the sequence from the stream revision, which the server guarantees.
    pub(super) fn from_stored(event: &eventstore::RecordedEvent) -> Result<Self, StoreError> {
        let at = || format!("{} #{} ({})", event.stream_id, event.revision, event.event_type);
        let envelope: Envelope = serde_json::from_slice(&event.custom_metadata)
            .map_err(|e| StoreError::Decode(format!("{}: no Stay envelope in its metadata: {e}", at())))?;
        let payload: Value = serde_json::from_slice(&event.data)
            .map_err(|e| StoreError::Decode(format!("{}: payload is not JSON: {e}", at())))?;
        let recorded_at = match envelope.metadata.get("recorded_at").and_then(Value::as_str) {
            Some(text) => parse_time(text)?,
            // Second precision only, but better than nothing for events without our time.
            None => event.created,
        };
        Ok(Self {
            aggregate_type: envelope.aggregate_type,
            aggregate_id: envelope.aggregate_id,
            sequence: sequence_of(event.revision),
            event_type: event.event_type.clone(),
            event_version: envelope.event_version,
            payload,
            metadata: envelope.metadata,
            recorded_at,
        })
    }

    /// The event as cqrs-es loads it.
    pub(super) fn into_serialized(self) -> Result<SerializedEvent, StoreError> {
        let sequence = usize::try_from(self.sequence)
            .map_err(|_| StoreError::Decode(format!("sequence {} does not fit this platform", self.sequence)))?;
        Ok(SerializedEvent::new(
            self.aggregate_id,
            sequence,
            self.aggregate_type,
            self.event_type,
            self.event_version,
            self.payload,
            self.metadata,
        ))
    }

    /// The event as the feed delivers it.
    pub(super) fn into_recorded(self, position: Position) -> RecordedEvent {
        RecordedEvent {
            position,
            aggregate_type: self.aggregate_type,
            aggregate_id: self.aggregate_id,
            sequence: self.sequence,
            event_type: self.event_type,
            event_version: self.event_version,
            payload: self.payload,
            metadata: self.metadata,
            recorded_at: self.recorded_at,
        }
    }
}

/// A snapshot as stored in its stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct SnapshotRecord {
    pub(super) aggregate_type: String,
    pub(super) aggregate_id: String,
    /// The sequence of the last event the state includes.
    pub(super) last_sequence: u64,
    /// cqrs-es's snapshot counter (only its own snapshot path sets it).
    #[serde(default)]
    pub(super) snapshot_version: u64,
    pub(super) state: Value,
    pub(super) taken_at: DateTime<Utc>,
}

impl SnapshotRecord {
    /// The snapshot as an event. Its id follows the stream and sequence: snapshots of the same
    /// events are equal, so a retried save is a no-op.
    pub(super) fn event_data(&self) -> Result<EventData, StoreError> {
        let stream = snapshot_stream_name(&self.aggregate_type, &self.aggregate_id);
        let id = Uuid::new_v5(&EVENT_ID_NAMESPACE, format!("{stream}\0{}", self.last_sequence).as_bytes());
        Ok(EventData::json(SNAPSHOT_EVENT_TYPE, self)?.id(id))
    }

    /// Reads a snapshot event back.
    pub(super) fn from_stored(event: &eventstore::RecordedEvent) -> Result<Self, StoreError> {
        serde_json::from_slice(&event.data)
            .map_err(|e| StoreError::Decode(format!("snapshot {} #{}: {e}", event.stream_id, event.revision)))
    }
}

/// When Stay recorded an event, from its envelope alone (the payload is not read); the server's
/// own time when the envelope has none or cannot be read (a lag estimate, never a refusal).
pub(super) fn recorded_at_of(event: &eventstore::RecordedEvent) -> DateTime<Utc> {
    serde_json::from_slice::<Envelope>(&event.custom_metadata)
        .ok()
        .and_then(|envelope| envelope.metadata.get("recorded_at").and_then(Value::as_str).map(parse_time))
        .and_then(Result::ok)
        .unwrap_or(event.created)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn metadata() -> Value {
        json!({
            "command_id": "c-1",
            "correlation_id": "res-7",
            "causation_id": "req-3",
            "actor": "guest-1",
            "recorded_at": "2024-05-01T10:00:00.123456Z",
        })
    }

    /// An event as the server would hand it back, built from what we would send.
    fn stored(
        stream: &str,
        revision: u64,
        event_type: &str,
        payload: &Value,
        envelope: &Envelope,
    ) -> eventstore::RecordedEvent {
        eventstore::RecordedEvent {
            stream_id: stream.to_owned(),
            id: Uuid::nil(),
            revision,
            event_type: event_type.to_owned(),
            data: serde_json::to_vec(payload).unwrap().into(),
            metadata: HashMap::new(),
            custom_metadata: serde_json::to_vec(envelope).unwrap().into(),
            is_json: true,
            position: eventstore::Position { commit: 500, prepare: 500 },
            created: DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    #[test]
    fn streams_are_named_type_dash_id() {
        assert_eq!(stream_name("Room", "r-1"), "Room-r-1");
        assert_eq!(snapshot_stream_name("Room", "r-1"), "snapshot-Room-r-1");
    }

    #[test]
    fn sequences_map_to_revisions() {
        assert_eq!(expected_revision(0), ExpectedRevision::NoStream);
        assert_eq!(expected_revision(1), ExpectedRevision::Exact(0));
        assert_eq!(expected_revision(42), ExpectedRevision::Exact(41));
        assert_eq!(revision_of(0), None);
        assert_eq!(revision_of(1), Some(0));
        assert_eq!(sequence_of(0), 1);
        assert_eq!(sequence_of(u64::MAX), u64::MAX);
    }

    #[test]
    fn positions_convert_and_start_reads_from_the_beginning() {
        let p = eventstore::Position { commit: 1200, prepare: 1100 };
        assert_eq!(to_position(p), Position::new(1200, 1100));
        assert_eq!(read_from(Position::START), StreamPosition::Start);
        assert_eq!(read_from(Position::new(1200, 1100)), StreamPosition::Position(p));
        assert_eq!(known_position(p), Some(Position::new(1200, 1100)));
        assert_eq!(known_position(eventstore::Position { commit: u64::MAX, prepare: u64::MAX }), None);
        assert_eq!(known_position(eventstore::Position::start()), None);
    }

    #[test]
    fn an_event_round_trips_through_its_envelope() {
        let payload = json!({"room_id": "r-1", "nights": 3});
        let envelope = Envelope::new("Reservation", "res-7", 3, "2.0", &metadata());
        let data = event_data("StayBooked", &payload, &envelope, "Reservation-res-7");
        assert!(data.is_ok());
        let decoded = Decoded::from_stored(&stored("Reservation-res-7", 2, "StayBooked", &payload, &envelope)).unwrap();
        assert_eq!(decoded.aggregate_type, "Reservation");
        assert_eq!(decoded.aggregate_id, "res-7");
        assert_eq!(decoded.sequence, 3);
        assert_eq!(decoded.event_type, "StayBooked");
        assert_eq!(decoded.event_version, "2.0");
        assert_eq!(decoded.payload, payload);
        assert_eq!(decoded.metadata, metadata());
        assert_eq!(decoded.recorded_at.to_rfc3339(), "2024-05-01T10:00:00.123456+00:00");

        let serialized = decoded.clone().into_serialized().unwrap();
        assert_eq!((serialized.sequence, serialized.aggregate_type.as_str()), (3, "Reservation"));
        let recorded = decoded.into_recorded(Position::new(500, 500));
        assert_eq!(recorded.metadata_field("actor"), Some("guest-1"));
        assert_eq!(recorded.position, Position::new(500, 500));
    }

    #[test]
    fn the_envelope_carries_esdb_correlation_conventions() {
        let envelope = Envelope::new("Room", "r-1", 1, "1.0", &metadata());
        let json = serde_json::to_value(&envelope).unwrap();
        assert_eq!(json["$correlationId"], "res-7");
        assert_eq!(json["$causationId"], "req-3");
        assert_eq!(json["metadata"]["command_id"], "c-1");
        assert_eq!(json["sequence"], 1);
        let back: Envelope = serde_json::from_value(json).unwrap();
        assert_eq!(back, envelope);
    }

    #[test]
    fn the_revision_wins_over_the_envelope_sequence() {
        let payload = json!({});
        let envelope = Envelope::new("Room", "r-1", 9, "1.0", &metadata());
        let decoded = Decoded::from_stored(&stored("Room-r-1", 0, "RoomOpened", &payload, &envelope)).unwrap();
        assert_eq!(decoded.sequence, 1);
    }

    #[test]
    fn foreign_events_do_not_decode_silently() {
        let mut event =
            stored("Room-r-1", 0, "RoomOpened", &json!({}), &Envelope::new("Room", "r-1", 1, "1.0", &metadata()));
        event.custom_metadata = Vec::new().into();
        assert!(matches!(Decoded::from_stored(&event), Err(StoreError::Decode(m)) if m.contains("Room-r-1 #0")));
        let mut event =
            stored("Room-r-1", 0, "RoomOpened", &json!({}), &Envelope::new("Room", "r-1", 1, "1.0", &metadata()));
        event.data = b"\x00\x01".to_vec().into();
        assert!(matches!(Decoded::from_stored(&event), Err(StoreError::Decode(_))));
    }

    #[test]
    fn without_our_time_the_server_time_is_used() {
        let envelope = Envelope::new("Room", "r-1", 1, "1.0", &json!({"actor": "system"}));
        let decoded = Decoded::from_stored(&stored("Room-r-1", 0, "RoomOpened", &json!({}), &envelope)).unwrap();
        assert_eq!(decoded.recorded_at, DateTime::<Utc>::UNIX_EPOCH);
    }

    #[test]
    fn event_ids_are_deterministic_and_follow_content() {
        let payload = json!({"a": 1});
        let envelope = Envelope::new("Room", "r-1", 2, "1.0", &metadata());
        let id = |stream: &str, seq: u64, payload: &Value, envelope: &Envelope| {
            event_id(stream, seq, "RoomOpened", payload, envelope).unwrap()
        };
        let base = id("Room-r-1", 2, &payload, &envelope);
        assert_eq!(base, id("Room-r-1", 2, &payload, &envelope));
        assert_eq!(base.get_version_num(), 5);
        assert_ne!(base, id("Room-r-2", 2, &payload, &envelope));
        assert_ne!(base, id("Room-r-1", 3, &payload, &envelope));
        assert_ne!(base, id("Room-r-1", 2, &json!({"a": 2}), &envelope));
        let other_command = Envelope::new("Room", "r-1", 2, "1.0", &json!({"command_id": "c-2"}));
        assert_ne!(base, id("Room-r-1", 2, &payload, &other_command));
    }

    #[test]
    fn snapshots_round_trip() {
        let record = SnapshotRecord {
            aggregate_type: "Room".into(),
            aggregate_id: "r-1".into(),
            last_sequence: 40,
            snapshot_version: 0,
            state: json!({"holds": []}),
            taken_at: DateTime::<Utc>::UNIX_EPOCH,
        };
        assert!(record.event_data().is_ok());
        let event = eventstore::RecordedEvent {
            stream_id: "snapshot-Room-r-1".into(),
            id: Uuid::nil(),
            revision: 0,
            event_type: SNAPSHOT_EVENT_TYPE.into(),
            data: serde_json::to_vec(&record).unwrap().into(),
            metadata: HashMap::new(),
            custom_metadata: Vec::new().into(),
            is_json: true,
            position: eventstore::Position::start(),
            created: DateTime::<Utc>::UNIX_EPOCH,
        };
        assert_eq!(SnapshotRecord::from_stored(&event).unwrap(), record);
    }

    proptest! {
        #[test]
        fn sequence_and_revision_are_inverse(sequence in 1u64..u64::MAX) {
            let revision = revision_of(sequence).unwrap();
            prop_assert_eq!(sequence_of(revision), sequence);
            prop_assert_eq!(expected_revision(sequence), ExpectedRevision::Exact(revision));
        }

        #[test]
        fn position_order_is_all_order(a in any::<(u64, u64)>(), b in any::<(u64, u64)>()) {
            let (ea, eb) = (eventstore::Position { commit: a.0, prepare: a.1 }, eventstore::Position { commit: b.0, prepare: b.1 });
            prop_assert_eq!(to_position(ea).cmp(&to_position(eb)), ea.cmp(&eb));
            let text = to_position(ea).to_string();
            prop_assert_eq!(text.parse::<Position>().unwrap(), to_position(ea));
            if to_position(ea) != Position::START {
                prop_assert_eq!(read_from(to_position(ea)), StreamPosition::Position(ea));
            }
        }
    }
}
