//! Stored telemetry (`GET /v1/telemetry`), typed.

use crate::{ClientError, HubClient, Method};
use serde::Deserialize;
use serde_json::Value;

/// One stored telemetry message, as `GET /v1/telemetry` answers it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TelemetryMessage {
    /// Its place in the store's order; pages read on after the last one's.
    pub seq: i64,
    pub device_id: String,
    pub message_id: String,
    /// When the hub stored it, in IoT Hub's timestamp format.
    pub enqueued_time: String,
    /// The application properties the device set.
    pub properties: serde_json::Map<String, Value>,
    /// The body as UTF-8 text when it is, else base64 (see `body_encoding`).
    pub body: String,
    /// `utf-8` or `base64`.
    pub body_encoding: String,
}

/// A page of stored telemetry, oldest first.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TelemetryPage {
    pub items: Vec<TelemetryMessage>,
    /// Pass as `after` to read the messages stored since.
    pub next: i64,
}

impl HubClient {
    /// Stored telemetry after `after` (0 from the start), of one device or of all
    /// (`GET /v1/telemetry`).
    pub async fn telemetry(
        &self,
        device_id: Option<&str>,
        after: i64,
    ) -> Result<TelemetryPage, ClientError> {
        let mut query = Vec::new();
        if let Some(id) = device_id {
            query.push(("deviceId", id.to_string()));
        }
        query.push(("after", after.to_string()));
        let path = format!("/v1/telemetry?{}", query_string(&query));
        let what = format!("GET {path}");
        let body = self.json(Method::GET, &path, None).await?;
        serde_json::from_value(body).map_err(|e| ClientError::Unexpected {
            what,
            detail: format!("not a telemetry page: {e}"),
        })
    }
}

/// `key=value&…` with both sides form-encoded, so any device id survives a query string.
fn query_string(pairs: &[(&str, String)]) -> String {
    let mut url = reqwest::Url::parse("https://query.invalid/").expect("a fixed URL parses");
    url.query_pairs_mut().extend_pairs(pairs);
    url.query().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn query_strings_carry_any_device_id() {
        let pairs = [("deviceId", "a&b=c d+%".to_string()), ("after", "7".into())];
        assert_eq!(query_string(&pairs), "deviceId=a%26b%3Dc+d%2B%25&after=7");
    }

    #[test]
    fn a_telemetry_page_reads_the_hubs_shape() {
        let page: TelemetryPage = serde_json::from_value(json!({
            "items": [{"seq": 3, "deviceId": "d", "messageId": "m", "enqueuedTime": "t",
                       "properties": {"alert": "high"}, "body": "aGk=", "bodyEncoding": "base64"}],
            "next": 3
        }))
        .unwrap();
        assert_eq!(page.next, 3);
        assert_eq!(page.items[0].message_id, "m");
        assert_eq!(page.items[0].properties["alert"], "high");
        assert_eq!(page.items[0].body_encoding, "base64");
    }
}
