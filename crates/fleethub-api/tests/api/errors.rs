//! Bad requests answer in IoT Hub's error shape, never axum's plain text.

use crate::support::TestApi;
use axum::http::{Method, StatusCode};

#[tokio::test]
async fn invalid_json_is_400_format_error_with_the_parser_message() {
    let api = TestApi::start().await;
    let token = api.token("iothubowner");
    let reply = api
        .raw(
            Method::PUT,
            "/devices/dev1",
            Some(&token),
            "{\"deviceId\": ".into(),
            &[],
        )
        .await;
    reply.assert_error(400, 400006, "IotHubFormatError");
    let message = reply.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("not valid JSON") && message.contains("line 1"),
        "{message}"
    );

    let wrong_shape = api
        .raw(
            Method::POST,
            "/devices",
            Some(&token),
            "{\"id\":\"x\"}".into(),
            &[],
        )
        .await;
    wrong_shape.assert_error(400, 400006, "IotHubFormatError");

    let bad_method_body = api
        .raw(
            Method::POST,
            "/twins/dev1/methods",
            Some(&token),
            "{\"payload\":1}".into(),
            &[],
        )
        .await;
    bad_method_body.assert_error(400, 400006, "IotHubFormatError");
    assert!(
        bad_method_body.text.contains("methodName"),
        "{}",
        bad_method_body.text
    );
}

#[tokio::test]
async fn unknown_route_and_wrong_method_answer_json() {
    let api = TestApi::start().await;
    let missing = api.owner(Method::GET, "/no/such/thing", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json()["errorCode"], 404000);
    assert_eq!(missing.header("iothub-errorcode"), Some("NotFound"));

    let wrong = api.owner(Method::POST, "/statistics/devices", None).await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.json()["errorCode"], 405000);
    assert_eq!(wrong.header("iothub-errorcode"), Some("MethodNotAllowed"));
}

#[tokio::test]
async fn bad_query_values_are_400_json() {
    let api = TestApi::start().await;
    let reply = api.owner(Method::GET, "/devices?top=lots", None).await;
    reply.assert_error(400, 400004, "ArgumentInvalid");
}

#[tokio::test]
async fn websocket_path_without_an_upgrade_is_400_json() {
    let api = TestApi::start().await;
    let reply = api
        .call(Method::GET, "/$iothub/websocket", None, None, &[])
        .await;
    reply.assert_error(400, 400004, "ArgumentInvalid");
}

/// Error bodies are stamped by the hub's clock (the one tokens, jobs and retention use), not the
/// system's: on a hub whose clock is half an hour behind, the body says the hub's time.
#[tokio::test]
async fn error_bodies_carry_the_hub_clocks_time() {
    let hub_time = chrono::Utc::now() - chrono::Duration::minutes(30);
    let clock = fleethub_core::ManualClock::new(hub_time);
    let api = TestApi::start_with_clock(std::sync::Arc::new(clock)).await;
    for reply in [
        api.owner(Method::GET, "/devices/nobody", None).await,
        api.owner(Method::GET, "/no/such/route", None).await,
        api.owner(Method::DELETE, "/statistics/devices", None).await,
    ] {
        let body = reply.json();
        assert_eq!(
            body["timestampUtc"],
            fleethub_core::time::format_timestamp(hub_time),
            "{}",
            reply.text
        );
        assert!(body["ExceptionMessage"]
            .as_str()
            .unwrap()
            .ends_with(&hub_time.format("%m/%d/%Y %H:%M:%S").to_string()));
        assert_eq!(
            reply.header("content-type"),
            Some("application/json"),
            "{}",
            reply.text
        );
    }
}
