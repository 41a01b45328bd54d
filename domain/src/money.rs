//! Money: integer minor units plus an ISO 4217 currency, never floating point.
//!
//! JSON is exactly `{"amount_minor": 12000, "currency": "USD"}`. Amounts are never negative: every
//! amount the domain handles (a price, a charge, a refund) is a quantity, and arithmetic that would
//! go below zero, overflow or mix currencies is refused with a [`MoneyError`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::iso_4217;
use crate::validation::ValidationError;

/// A currency as its ISO 4217 code: three upper-case ASCII letters.
///
/// [`Currency::new`] (and `TryFrom`) take only codes ISO 4217 lists as current, so a price in
/// `"ZZZ"` is refused where it comes in. Deserialisation checks only the shape, through
/// [`Currency::recorded`]: recorded events must replay after ISO withdraws a code they used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    /// United States dollar.
    pub const USD: Self = Self(*b"USD");
    /// Euro.
    pub const EUR: Self = Self(*b"EUR");
    /// Pound sterling.
    pub const GBP: Self = Self(*b"GBP");

    /// Parses a current ISO 4217 code such as `"USD"`; withdrawn or made-up codes are refused.
    pub fn new(code: &str) -> Result<Self, ValidationError> {
        let currency = Self::recorded(code)?;
        if iso_4217::is_current(&currency.0) {
            Ok(currency)
        } else {
            Err(ValidationError::UnknownCurrency(code.to_owned()))
        }
    }

    /// Parses a code as history recorded it: three upper-case letters, current in ISO 4217 or not.
    pub fn recorded(code: &str) -> Result<Self, ValidationError> {
        match code.as_bytes() {
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => Ok(Self([a, b, c])),
            _ => Err(ValidationError::InvalidCurrency(code.to_owned())),
        }
    }

    /// The code, e.g. `"USD"`.
    pub fn as_str(&self) -> &str {
        // Always ASCII by construction; "XXX" is ISO 4217's own "no currency" code.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Self::recorded(&code).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<String> for Currency {
    type Error = ValidationError;

    fn try_from(code: String) -> Result<Self, Self::Error> {
        Self::new(&code)
    }
}

impl TryFrom<&str> for Currency {
    type Error = ValidationError;

    fn try_from(code: &str) -> Result<Self, Self::Error> {
        Self::new(code)
    }
}

impl From<Currency> for String {
    fn from(currency: Currency) -> Self {
        currency.as_str().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an arithmetic operation on money was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The two amounts are in different currencies.
    #[error("cannot combine {left} with {right}")]
    CurrencyMismatch {
        /// The currency of the left operand.
        left: Currency,
        /// The currency of the right operand.
        right: Currency,
    },
    /// The result does not fit in 64 bits of minor units.
    #[error("the amount is too large")]
    Overflow,
    /// The result would be below zero.
    #[error("the amount would be below zero")]
    BelowZero,
}

/// An amount of money: non-negative integer minor units of one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "MoneyJson", into = "MoneyJson")]
pub struct Money {
    amount_minor: i64,
    currency: Currency,
}

/// The JSON shape of [`Money`], parsed into it.
#[derive(Serialize, Deserialize)]
struct MoneyJson {
    amount_minor: i64,
    currency: Currency,
}

impl Money {
    /// `amount_minor` minor units (cents for USD) of `currency`; refused below zero.
    pub fn new(amount_minor: i64, currency: Currency) -> Result<Self, ValidationError> {
        if amount_minor < 0 {
            return Err(ValidationError::NegativeAmount(amount_minor));
        }
        Ok(Self { amount_minor, currency })
    }

    /// Nothing, in `currency`.
    pub const fn zero(currency: Currency) -> Self {
        Self { amount_minor: 0, currency }
    }

    /// The amount in minor units.
    pub const fn amount_minor(&self) -> i64 {
        self.amount_minor
    }

    /// The currency.
    pub const fn currency(&self) -> Currency {
        self.currency
    }

    /// Whether the amount is zero.
    pub const fn is_zero(&self) -> bool {
        self.amount_minor == 0
    }

    /// `self + other`, refused across currencies or on overflow.
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        let currency = self.same_currency(other)?;
        let amount_minor = self.amount_minor.checked_add(other.amount_minor).ok_or(MoneyError::Overflow)?;
        Ok(Money { amount_minor, currency })
    }

    /// `self - other`, refused across currencies or below zero.
    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        let currency = self.same_currency(other)?;
        let amount_minor = self.amount_minor.checked_sub(other.amount_minor).ok_or(MoneyError::Overflow)?;
        if amount_minor < 0 {
            return Err(MoneyError::BelowZero);
        }
        Ok(Money { amount_minor, currency })
    }

    /// `self × count`, e.g. a nightly price times the nights of a stay; refused on overflow.
    pub fn times(self, count: u32) -> Result<Money, MoneyError> {
        let amount_minor = self.amount_minor.checked_mul(i64::from(count)).ok_or(MoneyError::Overflow)?;
        Ok(Money { amount_minor, currency: self.currency })
    }

    fn same_currency(self, other: Money) -> Result<Currency, MoneyError> {
        if self.currency == other.currency {
            Ok(self.currency)
        } else {
            Err(MoneyError::CurrencyMismatch { left: self.currency, right: other.currency })
        }
    }
}

impl TryFrom<MoneyJson> for Money {
    type Error = ValidationError;

    fn try_from(json: MoneyJson) -> Result<Self, Self::Error> {
        Self::new(json.amount_minor, json.currency)
    }
}

impl From<Money> for MoneyJson {
    fn from(money: Money) -> Self {
        Self { amount_minor: money.amount_minor, currency: money.currency }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} (minor units)", self.amount_minor, self.currency)
    }
}

/// Money above zero, such as a nightly price, a charge or a refund. Same JSON as [`Money`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Money", into = "Money")]
pub struct PositiveMoney(Money);

impl PositiveMoney {
    /// `money`, refused when it is zero.
    pub fn new(money: Money) -> Result<Self, ValidationError> {
        if money.is_zero() {
            return Err(ValidationError::NotPositive { field: "amount_minor" });
        }
        Ok(Self(money))
    }

    /// Parses `amount_minor` minor units of `currency`; refused unless above zero.
    pub fn from_minor(amount_minor: i64, currency: Currency) -> Result<Self, ValidationError> {
        Self::new(Money::new(amount_minor, currency)?)
    }

    /// The amount as plain [`Money`].
    pub const fn money(&self) -> Money {
        self.0
    }

    /// The amount in minor units.
    pub const fn amount_minor(&self) -> i64 {
        self.0.amount_minor
    }

    /// The currency.
    pub const fn currency(&self) -> Currency {
        self.0.currency
    }
}

impl TryFrom<Money> for PositiveMoney {
    type Error = ValidationError;

    fn try_from(money: Money) -> Result<Self, Self::Error> {
        Self::new(money)
    }
}

impl From<PositiveMoney> for Money {
    fn from(money: PositiveMoney) -> Self {
        money.0
    }
}

impl fmt::Display for PositiveMoney {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn usd(amount_minor: i64) -> Money {
        Money::new(amount_minor, Currency::USD).expect("valid money")
    }

    #[test]
    fn money_serializes_as_minor_units_and_code() {
        assert_eq!(
            serde_json::to_value(usd(12000)).expect("serializes"),
            json!({"amount_minor": 12000, "currency": "USD"})
        );
        let parsed: Money = serde_json::from_value(json!({"amount_minor": 12000, "currency": "USD"})).expect("parses");
        assert_eq!(parsed, usd(12000));
    }

    #[test]
    fn currency_accepts_three_upper_case_letters_only() {
        assert_eq!(Currency::new("EUR"), Ok(Currency::EUR));
        for bad in ["", "US", "USDX", "usd", "U$D", "ÜSD", "12A"] {
            assert_eq!(Currency::new(bad), Err(ValidationError::InvalidCurrency(bad.to_owned())), "{bad:?}");
            assert_eq!(Currency::recorded(bad), Err(ValidationError::InvalidCurrency(bad.to_owned())), "{bad:?}");
            assert!(serde_json::from_value::<Currency>(json!(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_new_currency_must_be_current_in_iso_4217() {
        for code in ["USD", "JPY", "CHF", "XOF"] {
            assert_eq!(Currency::new(code).map(|c| c.to_string()), Ok(code.to_owned()));
        }
        for made_up_or_withdrawn in ["ZZZ", "AAA", "HRK", "DEM"] {
            assert_eq!(
                Currency::new(made_up_or_withdrawn),
                Err(ValidationError::UnknownCurrency(made_up_or_withdrawn.to_owned()))
            );
            assert!(Currency::try_from(made_up_or_withdrawn).is_err());
        }
        assert!(serde_json::from_value::<Money>(json!({"amount_minor": 1, "currency": "ZZZ"})).is_ok());
    }

    #[test]
    fn every_listed_code_makes_a_currency() {
        for code in crate::iso_4217::current_codes() {
            assert_eq!(Currency::new(code).map(|c| c.to_string()).as_deref(), Ok(*code));
        }
    }

    #[test]
    fn recorded_history_keeps_a_withdrawn_currency_readable() {
        // Kuna, withdrawn when Croatia took the euro: events priced in it must still replay.
        let kuna: Money = serde_json::from_value(json!({"amount_minor": 7_500, "currency": "HRK"})).expect("replays");
        assert_eq!(kuna.currency(), Currency::recorded("HRK").expect("the right shape"));
        assert_eq!(serde_json::to_value(kuna).expect("serializes")["currency"], json!("HRK"));
    }

    #[test]
    fn negative_money_is_refused_at_construction_and_deserialization() {
        assert_eq!(Money::new(-1, Currency::USD), Err(ValidationError::NegativeAmount(-1)));
        assert!(serde_json::from_value::<Money>(json!({"amount_minor": -1, "currency": "USD"})).is_err());
        assert!(serde_json::from_value::<Money>(json!({"amount_minor": 1, "currency": "usd"})).is_err());
        assert!(serde_json::from_value::<Money>(json!({"amount_minor": 1.5, "currency": "USD"})).is_err());
    }

    #[test]
    fn positive_money_refuses_zero_at_construction_and_deserialization() {
        assert_eq!(PositiveMoney::new(usd(0)), Err(ValidationError::NotPositive { field: "amount_minor" }));
        assert!(serde_json::from_value::<PositiveMoney>(json!({"amount_minor": 0, "currency": "USD"})).is_err());
        let price: PositiveMoney =
            serde_json::from_value(json!({"amount_minor": 1, "currency": "USD"})).expect("parses");
        assert_eq!(price.money(), usd(1));
    }

    #[test]
    fn arithmetic_refuses_mixed_currencies() {
        let eur = Money::new(5, Currency::EUR).expect("valid money");
        let mismatch = MoneyError::CurrencyMismatch { left: Currency::USD, right: Currency::EUR };
        assert_eq!(usd(5).checked_add(eur), Err(mismatch.clone()));
        assert_eq!(usd(5).checked_sub(eur), Err(mismatch));
    }

    #[test]
    fn arithmetic_refuses_overflow_and_going_below_zero() {
        assert_eq!(usd(i64::MAX).checked_add(usd(1)), Err(MoneyError::Overflow));
        assert_eq!(usd(i64::MAX).times(2), Err(MoneyError::Overflow));
        assert_eq!(usd(1).checked_sub(usd(2)), Err(MoneyError::BelowZero));
    }

    proptest! {
        #[test]
        fn add_then_sub_gives_back_the_start(a in 0..=i64::MAX / 2, b in 0..=i64::MAX / 2) {
            let sum = usd(a).checked_add(usd(b)).expect("no overflow");
            prop_assert_eq!(sum.amount_minor(), a + b);
            prop_assert_eq!(sum.checked_sub(usd(b)), Ok(usd(a)));
            prop_assert_eq!(usd(a).checked_add(usd(b)), usd(b).checked_add(usd(a)));
        }

        #[test]
        fn times_is_repeated_addition(price in 0..1_000_000_000i64, nights in 0..=30u32) {
            let mut total = Money::zero(Currency::USD);
            for _ in 0..nights {
                total = total.checked_add(usd(price)).expect("no overflow");
            }
            prop_assert_eq!(usd(price).times(nights), Ok(total));
        }

        #[test]
        fn arithmetic_never_yields_negative_money(a in any::<i64>(), b in any::<i64>()) {
            let (a, b) = (usd(a.saturating_abs()), usd(b.saturating_abs()));
            for money in [a.checked_add(b), a.checked_sub(b)].into_iter().flatten() {
                prop_assert!(money.amount_minor() >= 0);
            }
            prop_assert_eq!(a.checked_sub(b).is_err(), b.amount_minor() > a.amount_minor());
        }

        #[test]
        fn money_round_trips_through_json(amount in 0..=i64::MAX, code in "[A-Z]{3}") {
            let money = Money::new(amount, Currency::recorded(&code).expect("valid code")).expect("valid");
            let json = serde_json::to_value(money).expect("serializes");
            prop_assert_eq!(serde_json::from_value::<Money>(json).expect("parses"), money);
        }
    }
}
