//! The registry as a file: `fleethub devices import` (one streamed request, errors per line,
//! idempotent) and `fleethub devices export` (IoT Hub's export format), as an operator runs them.

use crate::harness::{run_cli, TestHub, DEADLINE};
use axum::http::Method;
use fleethub_client::HubClient;
use serde_json::{json, Value};
use std::io::Write;

fn write_lines(lines: &[String]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    for line in lines {
        writeln!(file, "{line}").unwrap();
    }
    file.flush().unwrap();
    file
}

async fn import_cli(hub: &TestHub, path: &std::path::Path) -> (bool, Value, String) {
    let path = path.to_str().unwrap();
    let (ok, out, err) = run_cli(hub, &["devices", "import", path, "--json"], &[]).await;
    let report = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    (ok, report, err)
}

/// Every twin's etag and registry etag, by id, to show what a re-run changed.
async fn etags(hub: &TestHub, ids: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for id in ids {
        let twin = hub.client.twin(id).await.unwrap().unwrap();
        out.push((
            twin["etag"].as_str().unwrap().to_string(),
            twin["deviceEtag"].as_str().unwrap().to_string(),
        ));
    }
    out
}

#[tokio::test]
async fn an_import_applies_the_good_lines_names_each_bad_one_and_a_rerun_changes_nothing() {
    let hub = TestHub::start().await;
    let lines = vec![
        json!({"id": "imp-1", "tags": {"site": "north"}}).to_string(),
        json!({"id": "imp-2", "properties": {"desired": {"interval": 60}, "reported": {"fw": "1.0.0"}}}).to_string(),
        String::new(),
        "{\"id\": \"imp-3\", ".to_string(),
        json!({"id": "bad id!"}).to_string(),
        json!({"id": "imp-4", "status": "sleeping"}).to_string(),
        json!({"deviceId": "imp-5", "status": "disabled"}).to_string(),
        json!({"id": "imp-6", "tags": {"bad.key": 1}}).to_string(),
        json!({"id": "imp-7", "importMode": "update"}).to_string(),
        "[1, 2]".to_string(),
    ];
    let file = write_lines(&lines);
    let (ok, report, err) = import_cli(&hub, file.path()).await;
    assert!(!ok, "an import with failed lines exits non-zero");
    assert!(err.contains("6 lines failed"), "{err}");
    assert_eq!(report["lines"], 10, "{report}");
    assert_eq!(report["entries"], 9, "{report}");
    assert_eq!(report["created"], 3, "{report}");
    assert_eq!(report["failed"], 6, "{report}");
    let failed: Vec<(u64, Value, u64)> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert!(!e["message"].as_str().unwrap().is_empty(), "{e}");
            (
                e["line"].as_u64().unwrap(),
                e["deviceId"].clone(),
                e["errorCode"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        failed,
        [
            (4, Value::Null, 400006),
            (5, json!("bad id!"), 400008),
            (6, json!("imp-4"), 400006),
            (8, json!("imp-6"), 400021),
            (9, json!("imp-7"), 404001),
            (10, Value::Null, 400006),
        ]
    );
    // The good lines were applied whole, the bad ones left nothing.
    let twin = hub.client.twin("imp-2").await.unwrap().unwrap();
    assert_eq!(twin["properties"]["desired"]["interval"], 60);
    assert_eq!(twin["properties"]["reported"]["fw"], "1.0.0");
    let five = hub.client.device("imp-5").await.unwrap().unwrap();
    assert_eq!(five["status"], "disabled");
    for gone in ["imp-4", "imp-6", "imp-7"] {
        assert!(hub.client.device(gone).await.unwrap().is_none(), "{gone}");
    }

    let good = ["imp-1", "imp-2", "imp-5"];
    let before = etags(&hub, &good).await;
    let (_, again, _) = import_cli(&hub, file.path()).await;
    assert_eq!(again["created"], 0, "{again}");
    assert_eq!(again["updated"], 0, "{again}");
    assert_eq!(again["unchanged"], 3, "{again}");
    assert_eq!(again["failed"], 6, "{again}");
    assert_eq!(etags(&hub, &good).await, before, "a re-run wrote nothing");

    // A changed line updates only what it changes.
    let changed = write_lines(&[json!({"id": "imp-1", "tags": {"site": "south"}}).to_string()]);
    let (ok, report, err) = import_cli(&hub, changed.path()).await;
    assert!(ok, "{err}");
    assert_eq!(report["updated"], 1, "{report}");
    let twin = hub.client.twin("imp-1").await.unwrap().unwrap();
    assert_eq!(twin["tags"]["site"], "south");
    assert_eq!(etags(&hub, &["imp-2"]).await, before[1..2]);
}

#[tokio::test]
async fn an_export_imports_back_whole_into_another_hub_and_unchanged_into_its_own() {
    let source = TestHub::start().await;
    let entries: Vec<Value> = (0..5)
        .map(|i| {
            json!({
                "id": format!("exp-{i}"),
                "tags": {"site": "north", "n": i},
                "properties": {"desired": {"interval": 60 + i}, "reported": {"fw": "1.2.0"}},
            })
        })
        .collect();
    assert!(source.client.bulk(&entries).await.unwrap().is_successful);
    let r = source
        .call(
            Method::PATCH,
            "/twins/exp-3",
            Some(json!({"properties": {"desired": {"extra": true}}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devices.txt");
    let (ok, _, err) = run_cli(
        &source,
        &["devices", "export", "--output", path.to_str().unwrap()],
        &[],
    )
    .await;
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    // IoT Hub's export shape: the entry with its keys, the twin with its metadata.
    let first = &lines[0];
    assert_eq!(first["id"], "exp-0");
    assert!(
        first["eTag"].is_string() && first["twinETag"].is_string(),
        "{first}"
    );
    assert!(
        first["authentication"]["symmetricKey"]["primaryKey"].is_string(),
        "{first}"
    );
    assert!(
        first["properties"]["desired"]["$metadata"].is_object(),
        "{first}"
    );

    let target = TestHub::start().await;
    let (ok, report, err) = import_cli(&target, &path).await;
    assert!(ok, "{err}");
    assert_eq!(report["created"], 5, "{report}");
    for i in 0..5 {
        let id = format!("exp-{i}");
        let (a, b) = (
            source.client.twin(&id).await.unwrap().unwrap(),
            target.client.twin(&id).await.unwrap().unwrap(),
        );
        assert_eq!(a["tags"], b["tags"], "{id}");
        for section in ["desired", "reported"] {
            let values = |t: &Value| {
                let mut v = t["properties"][section].clone();
                let o = v.as_object_mut().unwrap();
                o.remove("$metadata");
                o.remove("$version");
                v
            };
            assert_eq!(values(&a), values(&b), "{id} {section}");
        }
        let keys = |d: Value| d["authentication"]["symmetricKey"].clone();
        assert_eq!(
            keys(source.client.device(&id).await.unwrap().unwrap()),
            keys(target.client.device(&id).await.unwrap().unwrap()),
            "{id}: the keys travel with the export"
        );
    }

    // Imported into the hub it came from, an export changes nothing.
    let (ok, report, err) = import_cli(&source, &path).await;
    assert!(ok, "{err}");
    assert_eq!(report["unchanged"], 5, "{report}");
}

/// Lines `0..count` of a generated import, made a chunk at a time as the request body is sent.
/// After `pause_after` lines the body waits until the hub has registered devices from it: the
/// request streams (the hub applies lines while the body is still open) or the test fails.
fn generated_body(
    client: HubClient,
    count: u64,
    pause_after: u64,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    const CHUNK_LINES: u64 = 1000;
    futures_util::stream::unfold(0u64, move |next| {
        let client = client.clone();
        async move {
            if next >= count {
                return None;
            }
            if next == pause_after {
                if let Err(e) = wait_for_devices(&client).await {
                    return Some((Err(e), count));
                }
            }
            let end = (next + CHUNK_LINES).min(count);
            let mut chunk = Vec::with_capacity(80 * CHUNK_LINES as usize);
            for i in next..end {
                let line = json!({"id": format!("s-{i:06}"), "tags": {"batch": i / 1000}});
                serde_json::to_writer(&mut chunk, &line).unwrap();
                chunk.push(b'\n');
            }
            Some((Ok(bytes::Bytes::from(chunk)), end))
        }
    })
}

async fn wait_for_devices(client: &HubClient) -> std::io::Result<()> {
    let deadline = tokio::time::Instant::now() + DEADLINE * 4;
    loop {
        let stats = client
            .device_statistics()
            .await
            .map_err(std::io::Error::other)?;
        if stats["totalDeviceCount"].as_u64().unwrap_or_default() > 0 {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(std::io::Error::other(
                "the hub registered nothing while the body was open: the import does not stream",
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_100k_line_import_is_applied_while_its_body_is_still_streaming() {
    let hub = TestHub::start().await;
    let count = 100_000;
    let body = generated_body(hub.client.clone(), count, 30_000);
    let report = hub.client.import_stream(body, None).await.unwrap();
    assert_eq!(report["created"], count, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    let stats = hub.client.device_statistics().await.unwrap();
    assert_eq!(stats["totalDeviceCount"], count);
    let twin = hub.client.twin("s-099999").await.unwrap().unwrap();
    assert_eq!(twin["tags"]["batch"], 99);
}
