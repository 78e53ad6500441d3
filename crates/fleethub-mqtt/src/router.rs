//! From a device's PUBLISH to the hub call it stands for, and from the hub's answer to the reply.

use crate::topics;
use bytes::Bytes;
use fleethub_core::HubError;
use fleethub_hub::{DeviceTwin, Hub, TelemetryIn};

/// A PUBLISH the gateway sends back on `$iothub/twin/res/…`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The response topic.
    pub topic: String,
    /// The response body (JSON, or empty for 204).
    pub payload: Bytes,
}

/// Builds the telemetry message from a decoded property bag: `$.mid` becomes the message id.
pub fn telemetry_message(properties: Vec<(String, String)>, body: Bytes) -> TelemetryIn {
    let (mids, properties): (Vec<_>, Vec<_>) =
        properties.into_iter().partition(|(k, _)| k == "$.mid");
    let message_id = mids.into_iter().map(|(_, v)| v).find(|v| !v.is_empty());
    TelemetryIn {
        message_id,
        properties,
        body,
    }
}

/// Stores a telemetry message; Ok only after the hub committed it.
pub async fn telemetry(
    hub: &Hub,
    device_id: &str,
    properties: Vec<(String, String)>,
    body: Bytes,
) -> Result<(), HubError> {
    hub.ingest_telemetry(device_id, telemetry_message(properties, body))
        .await
}

/// Answers `$iothub/twin/GET`: 200 with the device's twin, or the error's status and body.
pub async fn twin_get(hub: &Hub, device_id: &str, rid: &str) -> Reply {
    match hub.device_twin_get(device_id).await {
        Ok(twin) => Reply {
            topic: topics::twin_response(200, rid, None),
            payload: json_bytes(&device_twin_body(&twin)),
        },
        Err(e) => error_reply(device_id, rid, &e, hub.now()),
    }
}

/// Answers a reported-properties PATCH: 204 with the committed `$version`, or the error.
pub async fn twin_report(hub: &Hub, device_id: &str, rid: &str, patch: &[u8]) -> Reply {
    match hub.device_report(device_id, patch).await {
        Ok(version) => Reply {
            topic: topics::twin_response(204, rid, Some(version)),
            payload: Bytes::new(),
        },
        Err(e) => error_reply(device_id, rid, &e, hub.now()),
    }
}

/// The twin response for a failed request: the error's HTTP status and IoT Hub error body,
/// stamped `now` (the hub clock's time).
pub fn error_reply(
    device_id: &str,
    rid: &str,
    e: &HubError,
    now: chrono::DateTime<chrono::Utc>,
) -> Reply {
    tracing::debug!(device = %device_id, rid, "twin request failed: {e}");
    Reply {
        topic: topics::twin_response(e.code.http_status(), rid, None),
        payload: json_bytes(&e.to_json(now)),
    }
}

/// The device's twin GET body: `{"desired":{…,"$version"},"reported":{…,"$version"}}`.
pub fn device_twin_body(twin: &DeviceTwin) -> serde_json::Value {
    serde_json::json!({
        "desired": twin.desired.to_device_json(),
        "reported": twin.reported.to_device_json(),
    })
}

fn json_bytes(v: &serde_json::Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleethub_core::ErrorCode;

    #[test]
    fn mid_becomes_the_message_id_and_leaves_the_properties() {
        let props = vec![
            ("$.mid".to_string(), "m-1".to_string()),
            ("$.ct".into(), "application/json".into()),
        ];
        let msg = telemetry_message(props, Bytes::from_static(b"{}"));
        assert_eq!(msg.message_id.as_deref(), Some("m-1"));
        assert_eq!(
            msg.properties,
            vec![("$.ct".to_string(), "application/json".to_string())]
        );
    }

    #[test]
    fn empty_mid_leaves_the_id_to_the_hub() {
        let msg = telemetry_message(vec![("$.mid".into(), String::new())], Bytes::new());
        assert_eq!(msg.message_id, None);
    }

    #[test]
    fn errors_answer_with_their_status_and_body() {
        let e = HubError::new(ErrorCode::DeviceNotFound, "device 'd' does not exist");
        let reply = error_reply("d", "r1", &e, chrono::Utc::now());
        assert_eq!(
            reply.topic,
            format!("$iothub/twin/res/{}/?$rid=r1", e.code.http_status())
        );
        let body: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(body["errorCode"], e.code.code());
    }
}
