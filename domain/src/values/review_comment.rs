//! The text of a review or of a host's reply to it.

bounded_text!(
    /// A review's comment or a host's reply: up to 2,000 characters after trimming, possibly empty.
    ReviewComment { field: "comment", min: 0, max: 2_000 }
);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::validation::ValidationError;

    #[test]
    fn review_comment_refuses_more_than_2000_chars() {
        assert!(ReviewComment::new("ß".repeat(2_000)).is_ok());
        assert!(ReviewComment::new("").is_ok());
        assert_eq!(
            ReviewComment::new("ß".repeat(2_001)),
            Err(ValidationError::TooLong { field: "comment", max: 2_000, actual: 2_001 })
        );
        assert!(serde_json::from_value::<ReviewComment>(json!("x".repeat(2_001))).is_err());
    }
}
