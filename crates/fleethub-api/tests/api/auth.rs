//! Service tokens: missing, forged, expired, and policies without the right.

use crate::support::{now_unix, sas_device, TestApi};
use axum::http::{Method, StatusCode};

#[tokio::test]
async fn missing_token_is_401() {
    let api = TestApi::start().await;
    let reply = api
        .call(Method::GET, "/devices/dev1", None, None, &[])
        .await;
    reply.assert_error(401, 401002, "IotHubUnauthorizedAccess");
}

#[tokio::test]
async fn forged_token_is_401() {
    let api = TestApi::start().await;
    let forged = fleethub_core::sas::generate_token(
        "localhost",
        &fleethub_core::sas::generate_key(),
        Some("iothubowner"),
        now_unix() + 3600,
    )
    .unwrap();
    let reply = api
        .call(Method::GET, "/devices", Some(&forged), None, &[])
        .await;
    reply.assert_error(401, 401003, "IotHubUnauthorized");

    let garbage = api
        .call(Method::GET, "/devices", Some("Bearer abc"), None, &[])
        .await;
    assert_eq!(garbage.status, StatusCode::UNAUTHORIZED, "{}", garbage.text);
}

#[tokio::test]
async fn expired_token_is_401() {
    let api = TestApi::start().await;
    let expired = api.token_expiring("iothubowner", now_unix() - 60);
    let reply = api
        .call(Method::GET, "/devices", Some(&expired), None, &[])
        .await;
    reply.assert_error(401, 401003, "IotHubUnauthorized");
    assert!(
        reply.json()["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{}",
        reply.text
    );
}

#[tokio::test]
async fn registry_read_policy_reads_but_cannot_write() {
    let api = TestApi::start().await;
    api.create_device("dev1").await;
    let read_only = api.token("registryRead");

    let read = api
        .call(Method::GET, "/devices/dev1", Some(&read_only), None, &[])
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);

    let write = api
        .call(
            Method::PUT,
            "/devices/dev2",
            Some(&read_only),
            Some(sas_device("dev2")),
            &[],
        )
        .await;
    write.assert_error(401, 401003, "IotHubUnauthorized");
    api.owner(Method::GET, "/devices/dev2", None)
        .await
        .assert_error(404, 404001, "DeviceNotFound");
}

#[tokio::test]
async fn twin_writes_need_service_connect() {
    let api = TestApi::start().await;
    api.create_device("dev1").await;
    let registry_write = api.token("registryReadWrite");
    let body = serde_json::json!({ "tags": { "a": 1 } });
    let reply = api
        .call(
            Method::PATCH,
            "/twins/dev1",
            Some(&registry_write),
            Some(body.clone()),
            &[],
        )
        .await;
    reply.assert_error(401, 401003, "IotHubUnauthorized");

    let service = api.token("service");
    let reply = api
        .call(
            Method::PATCH,
            "/twins/dev1",
            Some(&service),
            Some(body),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}

#[tokio::test]
async fn auth_is_checked_before_the_body_is_parsed() {
    let api = TestApi::start().await;
    let reply = api
        .raw(Method::PUT, "/devices/dev1", None, "{not json".into(), &[])
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
}
