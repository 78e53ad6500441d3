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

/// An owner-policy token for resource `sr`.
fn owner_token_for(api: &TestApi, sr: &str) -> String {
    let key = api.hub.policy("iothubowner").unwrap().primary_key;
    fleethub_core::sas::generate_token(sr, &key, Some("iothubowner"), now_unix() + 3600).unwrap()
}

#[tokio::test]
async fn a_service_token_whose_sr_names_another_hub_is_401() {
    let api = TestApi::start().await;
    api.create_device("dev1").await;
    for sr in [
        "other-hub.example",
        "localhost.evil.example:8443/devices/dev1",
    ] {
        let reply = api
            .call(
                Method::GET,
                "/devices/dev1",
                Some(&owner_token_for(&api, sr)),
                None,
                &[],
            )
            .await;
        reply.assert_error(401, 401003, "IotHubUnauthorized");
        let message = reply.json()["message"].as_str().unwrap().to_string();
        assert!(message.contains("names another hub"), "{message}");
        assert!(message.contains("localhost"), "{message}");
    }
    // The hub's own name, in any case and with a port, as the SDKs send it.
    for sr in ["localhost", "LocalHost:8443"] {
        let reply = api
            .call(
                Method::GET,
                "/devices/dev1",
                Some(&owner_token_for(&api, sr)),
                None,
                &[],
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{sr}: {}", reply.text);
    }
}

#[tokio::test]
async fn a_service_token_scoped_to_one_device_is_401_for_another() {
    let api = TestApi::start().await;
    api.create_device("dev1").await;
    api.create_device("dev10").await;
    let scoped = owner_token_for(&api, "localhost/devices/dev1");
    let own = api
        .call(Method::GET, "/devices/dev1", Some(&scoped), None, &[])
        .await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.text);
    for path in ["/devices/dev10", "/devices", "/twins/dev1"] {
        let reply = api.call(Method::GET, path, Some(&scoped), None, &[]).await;
        reply.assert_error(401, 401003, "IotHubUnauthorized");
        let message = reply.json()["message"].as_str().unwrap().to_string();
        assert!(message.contains("does not cover"), "{path}: {message}");
    }
}
