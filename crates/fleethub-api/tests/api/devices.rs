//! The registry as the service SDK drives it.

use crate::support::{sas_device, TestApi};
use axum::http::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn create_answers_200_with_generated_keys_and_an_etag() {
    let api = TestApi::start().await;
    let reply = api
        .owner(
            Method::PUT,
            "/devices/dev1?api-version=2021-04-12",
            Some(sas_device("dev1")),
        )
        .await;

    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the SDK treats 201 as an error: {}",
        reply.text
    );
    let device = reply.json();
    assert_eq!(device["deviceId"], "dev1");
    let keys = &device["authentication"]["symmetricKey"];
    assert!(
        keys["primaryKey"].as_str().is_some_and(|k| k.len() >= 24),
        "{device}"
    );
    assert!(
        keys["secondaryKey"].as_str().is_some_and(|k| k.len() >= 24),
        "{device}"
    );
    assert_ne!(keys["primaryKey"], keys["secondaryKey"]);
    assert_eq!(
        reply.header("etag"),
        Some(format!("\"{}\"", device["etag"].as_str().unwrap()).as_str())
    );
    assert!(
        device.get("$revision").is_none(),
        "internal bookkeeping leaked: {device}"
    );

    let read = api.owner(Method::GET, "/devices/dev1", None).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.json()["authentication"], device["authentication"]);
}

#[tokio::test]
async fn second_create_without_if_match_is_a_conflict() {
    let api = TestApi::start().await;
    api.create_device("dev1").await;
    let reply = api
        .owner(Method::PUT, "/devices/dev1", Some(sas_device("dev1")))
        .await;
    reply.assert_error(409, 409001, "DeviceAlreadyExists");
}

#[tokio::test]
async fn update_needs_the_current_etag() {
    let api = TestApi::start().await;
    let created = api.create_device("dev1").await;
    let token = api.token("iothubowner");
    let mut disabled = sas_device("dev1");
    disabled["status"] = json!("disabled");

    let stale = api
        .call(
            Method::PUT,
            "/devices/dev1",
            Some(&token),
            Some(disabled.clone()),
            &[("if-match", "\"AAAAAAAAAAk=\"")],
        )
        .await;
    stale.assert_error(412, 412001, "PreconditionFailed");

    let etag = format!("\"{}\"", created["etag"].as_str().unwrap());
    let fresh = api
        .call(
            Method::PUT,
            "/devices/dev1",
            Some(&token),
            Some(disabled),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.text);
    assert_eq!(fresh.json()["status"], "disabled");
    assert_ne!(
        fresh.json()["etag"],
        created["etag"],
        "an update changes the etag"
    );
}

/// Two registry updates pinned to one etag, sent at once: one wins, the other gets IoT Hub's 412
/// PreconditionFailed and is not retried; a delete pinned to that etag is then 412 too, and the
/// device stays with the winner's change until a delete names the current etag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_registry_changes_pinned_to_one_etag_one_wins_and_the_others_get_412() {
    let api = TestApi::start().await;
    let created = api.create_device("dev1").await;
    let token = api.token("iothubowner");
    let etag = format!("\"{}\"", created["etag"].as_str().unwrap());
    let pinned = [("if-match", etag.as_str())];
    let update = |reason: &'static str| {
        let mut body = sas_device("dev1");
        body["statusReason"] = json!(reason);
        api.call(
            Method::PUT,
            "/devices/dev1",
            Some(&token),
            Some(body),
            &pinned,
        )
    };
    let (first, second) = tokio::join!(update("first"), update("second"));
    let (won, lost, winner) = if first.status.is_success() {
        (&first, &second, "first")
    } else {
        (&second, &first, "second")
    };
    assert_eq!(won.status, StatusCode::OK, "{}", won.text);
    lost.assert_error(412, 412001, "PreconditionFailed");

    let stale = api
        .call(Method::DELETE, "/devices/dev1", Some(&token), None, &pinned)
        .await;
    stale.assert_error(412, 412001, "PreconditionFailed");
    let now = api.owner(Method::GET, "/devices/dev1", None).await.json();
    assert_eq!(now["statusReason"], winner, "{now}");
    let current = format!("\"{}\"", now["etag"].as_str().unwrap());
    let deleted = api
        .call(
            Method::DELETE,
            "/devices/dev1",
            Some(&token),
            None,
            &[("if-match", &current)],
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text);
}

#[tokio::test]
async fn unknown_device_is_404_device_not_found() {
    let api = TestApi::start().await;
    let reply = api.owner(Method::GET, "/devices/nobody", None).await;
    reply.assert_error(404, 404001, "DeviceNotFound");
    assert_eq!(reply.json()["info"]["name"], "DeviceNotFound");
}

#[tokio::test]
async fn percent_encoded_ids_are_decoded_from_the_path() {
    let api = TestApi::start().await;
    let reply = api
        .owner(Method::PUT, "/devices/a%23b%25c", Some(sas_device("a#b%c")))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json()["deviceId"], "a#b%c");

    let read = api.owner(Method::GET, "/devices/a%23b%25c", None).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    assert_eq!(read.json()["deviceId"], "a#b%c");
}

#[tokio::test]
async fn delete_answers_204_and_the_device_is_gone() {
    let api = TestApi::start().await;
    api.create_device("dev1").await;
    let token = api.token("iothubowner");
    let reply = api
        .call(
            Method::DELETE,
            "/devices/dev1",
            Some(&token),
            None,
            &[("if-match", "\"*\"")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    api.owner(Method::GET, "/devices/dev1", None)
        .await
        .assert_error(404, 404001, "DeviceNotFound");
    api.call(
        Method::DELETE,
        "/devices/dev1",
        Some(&token),
        None,
        &[("if-match", "\"*\"")],
    )
    .await
    .assert_error(404, 404001, "DeviceNotFound");
}

#[tokio::test]
async fn list_honours_top() {
    let api = TestApi::start().await;
    for id in ["d1", "d2", "d3"] {
        api.create_device(id).await;
    }
    let all = api
        .owner(Method::GET, "/devices?api-version=2021-04-12", None)
        .await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.json().as_array().unwrap().len(), 3);
    let two = api
        .owner(Method::GET, "/devices?top=2&api-version=2021-04-12", None)
        .await;
    assert_eq!(two.json().as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn bulk_with_one_bad_id_is_400_listing_it_and_creates_the_rest() {
    let api = TestApi::start().await;
    let body = json!([
        { "id": "good1", "importMode": "create", "authentication": { "type": "sas" } },
        { "id": "bad id/with slash", "importMode": "create" },
        { "id": "good2", "importMode": "create", "tags": { "site": "north" } },
    ]);
    let reply = api.owner(Method::POST, "/devices", Some(body)).await;

    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    let result = reply.json();
    assert_eq!(result["isSuccessful"], false);
    let errors = result["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{result}");
    assert_eq!(errors[0]["deviceId"], "bad id/with slash");
    for id in ["good1", "good2"] {
        assert_eq!(
            api.owner(Method::GET, &format!("/devices/{id}"), None)
                .await
                .status,
            StatusCode::OK
        );
    }
    let twin = api.owner(Method::GET, "/twins/good2", None).await.json();
    assert_eq!(twin["tags"]["site"], "north");

    let ok = api
        .owner(Method::POST, "/devices", Some(json!([{ "id": "good3" }])))
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(ok.json()["isSuccessful"], true);
}
