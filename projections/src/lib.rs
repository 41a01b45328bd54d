//! Stay's read side: the read models and the workers that build them from the global feed.
//!
//! - [`runner`] — one worker per read model: batches, one transaction for rows and checkpoint,
//!   dead letters, a lease per model across processes, versions for rebuilds without downtime.
//! - [`models`] — roomview, reservations, notifications, reviews, and the saga overview: their
//!   tables and how each event changes them.
//! - [`queries`] — typed reads of those tables, for the query API.

pub mod model;
pub mod models;
pub mod queries;
pub mod runner;

pub use model::{ApplyError, ReadModel};
pub use runner::{LeaseState, Projector, RunnerConfig, WorkerReport, PROJECTION_MIGRATIONS};
