//! Kafka's topic name rules: 1–249 characters of [a-zA-Z0-9._-], not "." or ".."; and which names are Kafka's
//! internal topics.

pub const MAX_NAME_LENGTH: usize = 249;

/// The group coordinator's state and committed offsets.
pub const GROUP_METADATA_TOPIC_NAME: &str = "__consumer_offsets";
/// The transaction coordinator's state.
pub const TRANSACTION_STATE_TOPIC_NAME: &str = "__transaction_state";
/// The share group coordinator's state (KIP-932).
pub const SHARE_GROUP_STATE_TOPIC_NAME: &str = "__share_group_state";

/// Kafka's `Topic.isInternal`: exactly the coordinators' topics (a user topic named `__x` is not internal).
/// Internal topics are flagged in Metadata, left out of regex subscriptions, and clients may not produce to them
/// or delete their records (Kafka 4.3 still lets clients delete them and add partitions, and so does Strom).
pub fn is_internal(name: &str) -> bool {
    matches!(name, GROUP_METADATA_TOPIC_NAME | TRANSACTION_STATE_TOPIC_NAME | SHARE_GROUP_STATE_TOPIC_NAME)
}

/// Kafka's `AdminUtils.ADMIN_CLIENT_ID`: Produce requests with this client id may write to internal topics
/// (Kafka's escape hatch for repairing them by hand).
pub const ADMIN_CLIENT_ID: &str = "__admin_client";

/// Kafka's Topic.validate, with Kafka 4.3's messages ("Topic name is invalid: <reason>").
pub fn validate(name: &str) -> Result<(), String> {
    let reason = if name.is_empty() {
        "the empty string is not allowed".to_string()
    } else if name == "." || name == ".." {
        format!("'{name}' is not allowed")
    } else if name.len() > MAX_NAME_LENGTH {
        format!("the length of '{name}' is longer than the max allowed length {MAX_NAME_LENGTH}")
    } else if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-') {
        format!("'{name}' contains one or more characters other than ASCII alphanumerics, '.', '_' and '-'")
    } else {
        return Ok(());
    };
    Err(format!("Topic name is invalid: {reason}"))
}

/// Kafka refuses names that differ only by '.' versus '_', since metric names cannot tell them apart.
pub fn collides(a: &str, b: &str) -> bool {
    a != b && a.replace('.', "_") == b.replace('.', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(validate("orders.v1_x-y").is_ok());
        assert!(validate("").is_err());
        assert!(validate("..").is_err());
        assert!(validate("bad/name").is_err());
        assert!(validate("ünïcode").is_err());
        assert!(validate(&"a".repeat(249)).is_ok());
        assert!(validate(&"a".repeat(250)).is_err());
        assert!(collides("a.b", "a_b"));
        assert!(!collides("a.b", "a.b"));
        assert!(is_internal("__consumer_offsets") && is_internal("__transaction_state"));
        assert!(!is_internal("__foo") && !is_internal("__consumer_offsets2"));
    }
}
