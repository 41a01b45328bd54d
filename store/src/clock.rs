//! The system clock, the one place outside tests where Stay reads the time.

use chrono::{DateTime, Utc};
use stay_domain::Clock;

/// The machine's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
