//! IoT Hub configurations' vocabulary: the status a twin carries for each configuration that
//! targets it, and the rules for configuration ids and labels.

use crate::error::{ErrorCode, HubError};
use serde::{Deserialize, Serialize};

/// The longest configuration id, label name or label value.
pub const ID_MAX: usize = 128;
/// The characters a configuration id may hold besides lowercase letters and digits.
pub const ID_SPECIALS: &str = "-+%_*!'";
/// The characters a label name or value may hold besides ASCII letters and digits (`$` is
/// reserved).
pub const LABEL_SPECIALS: &str = "-:.+%_#*?!(),=@;'";

/// `configurations.{id}.status` at a twin's root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConfigurationStatus {
    /// The configuration targets the twin, but none of its settings won (a configuration of
    /// higher priority set every path it sets).
    Targeted,
    /// The configuration targets the twin and at least one of its settings is in the twin.
    Applied,
}

impl ConfigurationStatus {
    /// The name IoT Hub writes.
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigurationStatus::Targeted => "Targeted",
            ConfigurationStatus::Applied => "Applied",
        }
    }

    /// Parses IoT Hub's name.
    pub fn parse(s: &str) -> Option<ConfigurationStatus> {
        match s {
            "Targeted" => Some(ConfigurationStatus::Targeted),
            "Applied" => Some(ConfigurationStatus::Applied),
            _ => None,
        }
    }
}

/// Checks a configuration id: 1 to 128 characters, lowercase ASCII letters, digits and
/// `-+%_*!'`.
pub fn validate_id(id: &str) -> Result<(), HubError> {
    let bad = |m: String| Err(HubError::new(ErrorCode::InvalidDeviceId, m));
    if id.is_empty() {
        return bad("configuration id is empty".into());
    }
    if id.len() > ID_MAX {
        return bad(format!(
            "configuration id is {} characters long; the limit is {ID_MAX}",
            id.len()
        ));
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || ID_SPECIALS.contains(c);
    if let Some(c) = id.chars().find(|c| !allowed(*c)) {
        return bad(format!(
            "configuration id '{id}' contains '{}'; allowed are lowercase ASCII letters, digits \
             and {ID_SPECIALS}",
            c.escape_default()
        ));
    }
    Ok(())
}

/// Checks a label's name or value (`what` says which, for the message).
pub fn validate_label(what: &str, s: &str) -> Result<(), HubError> {
    let bad = |m: String| Err(HubError::invalid(m));
    if s.is_empty() {
        return bad(format!("{what} is empty"));
    }
    if s.len() > ID_MAX {
        return bad(format!(
            "{what} '{s}' is {} characters long; the limit is {ID_MAX}",
            s.len()
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || LABEL_SPECIALS.contains(c);
    if let Some(c) = s.chars().find(|c| !allowed(*c)) {
        return bad(format!(
            "{what} '{s}' contains '{}'; allowed are ASCII letters, digits and {LABEL_SPECIALS} \
             ('$' is reserved)",
            c.escape_default()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_lowercase_with_iot_hubs_specials() {
        assert!(validate_id("prod-telemetry_60!'*%+").is_ok());
        for bad in ["", "Prod", "a b", "a.b", "a/b", &"x".repeat(129)] {
            let err = validate_id(bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidDeviceId, "{bad:?}");
        }
        assert!(validate_id(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn labels_refuse_the_reserved_dollar() {
        assert!(validate_label("label name", "Owner:team.a(1)=b@c;d").is_ok());
        let err = validate_label("label name", "$owner").unwrap_err();
        assert!(err.message.contains("'$' is reserved"), "{}", err.message);
        assert!(validate_label("label value", "").is_err());
    }

    #[test]
    fn statuses_round_trip_by_name() {
        for s in [ConfigurationStatus::Targeted, ConfigurationStatus::Applied] {
            assert_eq!(ConfigurationStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(ConfigurationStatus::parse("applied"), None);
    }
}
