//! Twins and direct methods through the service routes.

use crate::support::TestApi;
use axum::http::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn patch_merges_desired_and_tags_and_bumps_the_version() {
    let api = TestApi::start().await;
    api.create_device("dev1").await;
    let before = api.owner(Method::GET, "/twins/dev1", None).await;
    assert_eq!(before.status, StatusCode::OK);
    let before = before.json();

    let first = json!({ "tags": { "site": "north" }, "properties": { "desired": { "temp": 20, "mode": "eco" } } });
    let reply = api.owner(Method::PATCH, "/twins/dev1", Some(first)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);

    let second = json!({ "properties": { "desired": { "temp": 25, "mode": null } } });
    let twin = api
        .owner(Method::PATCH, "/twins/dev1", Some(second))
        .await
        .json();
    assert_eq!(
        twin["tags"]["site"], "north",
        "a patch without tags keeps them"
    );
    assert_eq!(twin["properties"]["desired"]["temp"], 25);
    assert!(
        twin["properties"]["desired"].get("mode").is_none(),
        "null deletes: {twin}"
    );
    assert!(twin["version"].as_u64().unwrap() > before["version"].as_u64().unwrap());
    assert!(
        twin["properties"]["desired"]["$version"].as_u64().unwrap()
            > before["properties"]["desired"]["$version"]
                .as_u64()
                .unwrap()
    );
}

#[tokio::test]
async fn replace_drops_what_the_body_leaves_out_and_if_match_guards_it() {
    let api = TestApi::start().await;
    api.create_device("dev1").await;
    let patch = json!({ "properties": { "desired": { "a": 1, "b": 2 } } });
    let twin = api.owner(Method::PATCH, "/twins/dev1", Some(patch)).await;
    let etag = twin
        .header("etag")
        .expect("twin answers carry an ETag")
        .to_string();
    let token = api.token("iothubowner");
    let replacement = json!({ "properties": { "desired": { "c": 3 } } });

    let stale = api
        .call(
            Method::PUT,
            "/twins/dev1",
            Some(&token),
            Some(replacement.clone()),
            &[("if-match", "\"AAAAAAAAAAE=\"")],
        )
        .await;
    stale.assert_error(412, 412001, "PreconditionFailed");

    let reply = api
        .call(
            Method::PUT,
            "/twins/dev1",
            Some(&token),
            Some(replacement),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let desired = &reply.json()["properties"]["desired"];
    assert_eq!(desired["c"], 3);
    assert!(
        desired.get("a").is_none() && desired.get("b").is_none(),
        "{desired}"
    );
}

/// Four clients read the same etag and each send a change pinned to it, at once: one wins, every
/// other gets IoT Hub's 412 PreconditionFailed and is not retried, and the twin holds the
/// winner's change alone (no change silently overwrote another).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_changes_pinned_to_one_etag_one_wins_and_the_others_get_412() {
    let api = TestApi::start().await;
    api.create_device("dev1").await;
    let read = api.owner(Method::GET, "/twins/dev1", None).await;
    let etag = read.header("etag").expect("an ETag").to_string();
    let token = api.token("iothubowner");
    let pinned = [("if-match", etag.as_str())];
    let patch = |n: u32| {
        let body = json!({ "properties": { "desired": { format!("writer{n}"): n } } });
        api.call(
            Method::PATCH,
            "/twins/dev1",
            Some(&token),
            Some(body),
            &pinned,
        )
    };
    let (r1, r2, r3, r4) = tokio::join!(patch(1), patch(2), patch(3), patch(4));
    let replies = [r1, r2, r3, r4];
    let won = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    assert_eq!(
        won,
        1,
        "{:?}",
        replies.iter().map(|r| &r.text).collect::<Vec<_>>()
    );
    for lost in replies.iter().filter(|r| r.status != StatusCode::OK) {
        lost.assert_error(412, 412001, "PreconditionFailed");
        let message = lost.json()["Message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            message.starts_with("ErrorCode:PreconditionFailed;"),
            "{message}"
        );
    }
    let twin = api.owner(Method::GET, "/twins/dev1", None).await.json();
    let writers: Vec<&String> = twin["properties"]["desired"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("writer"))
        .collect();
    assert_eq!(writers.len(), 1, "{twin}");
    assert_eq!(twin["version"], 2, "one change, one version: {twin}");
}

/// Without an etag (or with `*`) a client asks for its change on top of whatever is there:
/// concurrent patches all land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpinned_changes_at_once_all_land() {
    let api = TestApi::start().await;
    api.create_device("dev1").await;
    let token = api.token("iothubowner");
    let any = [("if-match", "*")];
    let patch = |n: u32| {
        let body = json!({ "tags": { format!("t{n}"): n } });
        let headers: &[(&str, &str)] = if n.is_multiple_of(2) { &any } else { &[] };
        api.call(
            Method::PATCH,
            "/twins/dev1",
            Some(&token),
            Some(body),
            headers,
        )
    };
    let (r1, r2, r3, r4) = tokio::join!(patch(1), patch(2), patch(3), patch(4));
    for reply in [r1, r2, r3, r4] {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }
    let twin = api.owner(Method::GET, "/twins/dev1", None).await.json();
    assert_eq!(twin["tags"].as_object().unwrap().len(), 4, "{twin}");
    assert_eq!(twin["version"], 5);
}

#[tokio::test]
async fn service_cannot_write_reported_properties() {
    let api = TestApi::start().await;
    api.create_device("dev1").await;
    let body = json!({ "properties": { "reported": { "x": 1 } } });
    let reply = api.owner(Method::PATCH, "/twins/dev1", Some(body)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
}

#[tokio::test]
async fn method_on_an_offline_device_is_404103_device_not_online() {
    let api = TestApi::start().await;
    api.create_device("dev1").await;
    // What invoke_device_method sends for payload=None.
    let body = json!({ "methodName": "reboot", "payload": "", "responseTimeoutInSeconds": 5, "connectTimeoutInSeconds": 0 });
    let reply = api
        .owner(Method::POST, "/twins/dev1/methods", Some(body))
        .await;
    reply.assert_error(404, 404103, "DeviceNotOnline");

    let unknown = json!({ "methodName": "reboot" });
    api.owner(Method::POST, "/twins/ghost/methods", Some(unknown))
        .await
        .assert_error(404, 404001, "DeviceNotFound");
}
