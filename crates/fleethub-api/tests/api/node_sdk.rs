//! What the official Node.js SDKs (`azure-iothub` 1.16, `azure-iot-device` 1.18) send and read,
//! one regression test per thing that broke them.

use crate::support::{sas_device, TestApi};
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error as WsError;

/// `Registry.list` sends `GET /devices/`; it answered 404. Every route takes a trailing slash.
#[tokio::test]
async fn routes_with_a_trailing_slash_answer_like_the_bare_path() {
    let api = TestApi::start().await;
    let created = api
        .owner(
            Method::PUT,
            "/devices/slash1/?api-version=2021-04-12",
            Some(sas_device("slash1")),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text);

    let list = api
        .owner(Method::GET, "/devices/?api-version=2021-04-12", None)
        .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    assert_eq!(list.json()[0]["deviceId"], "slash1");

    let one = api.owner(Method::GET, "/devices/slash1/", None).await;
    assert_eq!(one.json()["deviceId"], "slash1", "{}", one.text);
    let twin = api.owner(Method::GET, "/twins/slash1/", None).await;
    assert_eq!(twin.json()["deviceId"], "slash1", "{}", twin.text);
    let stats = api.owner(Method::GET, "/statistics/devices/", None).await;
    assert_eq!(stats.json()["totalDeviceCount"], 1, "{}", stats.text);
    let query = api
        .owner(
            Method::POST,
            "/devices/query/",
            Some(json!({"query": "SELECT * FROM devices"})),
        )
        .await;
    assert_eq!(query.json()[0]["deviceId"], "slash1", "{}", query.text);

    // A wrong path or method still answers in IoT Hub's shape.
    api.owner(Method::GET, "/no/such/thing/", None)
        .await
        .assert_error(404, 404000, "NotFound");
    api.owner(Method::POST, "/statistics/devices/", None)
        .await
        .assert_error(405, 405000, "MethodNotAllowed");
}

/// The Node SDK picks its error class from `Message` (`ErrorCode:{Name};{text}`); without it
/// every failure was a bare `Error`.
#[tokio::test]
async fn error_bodies_name_the_error_in_message_for_the_node_sdk() {
    let api = TestApi::start().await;
    let missing = api.owner(Method::GET, "/devices/ghost", None).await;
    missing.assert_error(404, 404001, "DeviceNotFound");
    assert_node_error(&missing.json(), "DeviceNotFound");

    api.create_device("twice").await;
    let again = api
        .owner(Method::PUT, "/devices/twice", Some(sas_device("twice")))
        .await;
    again.assert_error(409, 409001, "DeviceAlreadyExists");
    assert_node_error(&again.json(), "DeviceAlreadyExists");

    let stale = api
        .call(
            Method::PUT,
            "/devices/twice",
            Some(&api.token("iothubowner")),
            Some(sas_device("twice")),
            &[("if-match", "\"AAAAAAAAAAk=\"")],
        )
        .await;
    stale.assert_error(412, 412001, "PreconditionFailed");
    assert_node_error(&stale.json(), "PreconditionFailed");
}

/// What `azure-iot-http-base`'s `parseErrorBody` does with the body: the code between
/// `ErrorCode:` and the first `;`, the message up to the next `;`.
fn assert_node_error(body: &Value, name: &str) {
    let message = body["Message"].as_str().unwrap_or_else(|| panic!("{body}"));
    let parts: Vec<&str> = message.split(';').collect();
    assert_eq!(parts[0].split(':').nth(1), Some(name), "{body}");
    assert_eq!(
        parts[1],
        body["message"].as_str().unwrap().replace(';', ",")
    );
    assert!(
        body["ExceptionMessage"]
            .as_str()
            .is_some_and(|m| m.starts_with("Tracking ID:")),
        "{body}"
    );
}

/// `JobClient.createQuery` pages by the `x-ms-continuation` response header and sends it back as
/// a request header; the token was only in the body, so Node never saw past the first page.
#[tokio::test]
async fn job_query_pages_by_the_continuation_header() {
    let api = TestApi::start().await;
    for id in ["h1", "h2", "h3"] {
        let body = json!({
            "jobId": id,
            "type": "scheduleUpdateTwin",
            "queryCondition": "deviceId = 'nobody'",
            "updateTwin": {"etag": "*", "properties": {"desired": {"x": 1}}},
            "startTime": "2099-01-01T00:00:00Z",
            "maxExecutionTimeInSeconds": 3600,
        });
        let r = api
            .owner(Method::PUT, &format!("/jobs/v2/{id}"), Some(body))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let token = api.token("iothubowner");
    let page = |continuation: Option<String>| {
        let (api, token) = (&api, &token);
        async move {
            let mut headers = vec![("x-ms-max-item-count", "2".to_string())];
            headers.extend(continuation.map(|c| ("x-ms-continuation", c)));
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            api.call(
                Method::GET,
                "/jobs/v2/query?jobType=scheduleUpdateTwin&api-version=2021-04-12",
                Some(token),
                None,
                &headers,
            )
            .await
        }
    };
    let first = page(None).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(first.json()["items"].as_array().unwrap().len(), 2);
    let next = first
        .header("x-ms-continuation")
        .expect("the response names the next page in x-ms-continuation")
        .to_string();
    assert_eq!(first.json()["continuationToken"], next.as_str());

    let rest = page(Some(next)).await;
    assert_eq!(rest.status, StatusCode::OK, "{}", rest.text);
    assert_eq!(rest.json()["items"][0]["jobId"], "h3", "{}", rest.text);
    assert_eq!(rest.header("x-ms-continuation"), None, "no more pages");

    // Node sends the header empty on the first page.
    let empty = api
        .call(
            Method::GET,
            "/jobs/v2/query",
            Some(&token),
            None,
            &[("x-ms-continuation", "")],
        )
        .await;
    assert_eq!(
        empty.json()["items"].as_array().unwrap().len(),
        3,
        "{}",
        empty.text
    );
}

/// Opens a WebSocket offering `subprotocol`; returns the HTTP refusal's status and JSON body.
async fn refused_upgrade(
    addr: std::net::SocketAddr,
    path: &str,
    subprotocol: Option<&str>,
) -> (u16, Value) {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(p) = subprotocol {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", p.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => panic!("the upgrade on {path} with {subprotocol:?} was accepted"),
        Err(WsError::Http(response)) => {
            let status = response.status().as_u16();
            let body = response.into_body().unwrap_or_default();
            (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
        }
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
    }
}

/// AMQP over WebSocket was upgraded without a subprotocol and then dropped; it is refused with
/// 501 and a body that names what to use instead.
#[tokio::test]
async fn amqp_over_websocket_is_refused_with_501_naming_mqtt() {
    let api = TestApi::start().await;
    let (addr, server) = api.serve().await;
    let (status, body) = refused_upgrade(addr, "/$servicebus/websocket", Some("AMQPWSB10")).await;
    assert_eq!(status, 501, "{body}");
    assert_eq!(body["errorCode"], 501000, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("AMQP") && message.contains("MQTT over WebSocket"),
        "{message}"
    );
    server.abort();
}

/// An upgrade on `/$iothub/websocket` without the `mqtt` subprotocol was accepted; it is refused.
#[tokio::test]
async fn mqtt_websocket_without_the_mqtt_subprotocol_is_refused() {
    let api = TestApi::start().await;
    let (addr, server) = api.serve().await;
    for offered in [None, Some("AMQPWSB10")] {
        let (status, body) = refused_upgrade(addr, "/$iothub/websocket", offered).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["errorCode"], 400004, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("'mqtt'"),
            "{body}"
        );
    }
    server.abort();
}
