//! IoT Hub connection strings: `HostName=…;DeviceId=…;SharedAccessKey=…` and the service form
//! `HostName=…;SharedAccessKeyName=…;SharedAccessKey=…`.

use crate::error::HubError;
use std::fmt;

/// The parts of a device, module or service connection string.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnectionString {
    pub host_name: String,
    pub device_id: Option<String>,
    pub module_id: Option<String>,
    pub shared_access_key_name: Option<String>,
    pub shared_access_key: Option<String>,
    pub gateway_host_name: Option<String>,
}

const KEYS: &str =
    "HostName, DeviceId, ModuleId, SharedAccessKeyName, SharedAccessKey, GatewayHostName";

impl ConnectionString {
    /// Parses `Key=Value;…`; values may contain `=` (base64 keys do), `HostName` is required.
    pub fn parse(s: &str) -> Result<Self, HubError> {
        let mut out = ConnectionString::default();
        let mut host_name = None;
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, value)) = part.split_once('=') else {
                return Err(HubError::invalid(format!(
                    "connection string part '{part}' is not of the form Key=Value"
                )));
            };
            if value.is_empty() {
                return Err(HubError::invalid(format!(
                    "connection string key '{key}' has no value"
                )));
            }
            let slot = out.slot(key, &mut host_name)?;
            if slot.replace(value.to_string()).is_some() {
                return Err(HubError::invalid(format!(
                    "connection string key '{key}' appears more than once"
                )));
            }
        }
        out.host_name = host_name.ok_or_else(|| {
            HubError::invalid("connection string has no HostName=…; it is required")
        })?;
        Ok(out)
    }

    /// The field a key names; key names match case-insensitively, as the SDKs do.
    fn slot<'a>(
        &'a mut self,
        key: &str,
        host_name: &'a mut Option<String>,
    ) -> Result<&'a mut Option<String>, HubError> {
        let fields: [(&str, &mut Option<String>); 6] = [
            ("HostName", host_name),
            ("DeviceId", &mut self.device_id),
            ("ModuleId", &mut self.module_id),
            ("SharedAccessKeyName", &mut self.shared_access_key_name),
            ("SharedAccessKey", &mut self.shared_access_key),
            ("GatewayHostName", &mut self.gateway_host_name),
        ];
        for (name, slot) in fields {
            if name.eq_ignore_ascii_case(key) {
                return Ok(slot);
            }
        }
        Err(HubError::invalid(format!(
            "unknown connection string key '{key}'; expected one of {KEYS}"
        )))
    }
}

impl fmt::Display for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostName={}", self.host_name)?;
        let rest = [
            ("DeviceId", &self.device_id),
            ("ModuleId", &self.module_id),
            ("SharedAccessKeyName", &self.shared_access_key_name),
            ("SharedAccessKey", &self.shared_access_key),
            ("GatewayHostName", &self.gateway_host_name),
        ];
        for (name, value) in rest {
            if let Some(v) = value {
                write!(f, ";{name}={v}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn device_string_parses_and_keeps_equals_in_the_key() {
        let c = ConnectionString::parse("HostName=localhost;DeviceId=dev1;SharedAccessKey=YWJj==")
            .unwrap();
        assert_eq!(c.host_name, "localhost");
        assert_eq!(c.device_id.as_deref(), Some("dev1"));
        assert_eq!(c.shared_access_key.as_deref(), Some("YWJj=="));
        assert_eq!(c.module_id, None);
    }

    #[test]
    fn service_string_round_trips_in_canonical_order() {
        let text = "SharedAccessKey=a2V5;HostName=localhost:8443;SharedAccessKeyName=iothubowner;";
        let c = ConnectionString::parse(text).unwrap();
        assert_eq!(
            c.to_string(),
            "HostName=localhost:8443;SharedAccessKeyName=iothubowner;SharedAccessKey=a2V5"
        );
        assert_eq!(ConnectionString::parse(&c.to_string()).unwrap(), c);
    }

    #[test]
    fn module_and_gateway_are_read_and_written() {
        let text = "HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey=k;GatewayHostName=g";
        let c = ConnectionString::parse(text).unwrap();
        assert_eq!(c.module_id.as_deref(), Some("m"));
        assert_eq!(c.gateway_host_name.as_deref(), Some("g"));
        assert_eq!(c.to_string(), text);
    }

    #[test]
    fn key_names_match_case_insensitively() {
        let c = ConnectionString::parse("hostname=h;deviceid=d").unwrap();
        assert_eq!(
            (c.host_name.as_str(), c.device_id.as_deref()),
            ("h", Some("d"))
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let cases = [
            ("DeviceId=d;SharedAccessKey=k", "no HostName"),
            (
                "HostName=h;DeviceId",
                "'DeviceId' is not of the form Key=Value",
            ),
            ("HostName=h;DeviceId=", "'DeviceId' has no value"),
            ("HostName=h;HostName=i", "'HostName' appears more than once"),
            (
                "HostName=h;Device=d",
                "unknown connection string key 'Device'; expected one of",
            ),
        ];
        for (text, part) in cases {
            let e = ConnectionString::parse(text).unwrap_err();
            assert_eq!(e.code, ErrorCode::ArgumentInvalid, "{text}");
            assert!(e.message.contains(part), "{text}: {}", e.message);
        }
    }
}
