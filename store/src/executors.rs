//! One executor per aggregate of Stay, sharing a store and a clock.
//!
//! Everything that sends commands in a process (the command API, the saga) shares this bundle, so
//! each aggregate has one cache and one set of lock stripes per process.

use std::sync::Arc;

use stay_domain::{Clock, DomainServices, Payment, Reservation, Review, Room};

use crate::executor::{Executor, ExecutorConfig, ExecutorStats};
use crate::store::EventStore;

/// The executors of Room, Reservation, Payment and Review.
#[derive(Debug)]
pub struct Executors {
    /// Rooms and their calendars.
    pub rooms: Executor<Room>,
    /// Reservations.
    pub reservations: Executor<Reservation>,
    /// Payments.
    pub payments: Executor<Payment>,
    /// Reviews.
    pub reviews: Executor<Review>,
}

impl Executors {
    /// Executors over `store`, with time from `clock`.
    pub fn new(store: &EventStore, clock: Arc<dyn Clock>, config: ExecutorConfig) -> Self {
        let services = Arc::new(DomainServices::new(clock.clone()));
        Self {
            rooms: Executor::with_config(store.clone(), services.clone(), clock.clone(), config.clone()),
            reservations: Executor::with_config(store.clone(), services.clone(), clock.clone(), config.clone()),
            payments: Executor::with_config(store.clone(), services.clone(), clock.clone(), config.clone()),
            reviews: Executor::with_config(store.clone(), services, clock, config),
        }
    }

    /// Each aggregate type with its executor's counters.
    pub fn stats(&self) -> [(&'static str, Arc<ExecutorStats>); 4] {
        use cqrs_es::Aggregate;
        [
            (Room::TYPE, self.rooms.stats()),
            (Reservation::TYPE, self.reservations.stats()),
            (Payment::TYPE, self.payments.stats()),
            (Review::TYPE, self.reviews.stats()),
        ]
    }
}
