//! Money on the wire: integer minor units and an ISO 4217 code, in requests and answers alike.

use serde::{Deserialize, Serialize};
use stay_domain::{Currency, Money, PositiveMoney, ValidationError};
use utoipa::ToSchema;

/// An amount of money: integer minor units and an ISO 4217 code.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoneyBody {
    /// Minor units (cents for USD).
    #[schema(minimum = 0)]
    pub amount_minor: i64,
    /// ISO 4217 code, such as `USD`.
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
}

impl MoneyBody {
    /// The amount as a domain value; a currency ISO 4217 does not list as current, or a bad
    /// amount, is refused.
    pub fn parse(&self) -> Result<Money, ValidationError> {
        Money::new(self.amount_minor, Currency::new(&self.currency)?)
    }
}

/// A price in a request: integer minor units above zero and a current ISO 4217 code.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceBody {
    /// Minor units (cents for USD), at least 1.
    #[schema(minimum = 1)]
    pub amount_minor: i64,
    /// A code ISO 4217 lists as current, such as `USD`, `EUR` or `JPY`.
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
}

impl PriceBody {
    /// The price as a domain value; a currency ISO 4217 does not list as current, or an amount
    /// below one minor unit, is refused.
    pub fn parse(&self) -> Result<PositiveMoney, ValidationError> {
        PositiveMoney::from_minor(self.amount_minor, Currency::new(&self.currency)?)
    }
}

impl From<Money> for MoneyBody {
    fn from(money: Money) -> Self {
        Self { amount_minor: money.amount_minor(), currency: money.currency().as_str().to_owned() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_round_trips_through_its_wire_form() {
        let body = MoneyBody { amount_minor: 12_000, currency: "EUR".into() };
        let money = body.parse().expect("valid");
        assert_eq!(MoneyBody::from(money), body);
    }

    #[test]
    fn a_malformed_currency_or_a_negative_amount_is_refused() {
        assert!(MoneyBody { amount_minor: 1, currency: "eur".into() }.parse().is_err());
        assert!(MoneyBody { amount_minor: -1, currency: "EUR".into() }.parse().is_err());
    }

    #[test]
    fn a_price_is_above_zero_in_a_current_currency() {
        let price = |amount_minor, currency: &str| PriceBody { amount_minor, currency: currency.into() }.parse();
        assert_eq!(price(1, "JPY").map(|p| p.amount_minor()), Ok(1));
        assert!(price(0, "EUR").is_err());
        assert_eq!(price(100, "ZZZ"), Err(ValidationError::UnknownCurrency("ZZZ".into())));
    }
}
