//! Which streams of `$all` are Stay's aggregate streams, i.e. form the feed.
//!
//! `$all` also holds EventStoreDB's own streams (`$…`), our snapshot streams and possibly other
//! applications' streams. [`AggregateStreams`] is the one choice of the feed's streams, used
//! four ways: by feed reads (which events to deliver), by the wake-up subscription (its
//! server-side filter), by appends (an aggregate type whose events the feed would never deliver
//! is refused) and by the `stayAggregateTypes` URL parameter (parsed and checked here).
//!
//! The store does not know which aggregates exist: the list is made at the edge, where the store
//! is opened, from each aggregate's own `Aggregate::TYPE` (`StoreOptions::aggregate_types`), so a
//! renamed or added aggregate cannot be missing from it.

use eventstore::SubscriptionFilter;

use super::codec::{stream_name, SNAPSHOT_PREFIX};
use crate::error::StoreError;

/// Which streams of `$all` are Stay's aggregate streams, i.e. form the feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AggregateStreams {
    /// The streams of these aggregate types only (`{Type}-…`). Appends of any other type are
    /// refused, since the feed would never deliver them.
    Only(Vec<String>),
    /// Every stream named `{Type}-{id}` that is neither a system (`$…`) nor a snapshot stream,
    /// including other applications' streams in the same database.
    All,
}

impl AggregateStreams {
    /// The streams of these aggregate types (each aggregate's `Aggregate::TYPE`).
    pub fn of_types<T: AsRef<str>>(types: &[T]) -> Self {
        AggregateStreams::Only(types.iter().map(|t| t.as_ref().to_owned()).collect())
    }

    /// Parses the `stayAggregateTypes` URL parameter: `*`, or type names separated by commas.
    pub(super) fn parse(value: &str) -> Result<Self, StoreError> {
        let value = value.trim();
        if value == "*" {
            return Ok(AggregateStreams::All);
        }
        let types = value.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect();
        let streams = AggregateStreams::Only(types);
        streams.validate()?;
        Ok(streams)
    }

    /// Refuses type lists that would select nothing or system and snapshot streams.
    pub(super) fn validate(&self) -> Result<(), StoreError> {
        let AggregateStreams::Only(types) = self else { return Ok(()) };
        if types.is_empty() {
            return Err(StoreError::UnsupportedUrl("an EventStoreDB feed needs at least one aggregate type: name them with stayAggregateTypes, or open the store with the system's list".into()));
        }
        for aggregate_type in types {
            if aggregate_type.is_empty()
                || aggregate_type.starts_with('$')
                || format!("{aggregate_type}-").starts_with(SNAPSHOT_PREFIX)
            {
                return Err(StoreError::UnsupportedUrl(format!(
                    "`{aggregate_type}` cannot be an EventStoreDB aggregate type (empty, `$…` or `snapshot`)"
                )));
            }
        }
        Ok(())
    }

    /// Whether an event in `stream_id` of type `event_type` belongs to the feed.
    pub(super) fn contains(&self, stream_id: &str, event_type: &str) -> bool {
        if event_type.starts_with('$') || stream_id.starts_with('$') {
            return false;
        }
        match self {
            AggregateStreams::Only(types) => types.iter().any(|t| in_type_stream(stream_id, t)),
            AggregateStreams::All => stream_id.contains('-') && !stream_id.starts_with(SNAPSHOT_PREFIX),
        }
    }

    /// Refuses to write an aggregate type whose events the feed would not deliver (every append
    /// is checked so; public so that the edge can check its whole list of types without a server).
    pub fn check_writable(&self, aggregate_type: &str, event_types: &[&str]) -> Result<(), StoreError> {
        if let Some(system) = event_types.iter().find(|t| t.is_empty() || t.starts_with('$')) {
            return Err(StoreError::Schema(format!(
                "event type `{system}` is empty or reserved for EventStoreDB system events"
            )));
        }
        let stream = stream_name(aggregate_type, "");
        if aggregate_type.is_empty() || !self.contains(&stream, "_") {
            return Err(StoreError::Schema(format!(
                "aggregate type `{aggregate_type}` is not among the EventStoreDB feed's aggregate types \
                 (stayAggregateTypes); its events would never reach the feed"
            )));
        }
        Ok(())
    }

    /// The same selection as a server-side subscription filter. With `All` it only drops system
    /// streams: a snapshot costs a spurious wake-up, which is harmless.
    pub(super) fn subscription_filter(&self) -> SubscriptionFilter {
        match self {
            AggregateStreams::Only(types) => {
                types.iter().fold(SubscriptionFilter::on_stream_name(), |filter, t| filter.add_prefix(format!("{t}-")))
            }
            AggregateStreams::All => SubscriptionFilter::on_stream_name().exclude_system_events(),
        }
    }
}

/// Whether `stream_id` is a stream of `aggregate_type`.
pub(super) fn in_type_stream(stream_id: &str, aggregate_type: &str) -> bool {
    stream_id.strip_prefix(aggregate_type).is_some_and(|rest| rest.starts_with('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_type_stream_is_the_type_and_a_dash() {
        assert!(in_type_stream("Room-r-1", "Room"));
        assert!(!in_type_stream("RoomType-1", "Room"));
        assert!(!in_type_stream("Room", "Room"));
    }

    #[test]
    fn a_feed_of_types_is_their_aggregate_streams_only() {
        let streams = AggregateStreams::of_types(&["Room", "ReservationSaga"]);
        assert!(streams.validate().is_ok());
        assert!(streams.contains("Room-r-1", "RoomOpened"));
        assert!(streams.contains("ReservationSaga-res-7", "SagaStarted"));
        assert!(!streams.contains("Saga-res-7", "SagaStarted"));
        assert!(!streams.contains("RoomType-1", "X"));
        assert!(!streams.contains("$ce-Room", "$>"));
        assert!(!streams.contains("Room-r-1", "$metadata"));
        assert!(!streams.contains("snapshot-Room-r-1", "Snapshot"));
        assert!(!streams.contains("$$Room-r-1", "$metadata"));
        assert!(streams.check_writable("Room", &["RoomOpened"]).is_ok());
        assert!(streams.check_writable("ReservationSaga", &["SagaStarted"]).is_ok());
        assert!(matches!(streams.check_writable("Invoice", &["Issued"]), Err(StoreError::Schema(_))));
        assert!(matches!(streams.check_writable("Room", &["$deleted"]), Err(StoreError::Schema(_))));
    }

    #[test]
    fn the_open_feed_takes_any_aggregate_stream() {
        let streams = AggregateStreams::All;
        assert!(streams.contains("Invoice-9", "Issued"));
        assert!(!streams.contains("Invoice", "Issued"));
        assert!(!streams.contains("$stats-127.0.0.1:2113", "$statsCollected"));
        assert!(!streams.contains("snapshot-Room-r-1", "Snapshot"));
        assert!(streams.check_writable("Invoice", &["Issued"]).is_ok());
        assert!(streams.check_writable("", &["Issued"]).is_err());
    }

    #[test]
    fn type_lists_are_parsed_and_checked() {
        assert_eq!(AggregateStreams::parse("*").unwrap(), AggregateStreams::All);
        assert_eq!(
            AggregateStreams::parse(" Room, Reservation ,").unwrap(),
            AggregateStreams::Only(vec!["Room".into(), "Reservation".into()])
        );
        for bad in ["", " , ", "$ce", "snapshot", "Room,$all"] {
            assert!(AggregateStreams::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
