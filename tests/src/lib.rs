//! Support for Stay's tests from outside the code: throw-away databases and data directories,
//! a real `stay serve` to talk to, and a tiny aggregate for the event-store conformance suite.
//!
//! Every test makes its own database (PostgreSQL) or directory (SQLite) and removes it at the
//! end, even when it fails, so tests never depend on each other or on what a run left behind.
//! [`browser`] drives a headless Chromium for the dashboard's tests.

pub mod bodies;
pub mod browser;
pub mod databases;
pub mod deployment;
pub mod feed;
pub mod kustomize;
pub mod manifest_checks;
pub mod payment_sim;
pub mod raw_http;
pub mod server;
pub mod tally;

pub use databases::{TestPostgres, TestSqlite};
pub use feed::read_feed_until;
pub use payment_sim::PaymentSim;
pub use raw_http::{RawAnswer, RawConnection};
pub use server::{Answer, Backend, StayServer};
