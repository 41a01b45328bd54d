//! The payment provider's token for a guest's card.
//!
//! It is an opaque reference issued by the provider (`tok_visa`), never card data, so it may be
//! kept in events: the saga needs it to charge after the dates are held.

bounded_text!(
    /// A provider card token: 1 to 200 characters.
    CardToken { field: "card_token", min: 1, max: 200 }
);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::validation::ValidationError;

    #[test]
    fn card_token_refuses_empty_and_overlong() {
        assert_eq!(CardToken::new(""), Err(ValidationError::Empty { field: "card_token" }));
        assert!(CardToken::new("t".repeat(201)).is_err());
        assert!(serde_json::from_value::<CardToken>(json!("")).is_err());
        assert_eq!(CardToken::new("tok\0visa"), Err(ValidationError::NulCharacter { field: "card_token" }));
        assert_eq!(
            serde_json::from_value::<CardToken>(json!("tok_visa")).expect("parses"),
            CardToken::new("tok_visa").expect("valid")
        );
    }
}
