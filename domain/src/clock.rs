//! Time as a service: the domain asks a [`Clock`] for "now" instead of the system.
//!
//! The system clock lives in the store crate; tests use [`FixedClock`] to put the domain on any day.

use std::fmt;
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;

    /// Today's calendar date in UTC, the date rules such as "the stay has begun" compare against.
    fn today(&self) -> NaiveDate {
        self.now().date_naive()
    }
}

/// A clock that stands still until told to move, for tests.
#[derive(Debug)]
pub struct FixedClock {
    now: Mutex<DateTime<Utc>>,
}

impl FixedClock {
    /// A clock stopped at `now`.
    pub fn at(now: DateTime<Utc>) -> Self {
        Self { now: Mutex::new(now) }
    }

    /// A clock stopped at midnight UTC at the start of `date`.
    pub fn on(date: NaiveDate) -> Self {
        Self::at(date.and_time(NaiveTime::MIN).and_utc())
    }

    /// Moves the clock to `now`.
    pub fn set(&self, now: DateTime<Utc>) {
        *self.lock() = now;
    }

    /// Moves the clock to midnight UTC at the start of `date`.
    pub fn set_today(&self, date: NaiveDate) {
        self.set(date.and_time(NaiveTime::MIN).and_utc());
    }

    /// Moves the clock forward (or back, with a negative delta) by `by`.
    pub fn advance(&self, by: TimeDelta) {
        let mut now = self.lock();
        *now += by;
    }

    // A test that panicked while holding the lock cannot leave a half-written instant behind,
    // so a poisoned lock is still safe to use.
    fn lock(&self) -> std::sync::MutexGuard<'_, DateTime<Utc>> {
        self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        *self.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
    }

    #[test]
    fn fixed_clock_reports_the_day_it_was_set_to() {
        let clock = FixedClock::on(date(2030, 5, 17));
        assert_eq!(clock.today(), date(2030, 5, 17));
        clock.set_today(date(2031, 1, 2));
        assert_eq!(clock.today(), date(2031, 1, 2));
    }

    #[test]
    fn advancing_past_midnight_moves_today() {
        let clock = FixedClock::on(date(2030, 5, 17));
        clock.advance(TimeDelta::hours(23));
        assert_eq!(clock.today(), date(2030, 5, 17));
        clock.advance(TimeDelta::hours(1));
        assert_eq!(clock.today(), date(2030, 5, 18));
    }
}
