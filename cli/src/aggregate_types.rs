//! Every aggregate type Stay writes, each named by the aggregate's own `Aggregate::TYPE`: the one
//! list the event store is opened with (EventStoreDB's feed is these types' streams). The store
//! knows no aggregates, and the saga's type lives in the saga's crate, so the list is made here,
//! at the edge, where every aggregate is known.

use cqrs_es::Aggregate;
use stay_domain::{Payment, Reservation, Review, Room};
use stay_saga::instance::SagaInstance;
use stay_store::StoreOptions;

/// The aggregate types the system writes.
pub const ALL: [&str; 5] = [Room::TYPE, Reservation::TYPE, Payment::TYPE, Review::TYPE, SagaInstance::TYPE];

/// The aggregate types the system writes, as the store's options take them.
pub fn all() -> Vec<String> {
    ALL.map(str::to_owned).into()
}

/// Store options naming every aggregate type the system writes.
pub fn store_options() -> StoreOptions {
    StoreOptions { aggregate_types: all(), ..StoreOptions::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_aggregate_type_is_listed_once() {
        let types = all();
        let mut unique = types.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), types.len(), "{types:?}");
        assert!(types.iter().any(|t| t == SagaInstance::TYPE), "the saga writes events too: {types:?}");
    }

    #[test]
    fn the_sagas_read_model_follows_the_sagas_own_type() {
        assert_eq!(stay_projections::models::sagas::SAGA_TYPE, SagaInstance::TYPE);
    }

    /// The EventStoreDB backend refuses appends of a type outside its feed's list; every type the
    /// system writes must pass that check as the store is opened by `stay serve`. No server needed.
    #[cfg(feature = "eventstoredb")]
    #[test]
    fn eventstoredb_accepts_every_aggregate_type_the_system_writes() {
        use stay_store::eventstoredb::AggregateStreams;
        let streams = AggregateStreams::of_types(&store_options().aggregate_types);
        for aggregate_type in all() {
            assert!(
                streams.check_writable(&aggregate_type, &["AnEvent"]).is_ok(),
                "EventStoreDB would refuse {aggregate_type} appends"
            );
        }
        assert!(streams.check_writable("Saga", &["SagaStarted"]).is_err(), "only the listed types");
    }
}
