//! Calendar dates as the API writes them: exactly `YYYY-MM-DD`.

use chrono::NaiveDate;

use crate::validation::ValidationError;

/// Parses `text` as a date written exactly `YYYY-MM-DD`: four-digit year, two-digit month and day.
///
/// chrono alone also takes `2027-1-1` or `+2027-01-01`; the contract says `YYYY-MM-DD`, and a
/// date has one spelling, so anything else is refused with `field` named. This is the rule for
/// dates that come in; dates in recorded events are read as chrono wrote them.
pub fn parse_date(field: &'static str, text: &str) -> Result<NaiveDate, ValidationError> {
    let invalid = || ValidationError::InvalidDate { field, value: text.chars().take(64).collect() };
    let well_formed = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
    if !well_formed {
        return Err(invalid());
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_date_written_yyyy_mm_dd_parses() {
        assert_eq!(parse_date("check_in", "2027-01-01"), Ok(NaiveDate::from_ymd_opt(2027, 1, 1).expect("a date")));
        assert_eq!(parse_date("check_in", "2028-02-29"), Ok(NaiveDate::from_ymd_opt(2028, 2, 29).expect("a date")));
    }

    #[test]
    fn any_other_spelling_is_refused_naming_the_field() {
        for bad in [
            "2027-1-1",
            "2027-01-1",
            "2027-1-01",
            "27-01-01",
            "+2027-01-01",
            "02027-01-01",
            "2027/01/01",
            "2027-01-01 ",
            " 2027-01-01",
            "2027-01-01T00:00:00Z",
            "20270101",
            "2027-02-30",
            "2027-13-01",
            "2027-00-10",
            "",
            "２０２７-01-01",
        ] {
            assert_eq!(
                parse_date("check_out", bad),
                Err(ValidationError::InvalidDate { field: "check_out", value: bad.to_owned() }),
                "{bad:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn every_date_reads_back_from_how_it_prints(days in 0i64..3_000_000) {
            let date = NaiveDate::from_ymd_opt(1, 1, 1).expect("a date") + chrono::Days::new(days as u64);
            let text = date.format("%Y-%m-%d").to_string();
            prop_assume!(text.len() == 10);
            prop_assert_eq!(parse_date("d", &text), Ok(date));
        }
    }
}
