//! How far ahead a stay may be booked.

use chrono::{Days, NaiveDate};

use super::StayDates;
use crate::validation::ValidationError;

/// How many days ahead of today a stay may end; a stay ending later is refused.
///
/// Without one, a stay in year 9999 could be held, and the room's calendar would carry it for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookingHorizon {
    days: u32,
}

impl BookingHorizon {
    /// Two years of 365 days, the default.
    pub const DEFAULT: Self = Self { days: 730 };

    /// A horizon of `days` days; refused below one day or above 100 years.
    pub fn days(days: u32) -> Result<Self, ValidationError> {
        const MAX_DAYS: u32 = 36_500;
        if (1..=MAX_DAYS).contains(&days) {
            Ok(Self { days })
        } else {
            Err(ValidationError::OutOfRange {
                field: "booking_horizon",
                min: 1,
                max: i64::from(MAX_DAYS),
                actual: i64::from(days),
            })
        }
    }

    /// Its length in days.
    pub const fn in_days(&self) -> u32 {
        self.days
    }

    /// The latest check-out it admits when booking on `today`.
    pub fn last_check_out(&self, today: NaiveDate) -> NaiveDate {
        today.checked_add_days(Days::new(u64::from(self.days))).unwrap_or(NaiveDate::MAX)
    }

    /// Whether `stay`, booked on `today`, ends within the horizon.
    pub fn admits(&self, stay: &StayDates, today: NaiveDate) -> Result<(), ValidationError> {
        let last_check_out = self.last_check_out(today);
        if stay.check_out() <= last_check_out {
            Ok(())
        } else {
            Err(ValidationError::BeyondBookingHorizon { check_out: stay.check_out(), last_check_out, days: self.days })
        }
    }
}

impl Default for BookingHorizon {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
    }

    fn stay(check_in: NaiveDate, nights: u64) -> StayDates {
        StayDates::new(check_in, check_in.checked_add_days(Days::new(nights)).expect("in range")).expect("a stay")
    }

    #[test]
    fn by_default_a_stay_may_end_two_years_ahead_and_no_later() {
        let today = date(2030, 3, 1);
        let horizon = BookingHorizon::default();
        assert_eq!(horizon.last_check_out(today), date(2032, 2, 29));
        assert_eq!(horizon.admits(&stay(date(2032, 2, 27), 2), today), Ok(()));
        assert_eq!(
            horizon.admits(&stay(date(2032, 2, 27), 3), today),
            Err(ValidationError::BeyondBookingHorizon {
                check_out: date(2032, 3, 1),
                last_check_out: date(2032, 2, 29),
                days: 730
            })
        );
    }

    #[test]
    fn a_stay_in_year_9999_is_beyond_it() {
        let refused = BookingHorizon::default().admits(&stay(date(9999, 12, 1), 3), date(2030, 3, 1));
        let err = refused.expect_err("beyond the horizon");
        assert_eq!((err.field(), err.code()), ("check_out", "beyond_booking_horizon"));
    }

    #[test]
    fn a_horizon_is_one_day_to_a_hundred_years() {
        assert_eq!(BookingHorizon::days(1).map(|h| h.in_days()), Ok(1));
        assert_eq!(BookingHorizon::days(36_500).map(|h| h.in_days()), Ok(36_500));
        assert!(BookingHorizon::days(0).is_err());
        assert!(BookingHorizon::days(36_501).is_err());
        let tomorrow_only = BookingHorizon::days(1).expect("valid");
        assert!(tomorrow_only.admits(&stay(date(2030, 3, 1), 1), date(2030, 3, 1)).is_ok());
        assert!(tomorrow_only.admits(&stay(date(2030, 3, 1), 2), date(2030, 3, 1)).is_err());
    }
}
