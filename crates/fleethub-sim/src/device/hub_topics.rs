//! The topics the hub publishes to a device, parsed into what they mean. Pure functions.

use fleethub_mqtt::properties::{decode_component, decode_properties, topic_query};

/// What a PUBLISH from the hub is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum HubTopic {
    /// `$iothub/twin/res/{status}/?$rid={rid}[&$version={v}]`.
    TwinResponse {
        status: u16,
        rid: String,
        version: Option<u64>,
    },
    /// `$iothub/twin/PATCH/properties/desired/?$version={v}`.
    DesiredPatch { version: Option<u64> },
    /// `$iothub/methods/POST/{name}/?$rid={rid}`.
    MethodRequest { name: String, rid: String },
    /// `devices/{id}/messages/devicebound/{properties}`.
    C2d { properties: Vec<(String, String)> },
    /// Anything else; the client acknowledges and ignores it.
    Unknown,
}

fn query_value(topic: &str, key: &str) -> Option<String> {
    topic_query(topic)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

fn query_version(topic: &str) -> Option<u64> {
    query_value(topic, "$version").and_then(|v| v.parse().ok())
}

/// Parses a topic the hub published to `device_id`.
pub(crate) fn parse_hub_topic(topic: &str, device_id: &str) -> HubTopic {
    if let Some(rest) = topic.strip_prefix("$iothub/twin/res/") {
        let status = rest.split(['/', '?']).next().unwrap_or_default();
        return match (status.parse(), query_value(topic, "$rid")) {
            (Ok(status), Some(rid)) => HubTopic::TwinResponse {
                status,
                rid,
                version: query_version(topic),
            },
            _ => HubTopic::Unknown,
        };
    }
    if topic.starts_with("$iothub/twin/PATCH/properties/desired/") {
        return HubTopic::DesiredPatch {
            version: query_version(topic),
        };
    }
    if let Some(rest) = topic.strip_prefix("$iothub/methods/POST/") {
        let name = rest.split('/').next().unwrap_or_default();
        return match query_value(topic, "$rid") {
            Some(rid) if !name.is_empty() => HubTopic::MethodRequest {
                name: decode_component(name),
                rid,
            },
            _ => HubTopic::Unknown,
        };
    }
    let c2d_prefix = format!("devices/{device_id}/messages/devicebound");
    match topic.strip_prefix(&c2d_prefix) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            let bag = rest.trim_start_matches('/').trim_end_matches('/');
            HubTopic::C2d {
                properties: decode_properties(bag),
            }
        }
        _ => HubTopic::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_patch_response_carries_rid_and_version() {
        assert_eq!(
            parse_hub_topic("$iothub/twin/res/204/?$rid=5&$version=7", "d"),
            HubTopic::TwinResponse {
                status: 204,
                rid: "5".into(),
                version: Some(7)
            }
        );
    }

    #[test]
    fn twin_get_and_error_responses_have_no_version() {
        assert_eq!(
            parse_hub_topic("$iothub/twin/res/200/?$rid=a%2Fb", "d"),
            HubTopic::TwinResponse {
                status: 200,
                rid: "a/b".into(),
                version: None
            }
        );
        assert_eq!(
            parse_hub_topic("$iothub/twin/res/400/?$rid=9", "d"),
            HubTopic::TwinResponse {
                status: 400,
                rid: "9".into(),
                version: None
            }
        );
    }

    #[test]
    fn twin_responses_without_rid_or_numeric_status_are_unknown() {
        for topic in [
            "$iothub/twin/res/200/",
            "$iothub/twin/res/ok/?$rid=1",
            "$iothub/twin/res/?$rid=1",
        ] {
            assert_eq!(parse_hub_topic(topic, "d"), HubTopic::Unknown, "{topic}");
        }
    }

    #[test]
    fn desired_patch_reads_its_version() {
        assert_eq!(
            parse_hub_topic("$iothub/twin/PATCH/properties/desired/?$version=2", "d"),
            HubTopic::DesiredPatch { version: Some(2) }
        );
    }

    #[test]
    fn method_request_decodes_name_and_rid() {
        assert_eq!(
            parse_hub_topic("$iothub/methods/POST/re%20boot/?$rid=1a", "d"),
            HubTopic::MethodRequest {
                name: "re boot".into(),
                rid: "1a".into()
            }
        );
        assert_eq!(
            parse_hub_topic("$iothub/methods/POST/reboot/", "d"),
            HubTopic::Unknown
        );
    }

    #[test]
    fn captured_c2d_topic_decodes_its_properties() {
        let topic = "devices/dev1/messages/devicebound/%24.mid=m1\
                     &%24.to=%2Fdevices%2Fdev1%2Fmessages%2Fdevicebound&iothub-ack=full&color=red%20blue";
        let HubTopic::C2d { properties } = parse_hub_topic(topic, "dev1") else {
            panic!("not c2d");
        };
        assert_eq!(properties[0], ("$.mid".into(), "m1".into()));
        assert_eq!(properties[3], ("color".into(), "red blue".into()));
        assert_eq!(
            parse_hub_topic("devices/dev1/messages/devicebound/", "dev1"),
            HubTopic::C2d { properties: vec![] }
        );
        assert_eq!(
            parse_hub_topic("devices/dev10/messages/devicebound/", "dev1"),
            HubTopic::Unknown
        );
    }
}
