//! Money on the wire: integer minor units and an ISO 4217 code, in requests and answers alike.

use serde::{Deserialize, Serialize};
use stay_domain::{Currency, Money, ValidationError};
use utoipa::ToSchema;

/// An amount of money: integer minor units and an ISO 4217 code.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoneyBody {
    /// Minor units (cents for USD).
    pub amount_minor: i64,
    /// ISO 4217 code, such as `USD`.
    pub currency: String,
}

impl MoneyBody {
    /// The amount as a domain value; a currency ISO 4217 does not list as current, or a bad
    /// amount, is refused.
    pub fn parse(&self) -> Result<Money, ValidationError> {
        Money::new(self.amount_minor, Currency::new(&self.currency)?)
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
}
