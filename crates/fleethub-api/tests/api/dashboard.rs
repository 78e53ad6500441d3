//! The dashboard's sign-in and sessions: a policy's name and key (or a one-time link) give an
//! HttpOnly, Secure, SameSite=Strict cookie that the REST routes accept with the policy's
//! rights; a change needs the session's CSRF token; a read-only policy is refused by the server.

use crate::support::{sas_device, Reply, TestApi};
use axum::http::{Method, StatusCode};
use fleethub_core::ManualClock;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// A signed-in session: the cookie pair to send and the CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

async fn sign_in_with(api: &TestApi, body: Value) -> Reply {
    api.call(Method::POST, "/dashboard/session", None, Some(body), &[])
        .await
}

async fn sign_in(api: &TestApi, policy: &str) -> Session {
    let key = api.hub.policy(policy).unwrap().secondary_key;
    let reply = sign_in_with(api, json!({ "policy": policy, "key": key })).await;
    session_from(&reply)
}

fn session_from(reply: &Reply) -> Session {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let set = reply.header("set-cookie").expect("a cookie is set");
    let pair = set.split(';').next().unwrap().to_string();
    Session {
        cookie: pair,
        csrf: reply.json()["csrfToken"].as_str().unwrap().to_string(),
    }
}

async fn as_session(
    api: &TestApi,
    session: &Session,
    method: Method,
    uri: &str,
    body: Option<Value>,
    csrf: bool,
) -> Reply {
    let mut headers = vec![("cookie", session.cookie.as_str())];
    if csrf {
        headers.push(("x-fleethub-csrf", session.csrf.as_str()));
    }
    api.call(method, uri, None, body, &headers).await
}

fn desired(led: &str) -> Value {
    json!({ "properties": { "desired": { "led": led } } })
}

#[tokio::test]
async fn signing_in_sets_a_secure_http_only_strict_cookie_and_a_wrong_key_is_refused() {
    let api = TestApi::start().await;
    let owner = api.hub.policy("iothubowner").unwrap();
    let reply = sign_in_with(
        &api,
        json!({ "policy": "iothubowner", "key": owner.primary_key }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let cookie = reply.header("set-cookie").unwrap();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let body = reply.json();
    assert_eq!(body["policy"], "iothubowner");
    assert_eq!(
        body["rights"],
        json!({ "registryRead": true, "registryWrite": true, "serviceConnect": true })
    );

    let wrong = sign_in_with(&api, json!({ "policy": "iothubowner", "key": "bm90LWl0" })).await;
    wrong.assert_error(401, 401003, "IotHubUnauthorized");
    assert!(wrong.header("set-cookie").is_none());
    let nobody = sign_in_with(
        &api,
        json!({ "policy": "nobody", "key": owner.primary_key }),
    )
    .await;
    nobody.assert_error(401, 401003, "IotHubUnauthorized");
    assert_eq!(
        wrong.json()["message"],
        nobody.json()["message"],
        "a refusal does not tell which of name and key was wrong"
    );

    let device_only = api.hub.policy("device").unwrap().primary_key;
    let refused = sign_in_with(&api, json!({ "policy": "device", "key": device_only })).await;
    refused.assert_error(401, 401003, "IotHubUnauthorized");
    assert!(
        refused.json()["message"]
            .as_str()
            .unwrap()
            .contains("RegistryRead"),
        "{}",
        refused.text
    );
}

#[tokio::test]
async fn a_sign_in_needs_a_json_content_type_so_another_site_cannot_post_a_form() {
    let api = TestApi::start().await;
    let key = api.hub.policy("iothubowner").unwrap().primary_key;
    let body = json!({ "policy": "iothubowner", "key": key }).to_string();
    let reply = api
        .raw(
            Method::POST,
            "/dashboard/session",
            None,
            body,
            &[("content-type", "text/plain")],
        )
        .await;
    reply.assert_error(400, 400004, "ArgumentInvalid");
}

#[tokio::test]
async fn the_cookie_reads_and_a_change_needs_the_sessions_csrf_token() {
    let api = TestApi::start().await;
    api.create_device("d1").await;
    let owner = sign_in(&api, "iothubowner").await;

    let twin = as_session(&api, &owner, Method::GET, "/twins/d1", None, false).await;
    assert_eq!(twin.status, StatusCode::OK, "{}", twin.text);

    let no_token = as_session(
        &api,
        &owner,
        Method::PATCH,
        "/twins/d1",
        Some(desired("red")),
        false,
    )
    .await;
    no_token.assert_error(401, 401003, "IotHubUnauthorized");
    assert!(
        no_token.text.contains("x-fleethub-csrf"),
        "{}",
        no_token.text
    );
    let headers = [
        ("cookie", owner.cookie.as_str()),
        ("x-fleethub-csrf", "forged"),
    ];
    let forged = api
        .call(
            Method::PATCH,
            "/twins/d1",
            None,
            Some(desired("red")),
            &headers,
        )
        .await;
    forged.assert_error(401, 401003, "IotHubUnauthorized");
    let twin = api.hub.get_twin("d1").await.unwrap();
    assert!(
        twin.desired.values.get("led").is_none(),
        "refused changes wrote nothing"
    );

    let ok = as_session(
        &api,
        &owner,
        Method::PATCH,
        "/twins/d1",
        Some(desired("red")),
        true,
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(ok.json()["properties"]["desired"]["led"], "red");
}

#[tokio::test]
async fn a_read_only_session_reads_and_every_change_is_refused_by_the_server() {
    let api = TestApi::start().await;
    api.create_device("d1").await;
    let reader = sign_in(&api, "registryRead").await;
    let session = as_session(
        &api,
        &reader,
        Method::GET,
        "/dashboard/session",
        None,
        false,
    )
    .await;
    assert_eq!(
        session.json()["rights"],
        json!({ "registryRead": true, "registryWrite": false, "serviceConnect": false })
    );
    let read = as_session(&api, &reader, Method::GET, "/twins/d1", None, false).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);

    let changes = [
        (
            Method::PATCH,
            "/twins/d1",
            Some(desired("red")),
            "ServiceConnect",
        ),
        (
            Method::PUT,
            "/devices/d2",
            Some(sas_device("d2")),
            "RegistryWrite",
        ),
        (Method::DELETE, "/devices/d1", None, "RegistryWrite"),
        (
            Method::POST,
            "/twins/d1/methods",
            Some(json!({ "methodName": "reboot", "payload": null })),
            "ServiceConnect",
        ),
    ];
    for (method, uri, body, right) in changes {
        let reply = as_session(&api, &reader, method.clone(), uri, body, true).await;
        reply.assert_error(401, 401003, "IotHubUnauthorized");
        let message = reply.json()["message"].as_str().unwrap().to_string();
        assert!(
            message.contains(&format!("does not grant {right}")),
            "{method} {uri}: {message}"
        );
    }
    assert!(api
        .hub
        .get_twin("d1")
        .await
        .unwrap()
        .desired
        .values
        .get("led")
        .is_none());
    assert!(api.hub.get_device("d2").await.is_err());
    assert!(api.hub.get_device("d1").await.is_ok());
}

#[tokio::test]
async fn a_session_ends_when_it_expires_and_a_cookie_cannot_be_forged_for_another_policy() {
    let clock = ManualClock::new(chrono::Utc::now());
    let api = TestApi::start_with_clock(Arc::new(clock.clone())).await;
    let reader = sign_in(&api, "registryRead").await;
    let owner = sign_in(&api, "iothubowner").await;

    // The reader's signature under the owner's name.
    let value = reader.cookie.trim_start_matches("fleethub_session=");
    let (_, rest) = value.split_once('.').unwrap();
    let owner_name = owner
        .cookie
        .trim_start_matches("fleethub_session=")
        .split('.')
        .next()
        .unwrap();
    let forged = Session {
        cookie: format!("fleethub_session={owner_name}.{rest}"),
        csrf: reader.csrf.clone(),
    };
    let reply = as_session(
        &api,
        &forged,
        Method::GET,
        "/dashboard/session",
        None,
        false,
    )
    .await;
    reply.assert_error(401, 401003, "IotHubUnauthorized");

    clock.advance(chrono::Duration::hours(12) + chrono::Duration::seconds(1));
    let reply = as_session(
        &api,
        &owner,
        Method::GET,
        "/statistics/devices",
        None,
        false,
    )
    .await;
    reply.assert_error(401, 401003, "IotHubUnauthorized");
    assert!(reply.text.contains("expired"), "{}", reply.text);

    let out = api
        .call(Method::DELETE, "/dashboard/session", None, None, &[])
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
}

#[tokio::test]
async fn a_one_time_sign_in_link_signs_in_once() {
    let api = TestApi::start().await;
    let token = api.dashboard.sign_in_token("iothubowner");
    let first = sign_in_with(&api, json!({ "link": token })).await;
    let session = session_from(&first);
    assert_eq!(first.json()["policy"], "iothubowner");
    let read = as_session(
        &api,
        &session,
        Method::GET,
        "/statistics/devices",
        None,
        false,
    )
    .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);

    let again = sign_in_with(&api, json!({ "link": token })).await;
    again.assert_error(401, 401003, "IotHubUnauthorized");
    assert!(again.text.contains("already used"), "{}", again.text);
    let both = sign_in_with(&api, json!({ "link": token, "policy": "iothubowner" })).await;
    both.assert_error(400, 400004, "ArgumentInvalid");
}

#[tokio::test]
async fn the_page_and_its_assets_are_embedded_and_served_under_a_content_security_policy() {
    let api = TestApi::start().await;
    for (path, content_type, needle) in [
        ("/", "text/html", "<title>FleetHub</title>"),
        (
            "/dashboard/app.js",
            "text/javascript",
            "EventSource(\"/v1/events/stream\")",
        ),
        ("/dashboard/app.css", "text/css", ":root"),
    ] {
        let reply = api.call(Method::GET, path, None, None, &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert!(
            reply
                .header("content-type")
                .unwrap()
                .starts_with(content_type),
            "{path}"
        );
        assert!(reply.text.contains(needle), "{path}");
        let csp = reply.header("content-security-policy").unwrap();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    }
    let page = api.call(Method::GET, "/", None, None, &[]).await;
    assert!(!page.text.contains("http://") || page.text.contains("http://www.w3.org"));
    assert!(
        !page.text.contains("https://"),
        "nothing is loaded from elsewhere"
    );
}

#[tokio::test]
async fn the_overview_counts_devices_and_lists_firmware_versions_in_semver_order() {
    let api = TestApi::start().await;
    for (id, version) in [
        ("a", "1.10.0"),
        ("b", "1.9.3"),
        ("c", "1.10.0"),
        ("d", "1.10.0-rc.2"),
    ] {
        api.create_device(id).await;
        let report = json!({ "firmware": { "current_version": version, "status": "success" } });
        api.hub
            .device_report(id, report.to_string().as_bytes())
            .await
            .unwrap();
    }
    api.create_device("silent").await;
    let owner = sign_in(&api, "iothubowner").await;
    let reply = as_session(
        &api,
        &owner,
        Method::GET,
        "/dashboard/overview",
        None,
        false,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let o = reply.json();
    assert_eq!(o["devices"]["total"], 5);
    assert_eq!(o["devices"]["connected"], 0);
    assert_eq!(o["rollouts"], json!([]));
    assert_eq!(o["flagged"], 0);
    assert_eq!(
        o["firmware"]["versions"],
        json!([
            { "version": "1.9.3", "devices": 1 },
            { "version": "1.10.0-rc.2", "devices": 1 },
            { "version": "1.10.0", "devices": 2 },
            { "version": null, "devices": 1 },
        ])
    );
    let statuses = o["firmware"]["statuses"].as_array().unwrap();
    assert!(
        statuses.contains(&json!({ "status": "success", "devices": 4 })),
        "{statuses:?}"
    );
    let events = o["events"]["events"].as_array().unwrap();
    assert_eq!(
        events.last().unwrap()["deviceId"],
        "silent",
        "newest event last"
    );

    // A page that saw a newer event than the cached answer gets fresh figures.
    api.create_device("late").await;
    let seen = api.hub.last_event_seq().await.unwrap();
    let uri = format!("/dashboard/overview?seen={seen}");
    let fresh = as_session(&api, &owner, Method::GET, &uri, None, false).await;
    assert_eq!(fresh.json()["devices"]["total"], 6);

    // The chart comes from counts the store keeps: a device that updates moves between
    // versions at once, and a deleted one leaves its version.
    let report = json!({ "firmware": { "current_version": "1.10.0", "status": "success" } });
    api.hub
        .device_report("b", report.to_string().as_bytes())
        .await
        .unwrap();
    let report = json!({ "firmware": { "status": "downloading" } });
    api.hub
        .device_report("d", report.to_string().as_bytes())
        .await
        .unwrap();
    api.hub.delete_device("a", None).await.unwrap();
    let seen = api.hub.last_event_seq().await.unwrap();
    let uri = format!("/dashboard/overview?seen={seen}");
    let o = as_session(&api, &owner, Method::GET, &uri, None, false)
        .await
        .json();
    assert_eq!(o["devices"]["total"], 5);
    assert_eq!(
        o["firmware"]["versions"],
        json!([
            { "version": "1.10.0-rc.2", "devices": 1 },
            { "version": "1.10.0", "devices": 2 },
            { "version": null, "devices": 2 },
        ])
    );
    let statuses = o["firmware"]["statuses"].as_array().unwrap();
    for expected in [
        json!({ "status": "success", "devices": 2 }),
        json!({ "status": "downloading", "devices": 1 }),
        json!({ "status": null, "devices": 2 }),
    ] {
        assert!(statuses.contains(&expected), "{expected} in {statuses:?}");
    }
}

#[tokio::test]
async fn the_event_stream_sends_changes_as_they_commit_and_resumes_from_last_event_id() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let api = TestApi::start().await;
    api.create_device("before").await;
    let (addr, _server) = api.serve().await;
    let token = api.token("registryRead");
    let open = |last_event_id: Option<String>| {
        let token = token.clone();
        async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let resume = last_event_id
                .map(|id| format!("last-event-id: {id}\r\n"))
                .unwrap_or_default();
            let request = format!(
                "GET /v1/events/stream HTTP/1.1\r\nhost: localhost\r\nauthorization: {token}\r\n{resume}\r\n"
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            stream
        }
    };
    let read_until = |mut stream: tokio::net::TcpStream, needle: &'static str| async move {
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !seen.contains(needle) {
            let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {needle} within 10 s; got {seen}"))
                .unwrap();
            assert!(n > 0, "stream closed; got {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        seen
    };

    let stream = open(None).await;
    // Let the stream start at the newest event before the next change commits.
    tokio::time::sleep(Duration::from_millis(200)).await;
    api.create_device("after").await;
    let seen = read_until(stream, "\"after\"").await;
    assert!(seen.contains("event: events"), "{seen}");
    assert!(
        !seen.contains("\"before\""),
        "a new stream starts at the newest event: {seen}"
    );

    let resumed = read_until(open(Some("0".into())).await, "\"after\"").await;
    assert!(
        resumed.contains("\"before\""),
        "Last-Event-ID 0 replays from the start: {resumed}"
    );
}
