//! Kafka's topic name rules: 1–249 characters of [a-zA-Z0-9._-], not "." or "..".

pub const MAX_NAME_LENGTH: usize = 249;

pub fn validate(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Topic name is illegal, it can't be empty".into());
    }
    if name == "." || name == ".." {
        return Err("Topic name cannot be \".\" or \"..\"".into());
    }
    if name.len() > MAX_NAME_LENGTH {
        return Err(format!(
            "Topic name is illegal, it can't be longer than {MAX_NAME_LENGTH} characters, topic name: {name}"
        ));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-') {
        return Err(format!(
            "Topic name \"{name}\" is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"
        ));
    }
    Ok(())
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
    }
}
