//! Where a room is.

bounded_text!(
    /// A room's postal address: 1 to 500 characters after trimming.
    Address { field: "address", min: 1, max: 500 }
);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::validation::ValidationError;

    #[test]
    fn address_refuses_empty() {
        assert_eq!(Address::new(" "), Err(ValidationError::Empty { field: "address" }));
        assert!(serde_json::from_value::<Address>(json!("")).is_err());
    }

    #[test]
    fn address_refuses_more_than_500_chars() {
        assert!(Address::new("a".repeat(500)).is_ok());
        assert_eq!(
            Address::new("a".repeat(501)),
            Err(ValidationError::TooLong { field: "address", max: 500, actual: 501 })
        );
        assert!(serde_json::from_value::<Address>(json!("a".repeat(501))).is_err());
    }
}
