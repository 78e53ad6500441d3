//! `POST /devices/query`: results, paging, projections, aggregates and errors.

use crate::support::{sas_device, Reply, TestApi};
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Registers `count` devices `q{n}` with tags and reported firmware, through bulk import.
async fn fleet(api: &TestApi, count: usize) {
    for first in (0..count).step_by(100) {
        let body: Vec<Value> = (first..(first + 100).min(count))
            .map(|i| {
                let id = format!("q{i:04}");
                let mut entry = sas_device(&id);
                entry["id"] = json!(id);
                entry["importMode"] = json!("create");
                entry["tags"] =
                    json!({"city": if i % 2 == 0 { "boston" } else { "denver" }, "floor": i % 5});
                let version = ["2.9.1", "2.10.0", "1.0.0"][i % 3];
                entry["properties"] =
                    json!({"reported": {"firmware": {"current_version": version}}});
                entry
            })
            .collect();
        let reply = api.owner(Method::POST, "/devices", Some(json!(body))).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(reply.json()["isSuccessful"], true, "{}", reply.text);
    }
}

async fn query(api: &TestApi, text: &str, headers: &[(&str, &str)]) -> Reply {
    let token = api.token("iothubowner");
    api.call(
        Method::POST,
        "/devices/query",
        Some(&token),
        Some(json!({ "query": text })),
        headers,
    )
    .await
}

fn ids(items: &Value) -> Vec<String> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["deviceId"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_tag_condition_returns_twins_with_item_type_twin() {
    let api = TestApi::start().await;
    fleet(&api, 30).await;
    let reply = query(&api, "SELECT * FROM devices WHERE tags.floor = 3", &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.header("x-ms-item-type"), Some("twin"));
    assert_eq!(reply.header("x-ms-continuation"), None);
    let items = reply.json();
    assert_eq!(
        ids(&items),
        ["q0003", "q0008", "q0013", "q0018", "q0023", "q0028"]
    );
    let twin = &items[0];
    assert_eq!(twin["tags"]["floor"], 3);
    assert_eq!(twin["connectionState"], "Disconnected");
    assert_eq!(
        twin["properties"]["reported"]["firmware"]["current_version"],
        "2.9.1"
    );
    assert!(twin["properties"]["reported"]["$metadata"].is_object());
}

#[tokio::test]
async fn semver_compares_versions_where_strings_would_not() {
    let api = TestApi::start().await;
    fleet(&api, 6).await;
    let text = "SELECT deviceId FROM devices \
                WHERE SEMVER(properties.reported.firmware.current_version) < '2.10.0'";
    let reply = query(&api, text, &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.header("x-ms-item-type"), Some("raw"));
    // 2.9.1 and 1.0.0 are older than 2.10.0; as strings '2.9.1' would sort after it.
    assert_eq!(ids(&reply.json()), ["q0000", "q0002", "q0003", "q0005"]);
}

#[tokio::test]
async fn group_by_counts_each_firmware_version() {
    let api = TestApi::start().await;
    fleet(&api, 9).await;
    let text = "SELECT properties.reported.firmware.current_version AS fw, COUNT() AS n \
                FROM devices GROUP BY properties.reported.firmware.current_version";
    let reply = query(&api, text, &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let mut groups: Vec<(String, u64)> = reply
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["fw"].as_str().unwrap().to_string(),
                g["n"].as_u64().unwrap(),
            )
        })
        .collect();
    groups.sort();
    assert_eq!(
        groups,
        [
            ("1.0.0".to_string(), 3),
            ("2.10.0".to_string(), 3),
            ("2.9.1".to_string(), 3)
        ]
    );
}

#[tokio::test]
async fn paging_returns_every_device_exactly_once_while_devices_change() {
    let api = TestApi::start().await;
    fleet(&api, 250).await;
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut headers = vec![("x-ms-max-item-count", "40")];
        if let Some(t) = token.as_deref() {
            headers.push(("x-ms-continuation", t));
        }
        let reply = query(&api, "SELECT * FROM devices", &headers).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let page = ids(&reply.json());
        assert!(page.len() <= 40);
        seen.extend(page);
        pages += 1;
        // Writes between pages: new devices before and after the cursor, twin updates, and
        // a deletion of a device that has not been returned yet.
        api.create_device(&format!("a-new-{pages}")).await;
        api.create_device(&format!("z-new-{pages}")).await;
        let patch = json!({"tags": {"touched": pages}});
        let r = api.owner(Method::PATCH, "/twins/q0001", Some(patch)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        match reply.header("x-ms-continuation") {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 7, "250 devices plus late arrivals in pages of 40");
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no device twice: {seen:?}");
    for i in 0..250 {
        assert!(seen.contains(&format!("q{i:04}")), "q{i:04} skipped");
    }
}

#[tokio::test]
async fn top_caps_the_total_across_pages() {
    let api = TestApi::start().await;
    fleet(&api, 30).await;
    let first = query(
        &api,
        "SELECT TOP 15 * FROM devices",
        &[("x-ms-max-item-count", "10")],
    )
    .await;
    assert_eq!(ids(&first.json()).len(), 10);
    let token = first
        .header("x-ms-continuation")
        .expect("a second page")
        .to_string();
    let second = query(
        &api,
        "SELECT TOP 15 * FROM devices",
        &[("x-ms-max-item-count", "10"), ("x-ms-continuation", &token)],
    )
    .await;
    assert_eq!(ids(&second.json()).len(), 5);
    assert_eq!(second.header("x-ms-continuation"), None);
}

#[tokio::test]
async fn a_bad_query_is_400_invalid_query_with_its_position() {
    let api = TestApi::start().await;
    let reply = query(&api, "SELECT * FROM devices WHERE tags.x = ", &[]).await;
    reply.assert_error(400, 400020, "InvalidQuery");
    let message = reply.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains("line 1, column"), "{message}");
    assert!(message.contains('^'), "{message}");
}

#[tokio::test]
async fn paging_headers_are_checked() {
    let api = TestApi::start().await;
    let reply = query(
        &api,
        "SELECT * FROM devices",
        &[("x-ms-max-item-count", "1001")],
    )
    .await;
    reply.assert_error(400, 400004, "ArgumentInvalid");
    let reply = query(
        &api,
        "SELECT * FROM devices",
        &[("x-ms-continuation", "garbage")],
    )
    .await;
    reply.assert_error(400, 400020, "InvalidQuery");
    let token = api.token("iothubowner");
    let reply = api
        .call(
            Method::POST,
            "/devices/query",
            Some(&token),
            Some(json!({})),
            &[],
        )
        .await;
    reply.assert_error(400, 400004, "ArgumentInvalid");
}

#[tokio::test]
async fn a_job_selects_by_semver_and_its_device_rows_are_queryable() {
    let api = TestApi::start().await;
    fleet(&api, 6).await;
    let job = json!({
        "jobId": "fw-rollout",
        "type": "scheduleDeviceMethod",
        "queryCondition": "SEMVER(properties.reported.firmware.current_version) < '2.10.0'",
        "cloudToDeviceMethod": {"methodName": "reboot", "payload": {}, "responseTimeoutInSeconds": 5, "connectTimeoutInSeconds": 0},
        "maxExecutionTimeInSeconds": 60,
    });
    let reply = api
        .owner(Method::PUT, "/jobs/v2/fw-rollout", Some(job))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    // No device is online, so each selected one fails DeviceNotOnline once connectTimeout
    // (0 s) passes; the query over devices.jobs then lists exactly those devices and why.
    let text = "SELECT * FROM devices.jobs \
                WHERE devices.jobs.jobId = 'fw-rollout' AND devices.jobs.status = 'failed'";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let rows = loop {
        let reply = query(&api, text, &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let rows = reply.json();
        if rows.as_array().unwrap().len() == 4 {
            assert_eq!(reply.header("x-ms-item-type"), Some("deviceJob"));
            break rows;
        }
        assert!(std::time::Instant::now() < deadline, "rows: {rows}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(ids(&rows), ["q0000", "q0002", "q0003", "q0005"]);
    let row = &rows[0];
    assert_eq!(row["jobId"], "fw-rollout");
    assert_eq!(row["jobType"], "scheduleDeviceMethod");
    assert_eq!(row["status"], "failed");
    assert_eq!(row["error"]["code"], "DeviceNotOnline", "{row}");
    assert!(
        row["createdDateTimeUtc"].is_string() && row["endTimeUtc"].is_string(),
        "{row}"
    );
}
