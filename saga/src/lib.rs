//! The reservation saga: carries each reservation from request to a final state.

pub mod admin;
pub mod driver;
pub mod instance;
pub mod payment_ledger;
pub mod provider;
pub mod schedule;
#[cfg(test)]
mod testing;
pub mod worker;
