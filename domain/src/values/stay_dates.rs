//! A stay: the nights from check-in up to, not including, check-out.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::validation::ValidationError;

/// The nights `[check_in, check_out)`: at least one, at most [`StayDates::MAX_NIGHTS`].
///
/// JSON: `{"check_in": "2030-05-01", "check_out": "2030-05-04"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "StayDatesJson", into = "StayDatesJson")]
pub struct StayDates {
    check_in: NaiveDate,
    check_out: NaiveDate,
}

/// The JSON shape of [`StayDates`], parsed into it.
#[derive(Serialize, Deserialize)]
struct StayDatesJson {
    check_in: NaiveDate,
    check_out: NaiveDate,
}

impl StayDates {
    /// The longest stay that can be reserved, in nights.
    pub const MAX_NIGHTS: u32 = 30;

    /// Parses a stay; refused when check-out is not after check-in or it is longer than 30 nights.
    pub fn new(check_in: NaiveDate, check_out: NaiveDate) -> Result<Self, ValidationError> {
        let nights = check_out.signed_duration_since(check_in).num_days();
        if nights < 1 {
            return Err(ValidationError::EmptyStay { check_in, check_out });
        }
        if nights > i64::from(Self::MAX_NIGHTS) {
            return Err(ValidationError::StayTooLong { nights, max: Self::MAX_NIGHTS });
        }
        Ok(Self { check_in, check_out })
    }

    /// The day of arrival, the first night.
    pub const fn check_in(&self) -> NaiveDate {
        self.check_in
    }

    /// The day of departure, not a night of the stay.
    pub const fn check_out(&self) -> NaiveDate {
        self.check_out
    }

    /// How many nights: 1 to 30.
    pub fn nights(&self) -> u32 {
        let days = self.check_out.signed_duration_since(self.check_in).num_days();
        // Always 1..=30 by construction.
        u32::try_from(days).unwrap_or(0)
    }

    /// Whether the two stays share at least one night.
    pub fn overlaps(&self, other: &StayDates) -> bool {
        self.check_in < other.check_out && other.check_in < self.check_out
    }

    /// Whether `night` is one of the nights of this stay.
    pub fn contains(&self, night: NaiveDate) -> bool {
        self.check_in <= night && night < self.check_out
    }

    /// Each night of the stay, from check-in to the night before check-out.
    pub fn each_night(&self) -> impl Iterator<Item = NaiveDate> {
        let check_out = self.check_out;
        self.check_in.iter_days().take_while(move |night| *night < check_out)
    }
}

impl TryFrom<StayDatesJson> for StayDates {
    type Error = ValidationError;

    fn try_from(json: StayDatesJson) -> Result<Self, Self::Error> {
        Self::new(json.check_in, json.check_out)
    }
}

impl From<StayDates> for StayDatesJson {
    fn from(stay: StayDates) -> Self {
        Self { check_in: stay.check_in, check_out: stay.check_out }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Days;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
    }

    fn day(offset: u64) -> NaiveDate {
        date(2030, 1, 1).checked_add_days(Days::new(offset)).expect("in range")
    }

    fn stay(from: u64, nights: u64) -> StayDates {
        StayDates::new(day(from), day(from + nights)).expect("valid stay")
    }

    #[test]
    fn stay_serializes_as_check_in_and_check_out() {
        let stay = StayDates::new(date(2030, 5, 1), date(2030, 5, 4)).expect("valid stay");
        let json = json!({"check_in": "2030-05-01", "check_out": "2030-05-04"});
        assert_eq!(serde_json::to_value(stay).expect("serializes"), json);
        assert_eq!(serde_json::from_value::<StayDates>(json).expect("parses"), stay);
        assert_eq!(stay.nights(), 3);
        assert_eq!(stay.each_night().collect::<Vec<_>>(), vec![date(2030, 5, 1), date(2030, 5, 2), date(2030, 5, 3)]);
    }

    #[test]
    fn empty_or_backwards_stays_are_refused() {
        let same = date(2030, 5, 1);
        assert_eq!(StayDates::new(same, same), Err(ValidationError::EmptyStay { check_in: same, check_out: same }));
        assert!(StayDates::new(date(2030, 5, 2), date(2030, 5, 1)).is_err());
        for (check_in, check_out) in [("2030-05-01", "2030-05-01"), ("2030-05-02", "2030-05-01")] {
            assert!(serde_json::from_value::<StayDates>(json!({"check_in": check_in, "check_out": check_out})).is_err());
        }
    }

    #[test]
    fn stays_longer_than_30_nights_are_refused() {
        assert_eq!(stay(0, 30).nights(), 30);
        assert_eq!(StayDates::new(day(0), day(31)), Err(ValidationError::StayTooLong { nights: 31, max: 30 }));
        assert!(
            serde_json::from_value::<StayDates>(json!({"check_in": "2030-01-01", "check_out": "2030-02-01"})).is_err()
        );
    }

    #[test]
    fn malformed_dates_are_refused() {
        assert!(
            serde_json::from_value::<StayDates>(json!({"check_in": "2030-02-30", "check_out": "2030-03-01"})).is_err()
        );
        assert!(serde_json::from_value::<StayDates>(json!({"check_in": "2030-02-01"})).is_err());
    }

    #[test]
    fn back_to_back_stays_do_not_overlap() {
        assert!(!stay(0, 3).overlaps(&stay(3, 2)));
        assert!(stay(0, 3).overlaps(&stay(2, 2)));
        assert!(stay(0, 10).overlaps(&stay(2, 2)));
    }

    proptest! {
        #[test]
        fn nights_counts_the_nights_iterated(from in 0u64..400, nights in 1u64..=30) {
            let stay = stay(from, nights);
            prop_assert_eq!(u64::from(stay.nights()), nights);
            prop_assert_eq!(stay.each_night().count() as u64, nights);
            prop_assert!(stay.each_night().all(|night| stay.contains(night)));
            prop_assert!(!stay.contains(stay.check_out()));
        }

        #[test]
        fn overlap_is_symmetric_and_means_a_shared_night(
            a_from in 0u64..60, a_nights in 1u64..=30, b_from in 0u64..60, b_nights in 1u64..=30,
        ) {
            let (a, b) = (stay(a_from, a_nights), stay(b_from, b_nights));
            prop_assert_eq!(a.overlaps(&b), b.overlaps(&a));
            prop_assert_eq!(a.overlaps(&b), a.each_night().any(|night| b.contains(night)));
            prop_assert!(a.overlaps(&a));
        }

        #[test]
        fn any_valid_stay_round_trips_through_json(from in 0u64..4000, nights in 1u64..=30) {
            let stay = stay(from, nights);
            let json = serde_json::to_value(stay).expect("serializes");
            prop_assert_eq!(serde_json::from_value::<StayDates>(json).expect("parses"), stay);
        }

        #[test]
        fn construction_accepts_exactly_1_to_30_nights(from in 0u64..400, length in -5i64..40) {
            let check_out = if length >= 0 {
                day(from).checked_add_days(Days::new(length.unsigned_abs()))
            } else {
                day(from).checked_sub_days(Days::new(length.unsigned_abs()))
            }.expect("in range");
            prop_assert_eq!(StayDates::new(day(from), check_out).is_ok(), (1..=30).contains(&length));
        }
    }
}
