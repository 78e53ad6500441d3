//! IoT Hub topic names and property bags, as a device's PUBLISH and SUBSCRIBE carry them.
//!
//! Input: a topic (UTF-8, as the codec guarantees), optionally preceded by `{device id}\n`;
//! without a newline the device is `d1`.
//!
//! Invariants beyond "never panics":
//! - a property bag survives encode → decode, and decoding is stable: `decode(encode(decode(s)))
//!   == decode(s)`;
//! - telemetry properties that a topic carries come back unchanged from the topic the hub's own
//!   encoder writes for them (for a valid device id);
//! - any string used as a `$rid` comes back from the response topics the hub writes.

use fleethub_core::DeviceId;
use fleethub_mqtt::properties::{decode_properties, encode_properties, topic_query};
use fleethub_mqtt::topics::{self, parse_inbound, Feed, Inbound};

/// Parses `data` as a device topic and checks the encoders against the decoders.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (device_id, topic) = text.split_once('\n').unwrap_or(("d1", text));

    let bag = decode_properties(topic);
    assert_eq!(
        decode_properties(&encode_properties(&bag)),
        bag,
        "property bag does not survive encoding"
    );

    let inbound = parse_inbound(topic, device_id);
    if let (Ok(Inbound::Telemetry { properties }), Ok(id)) = (&inbound, DeviceId::parse(device_id))
    {
        let written = format!(
            "devices/{id}/messages/events/{}",
            encode_properties(properties)
        );
        assert_eq!(
            parse_inbound(&written, id.as_str()),
            Ok(Inbound::Telemetry {
                properties: properties.clone()
            }),
            "telemetry topic {written:?} does not parse back"
        );
    }
    let _ = Feed::from_filter(topic, device_id);

    rid_round_trips(topic);
}

fn rid_round_trips(rid: &str) {
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let response = topics::twin_response(200, rid, Some(7));
    assert_eq!(
        topic_query(&response),
        pairs(&[("$rid", rid), ("$version", "7")]),
        "{response:?}"
    );
    let request = topics::method_request("reboot", rid);
    assert_eq!(
        topic_query(&request),
        pairs(&[("$rid", rid)]),
        "{request:?}"
    );
    if !rid.is_empty() {
        let get = format!(
            "$iothub/twin/GET/?$rid={}",
            fleethub_mqtt::properties::encode_component(rid)
        );
        assert_eq!(
            parse_inbound(&get, "d1"),
            Ok(Inbound::TwinGet {
                rid: rid.to_string()
            }),
            "{get:?}"
        );
    }
}
