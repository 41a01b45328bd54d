//! A room's free-text description.

bounded_text!(
    /// A room's description: up to 5,000 characters after trimming, possibly empty (the default).
    #[derive(Default)]
    Description { field: "description", min: 0, max: 5_000 }
);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::validation::ValidationError;

    #[test]
    fn description_may_be_empty() {
        assert_eq!(Description::new("  "), Ok(Description::default()));
    }

    #[test]
    fn description_refuses_more_than_5000_chars() {
        assert!(Description::new("ü".repeat(5_000)).is_ok());
        assert_eq!(
            Description::new("x".repeat(5_001)),
            Err(ValidationError::TooLong { field: "description", max: 5_000, actual: 5_001 })
        );
        assert!(serde_json::from_value::<Description>(json!("x".repeat(5_001))).is_err());
    }
}
