//! What a read model is to the runner: its tables (per version) and how an event changes them.

use async_trait::async_trait;
use stay_store::{RecordedEvent, SqlTransaction, StoreError};

/// Why an event could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The event cannot be applied, now or later (it does not decode, or contradicts the model):
    /// it is parked in the dead-letter list.
    #[error("{0}")]
    Poison(String),
    /// The database failed; the batch is retried.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A read model built from the feed.
#[async_trait]
pub trait ReadModel: Send + Sync + std::fmt::Debug + 'static {
    /// Its name (`roomview`, …), also the prefix of its tables.
    fn name(&self) -> &'static str;

    /// DDL creating version `v` of its tables (`;`-separated, valid on SQLite and PostgreSQL).
    fn create(&self, v: i64) -> String;

    /// Its tables at version `v`, to drop when a newer version has replaced it.
    fn tables(&self, v: i64) -> Vec<String>;

    /// Whether the event concerns it (others are skipped without a transaction's work).
    fn wants(&self, event: &RecordedEvent) -> bool;

    /// Applies one event to version `v`, inside the batch's transaction.
    async fn apply(&self, tx: &mut SqlTransaction, v: i64, event: &RecordedEvent) -> Result<(), ApplyError>;

    /// Applies a batch's events, in feed order, to version `v` inside the batch's transaction,
    /// with the same effect as [`apply`](Self::apply) on each in turn. A model may fold the batch
    /// per row and write each row once; if any event is poison it answers `Poison` (the runner
    /// then rolls back and applies the events one by one). By default: `apply`, event by event.
    async fn apply_batch(&self, tx: &mut SqlTransaction, v: i64, events: &[&RecordedEvent]) -> Result<(), ApplyError> {
        for event in events {
            self.apply(tx, v, event).await?;
        }
        Ok(())
    }
}

/// Decodes an event of aggregate `A`, or names why it cannot be.
pub fn decode<A: cqrs_es::Aggregate>(event: &RecordedEvent) -> Result<A::Event, ApplyError> {
    event.decode::<A>().map_err(|err| ApplyError::Poison(err.to_string()))
}
