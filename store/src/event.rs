//! Events as the store writes and reads them: metadata, events to append, and recorded events.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use cqrs_es::persist::{EventUpcaster, PersistedEventRepository, SerializedEvent};
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::error::StoreError;
use crate::position::Position;

/// Why and by whom an event was written. Stored with every event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// The command that produced the event; deterministic for saga commands, so retries are recognisable.
    pub command_id: String,
    /// The business transaction the event belongs to (for a reservation: its id).
    pub correlation_id: String,
    /// The event or request that caused the command.
    pub causation_id: String,
    /// The user (JWT `sub`) or component (`saga`, `system`) that acted.
    pub actor: String,
    /// When the store recorded the event.
    pub recorded_at: DateTime<Utc>,
}

impl EventMetadata {
    /// The metadata as cqrs-es carries it in an `EventEnvelope`.
    pub fn to_map(&self) -> HashMap<String, String> {
        HashMap::from([
            ("command_id".to_owned(), self.command_id.clone()),
            ("correlation_id".to_owned(), self.correlation_id.clone()),
            ("causation_id".to_owned(), self.causation_id.clone()),
            ("actor".to_owned(), self.actor.clone()),
            ("recorded_at".to_owned(), self.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true)),
        ])
    }
}

/// Who sends a command and why; the executor turns it into every event's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandContext {
    /// Unique per command; deterministic where a retry must be recognised.
    pub command_id: String,
    /// The business transaction (defaults to the command id).
    pub correlation_id: String,
    /// What caused the command (defaults to the command id).
    pub causation_id: String,
    /// The acting user or component.
    pub actor: String,
}

impl CommandContext {
    /// A fresh context for a command a user sent: new command id, correlated to itself.
    pub fn new(actor: impl Into<String>) -> Self {
        let command_id = Uuid::now_v7().to_string();
        Self { correlation_id: command_id.clone(), causation_id: command_id.clone(), command_id, actor: actor.into() }
    }

    /// The same context with a given command id (kept as correlation and causation unless set).
    pub fn with_command_id(mut self, command_id: impl Into<String>) -> Self {
        let command_id = command_id.into();
        if self.correlation_id == self.command_id {
            self.correlation_id = command_id.clone();
        }
        if self.causation_id == self.command_id {
            self.causation_id = command_id.clone();
        }
        self.command_id = command_id;
        self
    }

    /// The same context correlated to a business transaction.
    pub fn correlated_to(mut self, correlation_id: impl Into<String>) -> Self {
        self.correlation_id = correlation_id.into();
        self
    }

    /// The same context caused by a given event or request.
    pub fn caused_by(mut self, causation_id: impl Into<String>) -> Self {
        self.causation_id = causation_id.into();
        self
    }

    /// The metadata for events recorded at `recorded_at`.
    pub fn metadata(&self, recorded_at: DateTime<Utc>) -> EventMetadata {
        EventMetadata {
            command_id: self.command_id.clone(),
            correlation_id: self.correlation_id.clone(),
            causation_id: self.causation_id.clone(),
            actor: self.actor.clone(),
            recorded_at,
        }
    }
}

/// One event to append, already serialised.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// The event's stable type name.
    pub event_type: String,
    /// The event's schema version.
    pub event_version: String,
    /// The event as JSON.
    pub payload: Value,
}

impl NewEvent {
    /// Serialises a domain event.
    pub fn from_domain<E: DomainEvent>(event: &E) -> Result<Self, StoreError> {
        Ok(Self {
            event_type: event.event_type(),
            event_version: event.event_version(),
            payload: serde_json::to_value(event)?,
        })
    }
}

/// Events for one aggregate, to be appended atomically after `expected_version` (0: a new stream).
#[derive(Clone, Debug, PartialEq)]
pub struct Append {
    /// The aggregate's type (`Aggregate::TYPE`).
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// The sequence of the last event the writer saw; the first new event gets `expected_version + 1`.
    pub expected_version: u64,
    /// The events, in order; never empty.
    pub events: Vec<NewEvent>,
    /// Written with every event.
    pub metadata: EventMetadata,
}

/// An aggregate's state after its first `last_sequence` events, so a load can start there.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// The aggregate's type.
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// The sequence of the last event the state includes.
    pub last_sequence: u64,
    /// The serialised aggregate.
    pub state: Value,
    /// When it was taken.
    pub taken_at: DateTime<Utc>,
}

/// An event as it stands in the log, with its place in the global feed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecordedEvent {
    /// Its place in the global feed.
    pub position: Position,
    /// The aggregate's type.
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// 1-based sequence within the aggregate's stream.
    pub sequence: u64,
    /// Stable type name.
    pub event_type: String,
    /// Schema version (after upcasting).
    pub event_version: String,
    /// The event as JSON (after upcasting).
    pub payload: Value,
    /// Command id, correlation, causation, actor, time.
    pub metadata: Value,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
}

impl RecordedEvent {
    /// Decodes the payload into an aggregate's event type.
    pub fn decode<A: Aggregate>(&self) -> Result<A::Event, StoreError> {
        // Deserialised from the borrowed document: no copy of the payload per event.
        serde::Deserialize::deserialize(&self.payload).map_err(|e: serde_json::Error| {
            StoreError::Decode(format!(
                "{} {} v{} at {}: {e}",
                self.aggregate_type, self.event_type, self.event_version, self.position
            ))
        })
    }

    /// The metadata field `key`, when present.
    pub fn metadata_field(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).and_then(Value::as_str)
    }

    /// Applies upcasters in order, as cqrs-es does on load.
    pub(crate) fn upcast(self, upcasters: &[Box<dyn EventUpcaster>]) -> Self {
        if upcasters.is_empty() {
            return self;
        }
        let position = self.position;
        let recorded_at = self.recorded_at;
        let serialized = upcast_serialized(self.into_serialized(), upcasters);
        Self::from_serialized(serialized, position, recorded_at)
    }

    fn into_serialized(self) -> SerializedEvent {
        SerializedEvent::new(
            self.aggregate_id,
            self.sequence as usize,
            self.aggregate_type,
            self.event_type,
            self.event_version,
            self.payload,
            self.metadata,
        )
    }

    fn from_serialized(event: SerializedEvent, position: Position, recorded_at: DateTime<Utc>) -> Self {
        Self {
            position,
            aggregate_type: event.aggregate_type,
            aggregate_id: event.aggregate_id,
            sequence: event.sequence as u64,
            event_type: event.event_type,
            event_version: event.event_version,
            payload: event.payload,
            metadata: event.metadata,
            recorded_at,
        }
    }
}

/// Applies every upcaster that accepts the event, in order.
pub(crate) fn upcast_serialized(event: SerializedEvent, upcasters: &[Box<dyn EventUpcaster>]) -> SerializedEvent {
    upcasters.iter().fold(event, |event, upcaster| {
        if upcaster.can_upcast(&event.event_type, &event.event_version) {
            upcaster.upcast(event)
        } else {
            event
        }
    })
}

/// Parses the `recorded_at` text both SQL backends store.
pub(crate) fn parse_time(text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Decode(format!("recorded_at `{text}`: {e}")))
}

/// An aggregate's events after `after_sequence`, through a cqrs-es repository (every backend loads
/// aggregates this way).
pub(crate) async fn load_through<R: PersistedEventRepository, A: Aggregate>(
    repo: &R,
    aggregate_id: &str,
    after_sequence: u64,
) -> Result<Vec<SerializedEvent>, StoreError> {
    let events = if after_sequence == 0 {
        repo.get_events::<A>(aggregate_id).await?
    } else {
        // Past usize::MAX (32-bit targets) there is nothing left to load anyway.
        let after = usize::try_from(after_sequence).unwrap_or(usize::MAX);
        repo.get_last_events::<A>(aggregate_id, after).await?
    };
    Ok(events)
}
