//! Device twins: `GET`, `PATCH` (merge) and `PUT` (replace) `/twins/{id}`, with `If-Match`.

use crate::auth::{Authorized, RegistryRead, ServiceConnect};
use crate::extract::{if_match, HubJson, PathId};
use crate::{ApiError, ApiState};
use axum::extract::State;
use axum::http::header::ETAG;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use fleethub_hub::device::etag_for;
use fleethub_hub::{ConnectionState, Twin};
use serde::ser::{Serialize, SerializeStruct, Serializer};
use serde_json::Value;

/// The twin routes.
pub fn routes() -> Router<ApiState> {
    Router::new().route("/twins/{id}", get(get_twin).patch(update).put(replace))
}

async fn get_twin(
    _: Authorized<RegistryRead>,
    State(state): State<ApiState>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    Ok(twin_response(state.hub.get_twin(&id).await?))
}

async fn update(
    _: Authorized<ServiceConnect>,
    State(state): State<ApiState>,
    PathId(id): PathId,
    headers: HeaderMap,
    HubJson(body): HubJson<Value>,
) -> Result<Response, ApiError> {
    let twin = state
        .hub
        .update_twin(&id, body, if_match(&headers)?)
        .await?;
    Ok(twin_response(twin))
}

async fn replace(
    _: Authorized<ServiceConnect>,
    State(state): State<ApiState>,
    PathId(id): PathId,
    headers: HeaderMap,
    HubJson(body): HubJson<Value>,
) -> Result<Response, ApiError> {
    let twin = state
        .hub
        .replace_twin(&id, body, if_match(&headers)?)
        .await?;
    Ok(twin_response(twin))
}

/// A twin as a 200 answer: IoT Hub's twin shape ([`TwinBody`]) with the twin's etag, quoted, in
/// an `ETag` header.
fn twin_response(twin: Twin) -> Response {
    let etag = HeaderValue::from_str(&format!("\"{}\"", twin.etag())).ok();
    let mut response = Json(TwinBody(&twin)).into_response();
    if let Some(etag) = etag {
        response.headers_mut().insert(ETAG, etag);
    }
    response
}

/// A twin in IoT Hub's service shape, field by field in wire order: the one spelling of it, for
/// `GET`/`PATCH`/`PUT /twins/{id}` and every `SELECT *` row of a query over devices.
pub(crate) struct TwinBody<'a>(pub &'a Twin);

impl Serialize for TwinBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Twin {
            device: d,
            tags,
            desired,
            reported,
            version,
            connection_state,
            configurations,
        } = self.0;
        let connection_state = match connection_state {
            ConnectionState::Connected => "Connected",
            ConnectionState::Disconnected => "Disconnected",
        };
        let mut twin = serializer.serialize_struct("Twin", 16)?;
        twin.serialize_field("deviceId", &d.device_id)?;
        twin.serialize_field("etag", &etag_for(*version))?;
        twin.serialize_field("deviceEtag", &etag_for(d.revision))?;
        twin.serialize_field("status", d.status.as_str())?;
        twin.serialize_field("statusReason", &d.status_reason)?;
        twin.serialize_field("statusUpdateTime", &d.status_updated_time)?;
        twin.serialize_field("connectionState", connection_state)?;
        twin.serialize_field("lastActivityTime", &d.last_activity_time)?;
        twin.serialize_field(
            "cloudToDeviceMessageCount",
            &d.cloud_to_device_message_count,
        )?;
        twin.serialize_field("authenticationType", &d.authentication.kind)?;
        twin.serialize_field("x509Thumbprint", &d.authentication.x509_thumbprint)?;
        twin.serialize_field("modelId", "")?;
        twin.serialize_field("version", version)?;
        twin.serialize_field("capabilities", &d.capabilities)?;
        twin.serialize_field("tags", tags)?;
        let properties = Properties {
            desired: desired.to_twin_json(),
            reported: reported.to_twin_json(),
        };
        twin.serialize_field("properties", &properties)?;
        if !configurations.is_empty() {
            // IoT Hub's root `configurations`: `{id: {status}}` for each one targeting the twin.
            let statuses: std::collections::BTreeMap<&str, Value> = configurations
                .iter()
                .map(|(id, s)| (id.as_str(), serde_json::json!({ "status": s.as_str() })))
                .collect();
            twin.serialize_field("configurations", &statuses)?;
        }
        twin.end()
    }
}

#[derive(serde::Serialize)]
struct Properties {
    desired: Value,
    reported: Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleethub_core::twin::{Section, TwinProperties};
    use serde_json::{json, Map};

    fn sample(connection_state: ConnectionState) -> Twin {
        let mut tags = Map::new();
        tags.insert("site".into(), Value::from("north"));
        let mut desired = TwinProperties::default();
        let mut patch = Map::new();
        patch.insert("fw".into(), Value::from("2.0"));
        desired
            .apply_patch(Section::Desired, &patch, "2026-03-01T12:00:00Z")
            .unwrap();
        Twin {
            device: serde_json::from_value(json!({ "deviceId": "d1" })).unwrap(),
            tags,
            desired,
            reported: TwinProperties::default(),
            version: 3,
            connection_state,
            configurations: Default::default(),
        }
    }

    #[test]
    fn a_twin_is_written_in_iot_hubs_field_order() {
        let twin = sample(ConnectionState::Connected);
        let body = serde_json::to_value(TwinBody(&twin)).unwrap();
        let keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "deviceId",
                "etag",
                "deviceEtag",
                "status",
                "statusReason",
                "statusUpdateTime",
                "connectionState",
                "lastActivityTime",
                "cloudToDeviceMessageCount",
                "authenticationType",
                "x509Thumbprint",
                "modelId",
                "version",
                "capabilities",
                "tags",
                "properties",
            ]
        );
        assert_eq!(body["connectionState"], "Connected");
        assert_eq!(body["etag"], twin.etag());
        assert_eq!(body["version"], 3);
        assert_eq!(body["tags"]["site"], "north");
        assert_eq!(body["properties"]["desired"]["fw"], "2.0");
        assert_eq!(body["properties"]["desired"]["$version"], 1);
        let offline = sample(ConnectionState::Disconnected);
        let body = serde_json::to_value(TwinBody(&offline)).unwrap();
        assert_eq!(body["connectionState"], "Disconnected");
    }
}
