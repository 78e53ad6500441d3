//! Identifier newtypes, validated once at the edge.

use crate::error::{ErrorCode, HubError};
use std::fmt;

const DEVICE_ID_MAX: usize = 128;
const DEVICE_ID_SPECIALS: &str = "-.+%_#*?!(),:=@$'";

/// A device id: up to 128 ASCII characters, letters, digits and `-.+%_#*?!(),:=@$'`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(String);

impl DeviceId {
    /// Validates `s` by IoT Hub's device id rules.
    pub fn parse(s: &str) -> Result<DeviceId, HubError> {
        validate_id("device id", s, DEVICE_ID_MAX, DEVICE_ID_SPECIALS)?;
        Ok(DeviceId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for DeviceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

fn validate_id(what: &str, s: &str, max: usize, specials: &str) -> Result<(), HubError> {
    if s.is_empty() {
        return Err(HubError::new(
            ErrorCode::InvalidDeviceId,
            format!("{what} is empty"),
        ));
    }
    if s.len() > max {
        return Err(HubError::new(
            ErrorCode::InvalidDeviceId,
            format!("{what} is {} characters long; the limit is {max}", s.len()),
        ));
    }
    if let Some(bad) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || specials.contains(*c)))
    {
        return Err(HubError::new(
            ErrorCode::InvalidDeviceId,
            format!(
                "{what} '{s}' contains '{}'; allowed are ASCII letters, digits and {specials}",
                bad.escape_default()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_iot_hub_specials_and_rejects_others() {
        assert!(DeviceId::parse("sensor-01.boston:a=b@c$'(x)").is_ok());
        for bad in ["", "a b", "a/b", "ü", &"x".repeat(129)] {
            let err = DeviceId::parse(bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidDeviceId, "{bad:?}");
        }
    }
}
