//! The services every aggregate of this crate receives from the executor.

use std::sync::Arc;

use crate::clock::Clock;

/// What the aggregates may ask of the world: only the time, so they stay pure.
#[derive(Debug, Clone)]
pub struct DomainServices {
    /// Where "now" and "today" come from.
    pub clock: Arc<dyn Clock>,
}

impl DomainServices {
    /// Services over the given clock.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { clock }
    }
}
