//! The store's error type.

use cqrs_es::persist::PersistenceError;

/// Something the event store could not do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer appended to the stream first (the expected version was stale).
    #[error("another command changed this aggregate first")]
    Conflict,
    /// The database could not be reached or refused the operation.
    #[error("event store unavailable: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Stored data could not be read back into the expected shape.
    #[error("stored data could not be decoded: {0}")]
    Decode(String),
    /// A store URL that names no backend we have.
    #[error("unsupported store `{0}`: use a SQLite path (or sqlite://PATH), postgres://… or esdb://…")]
    UnsupportedUrl(String),
    /// The schema is older or newer than this binary.
    #[error("schema: {0}")]
    Schema(String),
    /// The store is shutting down.
    #[error("the event store is shutting down")]
    Closed,
}

impl StoreError {
    /// Wraps any database-level failure.
    pub fn database(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Database(Box::new(err))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
            sqlx::Error::PoolClosed => StoreError::Closed,
            _ => StoreError::database(err),
        }
    }
}

impl From<PersistenceError> for StoreError {
    fn from(err: PersistenceError) -> Self {
        match err {
            PersistenceError::OptimisticLockError => StoreError::Conflict,
            PersistenceError::ConnectionError(e) | PersistenceError::UnknownError(e) => StoreError::Database(e),
            PersistenceError::DeserializationError(e) => StoreError::Decode(e.to_string()),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(err: serde_json::Error) -> Self {
        StoreError::Decode(err.to_string())
    }
}
