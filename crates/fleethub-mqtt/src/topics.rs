//! IoT Hub's topic names: what a device's PUBLISH asks for, which subscription filters exist,
//! and the topics the hub publishes to a device. Pure functions, no I/O.

use crate::properties::{decode_properties, encode_component, encode_properties, topic_query};

/// What a device's PUBLISH topic asks the hub to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// `devices/{id}/messages/events/{properties}`.
    Telemetry {
        /// The decoded property bag.
        properties: Vec<(String, String)>,
    },
    /// `$iothub/twin/GET/?$rid={rid}`.
    TwinGet {
        /// Request id to echo in the response topic.
        rid: String,
    },
    /// `$iothub/twin/PATCH/properties/reported/?$rid={rid}`.
    TwinReport {
        /// Request id to echo in the response topic.
        rid: String,
    },
    /// `$iothub/methods/res/{status}/?$rid={rid}`.
    MethodResponse {
        /// The status the device's handler returned.
        status: i32,
        /// The hub's request id being answered.
        rid: String,
    },
}

/// Why a device's PUBLISH topic is refused; each closes the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicError {
    /// A `devices/{id}/…` topic naming a device other than the authenticated one.
    OtherDevice(String),
    /// A topic the hub does not serve.
    Unknown,
    /// A request topic without `$rid`, which could never be answered.
    MissingRid,
    /// A method response whose status is not an integer.
    BadStatus(String),
}

impl std::fmt::Display for TopicError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TopicError::OtherDevice(id) => {
                write!(f, "topic names device '{id}', not the connected one")
            }
            TopicError::Unknown => f.write_str("topic is not one IoT Hub serves"),
            TopicError::MissingRid => f.write_str("request topic has no $rid"),
            TopicError::BadStatus(s) => write!(f, "method response status '{s}' is not an integer"),
        }
    }
}

/// Parses a device PUBLISH topic for the authenticated `device_id`.
pub fn parse_inbound(topic: &str, device_id: &str) -> Result<Inbound, TopicError> {
    if let Some(rest) = topic.strip_prefix("devices/") {
        return parse_device_topic(rest, device_id);
    }
    let (path, _) = topic.split_once('?').unwrap_or((topic, ""));
    let path = path.strip_suffix('/').unwrap_or(path);
    let rid = || rid_of(topic);
    match path {
        "$iothub/twin/GET" => Ok(Inbound::TwinGet { rid: rid()? }),
        "$iothub/twin/PATCH/properties/reported" => Ok(Inbound::TwinReport { rid: rid()? }),
        _ => match path.strip_prefix("$iothub/methods/res/") {
            Some(status) if !status.contains('/') => {
                let status = status
                    .parse()
                    .map_err(|_| TopicError::BadStatus(status.to_string()))?;
                Ok(Inbound::MethodResponse {
                    status,
                    rid: rid()?,
                })
            }
            _ => Err(TopicError::Unknown),
        },
    }
}

fn parse_device_topic(rest: &str, device_id: &str) -> Result<Inbound, TopicError> {
    let (id, rest) = rest.split_once('/').ok_or(TopicError::Unknown)?;
    if id != device_id {
        return Err(TopicError::OtherDevice(id.to_string()));
    }
    let bag = match rest.strip_prefix("messages/events") {
        Some("") => "",
        Some(bag) => bag.strip_prefix('/').ok_or(TopicError::Unknown)?,
        None => return Err(TopicError::Unknown),
    };
    // Some SDKs end the property bag with '/'; a literal '/' cannot occur inside it (encoded).
    let bag = bag.strip_suffix('/').unwrap_or(bag);
    if bag.contains('/') {
        return Err(TopicError::Unknown);
    }
    Ok(Inbound::Telemetry {
        properties: decode_properties(bag),
    })
}

fn rid_of(topic: &str) -> Result<String, TopicError> {
    topic_query(topic)
        .into_iter()
        .find(|(k, _)| k == "$rid")
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
        .ok_or(TopicError::MissingRid)
}

/// A subscription a device may hold; every other filter is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Feed {
    /// `devices/{id}/messages/devicebound/#`: cloud-to-device messages.
    C2d,
    /// `$iothub/methods/POST/#`: direct method requests.
    Methods,
    /// `$iothub/twin/PATCH/properties/desired/#`: desired-property patches.
    Desired,
    /// `$iothub/twin/res/#`: answers to twin GET and reported PATCH.
    TwinResponses,
}

impl Feed {
    /// Every feed, in a fixed order.
    pub const ALL: [Feed; 4] = [Feed::C2d, Feed::Methods, Feed::Desired, Feed::TwinResponses];

    /// The exact topic filter of this feed for `device_id`.
    pub fn filter(self, device_id: &str) -> String {
        match self {
            Feed::C2d => format!("devices/{device_id}/messages/devicebound/#"),
            Feed::Methods => "$iothub/methods/POST/#".into(),
            Feed::Desired => "$iothub/twin/PATCH/properties/desired/#".into(),
            Feed::TwinResponses => "$iothub/twin/res/#".into(),
        }
    }

    /// The feed `filter` subscribes `device_id` to, if it is an allowed filter.
    pub fn from_filter(filter: &str, device_id: &str) -> Option<Feed> {
        Feed::ALL
            .into_iter()
            .find(|f| f.filter(device_id) == filter)
    }
}

/// `$iothub/twin/res/{status}/?$rid={rid}` plus `&$version={v}` after a reported patch.
pub fn twin_response(status: u16, rid: &str, version: Option<u64>) -> String {
    let mut topic = format!("$iothub/twin/res/{status}/?$rid={}", encode_component(rid));
    if let Some(v) = version {
        topic.push_str(&format!("&$version={v}"));
    }
    topic
}

/// `$iothub/twin/PATCH/properties/desired/?$version={version}`.
pub fn desired_patch(version: u64) -> String {
    format!("$iothub/twin/PATCH/properties/desired/?$version={version}")
}

/// `$iothub/methods/POST/{name}/?$rid={rid}`, both percent-encoded.
pub fn method_request(name: &str, rid: &str) -> String {
    format!(
        "$iothub/methods/POST/{}/?$rid={}",
        encode_component(name),
        encode_component(rid)
    )
}

/// `devices/{id}/messages/devicebound/{properties}`.
pub fn c2d(device_id: &str, properties: &[(String, String)]) -> String {
    format!(
        "devices/{device_id}/messages/devicebound/{}",
        encode_properties(properties)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn telemetry(props: &[(&str, &str)]) -> Inbound {
        let properties = props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Inbound::Telemetry { properties }
    }

    #[test]
    fn captured_telemetry_topic_parses() {
        let topic =
            "devices/dev1/messages/events/%24.mid=mid-1&%24.cid=corr-1&%24.ct=application%2Fjson\
                     &%24.ce=utf-8&a%2Fb=x%26y%3Dz&alert=high%20temp";
        let want = telemetry(&[
            ("$.mid", "mid-1"),
            ("$.cid", "corr-1"),
            ("$.ct", "application/json"),
            ("$.ce", "utf-8"),
            ("a/b", "x&y=z"),
            ("alert", "high temp"),
        ]);
        assert_eq!(parse_inbound(topic, "dev1"), Ok(want));
    }

    #[test]
    fn telemetry_without_properties_parses_with_or_without_slash() {
        for topic in [
            "devices/dev1/messages/events/",
            "devices/dev1/messages/events",
            "devices/dev1/messages/events/a=1/",
        ] {
            assert!(
                matches!(parse_inbound(topic, "dev1"), Ok(Inbound::Telemetry { .. })),
                "{topic}"
            );
        }
    }

    #[test]
    fn another_devices_topic_is_refused() {
        assert_eq!(
            parse_inbound("devices/dev2/messages/events/", "dev1"),
            Err(TopicError::OtherDevice("dev2".into()))
        );
        // Prefix of the real id is not the same device.
        assert!(parse_inbound("devices/dev/messages/events/", "dev1").is_err());
    }

    #[test]
    fn unknown_topics_are_refused() {
        for topic in [
            "devices/dev1/messages/eventsX",
            "devices/dev1/messages/devicebound/",
            "devices/dev1/modules/m1/messages/events/",
            "devices/dev1",
            "$iothub/twin/PATCH/properties/desired/?$rid=1",
            "$iothub/methods/POST/reboot/?$rid=1",
            "$iothub/methods/res/200/extra/?$rid=1",
            "other/topic",
        ] {
            assert!(parse_inbound(topic, "dev1").is_err(), "{topic}");
        }
    }

    #[test]
    fn twin_and_method_topics_parse() {
        let rid = "0b7a4e5e-2a4d-4c1b-9d3f-8f0a6a3c2b1d".to_string();
        assert_eq!(
            parse_inbound(&format!("$iothub/twin/GET/?$rid={rid}"), "d"),
            Ok(Inbound::TwinGet { rid: rid.clone() })
        );
        assert_eq!(
            parse_inbound(
                &format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}"),
                "d"
            ),
            Ok(Inbound::TwinReport { rid })
        );
        assert_eq!(
            parse_inbound("$iothub/methods/res/200/?$rid=1a", "d"),
            Ok(Inbound::MethodResponse {
                status: 200,
                rid: "1a".into()
            })
        );
        assert_eq!(
            parse_inbound("$iothub/methods/res/-3/?$rid=1a", "d"),
            Ok(Inbound::MethodResponse {
                status: -3,
                rid: "1a".into()
            })
        );
    }

    #[test]
    fn requests_without_rid_or_status_are_refused() {
        assert_eq!(
            parse_inbound("$iothub/twin/GET/", "d"),
            Err(TopicError::MissingRid)
        );
        assert_eq!(
            parse_inbound("$iothub/twin/GET/?$rid=", "d"),
            Err(TopicError::MissingRid)
        );
        assert_eq!(
            parse_inbound("$iothub/methods/res/ok/?$rid=1", "d"),
            Err(TopicError::BadStatus("ok".into()))
        );
    }

    #[test]
    fn only_the_four_iot_hub_filters_are_feeds() {
        assert_eq!(
            Feed::from_filter("devices/dev1/messages/devicebound/#", "dev1"),
            Some(Feed::C2d)
        );
        assert_eq!(
            Feed::from_filter("devices/dev2/messages/devicebound/#", "dev1"),
            None
        );
        assert_eq!(
            Feed::from_filter("$iothub/methods/POST/#", "dev1"),
            Some(Feed::Methods)
        );
        assert_eq!(
            Feed::from_filter("$iothub/twin/PATCH/properties/desired/#", "x"),
            Some(Feed::Desired)
        );
        assert_eq!(
            Feed::from_filter("$iothub/twin/res/#", "x"),
            Some(Feed::TwinResponses)
        );
        for bad in [
            "#",
            "$iothub/#",
            "devices/+/messages/devicebound/#",
            "$iothub/twin/res/+",
        ] {
            assert_eq!(Feed::from_filter(bad, "dev1"), None, "{bad}");
        }
    }

    #[test]
    fn outbound_topics_match_the_wire_format() {
        assert_eq!(
            twin_response(200, "r1", None),
            "$iothub/twin/res/200/?$rid=r1"
        );
        assert_eq!(
            twin_response(204, "r1", Some(2)),
            "$iothub/twin/res/204/?$rid=r1&$version=2"
        );
        assert_eq!(
            desired_patch(2),
            "$iothub/twin/PATCH/properties/desired/?$version=2"
        );
        assert_eq!(
            method_request("re boot", "1a"),
            "$iothub/methods/POST/re%20boot/?$rid=1a"
        );
        let props = vec![
            ("$.mid".to_string(), "m1".to_string()),
            ("color".into(), "red blue".into()),
        ];
        assert_eq!(
            c2d("dev1", &props),
            "devices/dev1/messages/devicebound/%24.mid=m1&color=red%20blue"
        );
    }
}
