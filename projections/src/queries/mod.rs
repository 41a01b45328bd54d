//! Typed reads of the read models, for the query side: each query names its columns and answers
//! rows as structs. A value that cannot be read is an error, never a default.
//!
//! Callers pass the version to read (the live one, or the one `min_position` was checked
//! against), so a query never mixes two versions of a model.

pub mod correlations;
pub mod notifications;
pub mod reservations;
pub mod reviews;
pub mod rooms;
pub mod sagas;
