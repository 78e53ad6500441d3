//! Jobs v2 end to end: twin jobs reach online devices over MQTT and offline ones on their next
//! twin GET, method jobs call online devices and fail offline ones, and a job survives `kill -9`.

use crate::harness::{eventually, next_event, spawn_hub, TestHub};
use fleethub_sim::DeviceEvent;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn job_status(hub: &TestHub, id: &str) -> Value {
    let r = hub.call(Method::GET, &format!("/jobs/v2/{id}"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body
}

async fn finished(hub: &TestHub, id: &str) -> Value {
    eventually(&format!("job {id} to finish"), || async {
        let job = job_status(hub, id).await;
        (job["status"] == "completed").then_some(job)
    })
    .await
}

#[tokio::test]
async fn a_twin_job_reaches_online_devices_at_once_and_offline_ones_on_connect() {
    let hub = TestHub::start().await;
    let (_online, mut events, _) = hub.online_device("tj-on").await;
    let offline_key = hub.create_device("tj-off").await;
    let body = json!({
        "jobId": "fw-rollout",
        "type": "scheduleUpdateTwin",
        "queryCondition": "*",
        "updateTwin": { "etag": "*", "properties": { "desired": { "fw": "2.1" } } },
    });
    let r = hub
        .call(Method::PUT, "/jobs/v2/fw-rollout", Some(body))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let (version, patch) = next_event(&mut events, "the job's desired patch", |e| match e {
        DeviceEvent::DesiredPatch { version, body } => Some((version, body)),
        _ => None,
    })
    .await;
    assert_eq!(patch["fw"], "2.1");
    assert_eq!(patch["$version"], version);

    let job = finished(&hub, "fw-rollout").await;
    assert_eq!(job["deviceJobStatistics"]["deviceCount"], 2);
    assert_eq!(job["deviceJobStatistics"]["succeededCount"], 2);

    let (late, _events) = hub.device("tj-off", &offline_key).await;
    let twin = late.get_twin().await.unwrap();
    assert_eq!(twin["desired"]["fw"], "2.1", "{twin}");
    assert_eq!(twin["desired"]["$version"], 2);
}

#[tokio::test]
async fn a_method_job_calls_online_devices_and_fails_offline_ones() {
    let hub = TestHub::start().await;
    let mut answering = Vec::new();
    for id in ["mj-1", "mj-2"] {
        let (dev, mut events, _) = hub.online_device(id).await;
        answering.push(tokio::spawn(async move {
            let (name, rid) = next_event(&mut events, "the job's call", |e| match e {
                DeviceEvent::MethodRequest { name, rid, .. } => Some((name, rid)),
                _ => None,
            })
            .await;
            dev.method_response(&rid, 200, &json!({ "ran": name }))
                .await
                .unwrap();
            dev
        }));
    }
    hub.create_device("mj-off").await;
    let body = json!({
        "type": "scheduleDeviceMethod",
        "queryCondition": "*",
        "cloudToDeviceMethod": {
            "methodName": "reboot", "payload": { "delay": 1 },
            "responseTimeoutInSeconds": 10, "connectTimeoutInSeconds": 0,
        },
    });
    let r = hub
        .call(Method::PUT, "/jobs/v2/reboot-all", Some(body))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    for task in answering {
        task.await.unwrap();
    }
    let job = finished(&hub, "reboot-all").await;
    let stats = &job["deviceJobStatistics"];
    assert_eq!(stats["deviceCount"], 3, "{job}");
    assert_eq!(stats["succeededCount"], 2, "{job}");
    assert_eq!(stats["failedCount"], 1, "{job}");
    let row = hub
        .running
        .hub
        .job_device("reboot-all", "mj-off")
        .await
        .unwrap();
    assert_eq!(row.error.unwrap()["code"], "DeviceNotOnline");
    let row = hub
        .running
        .hub
        .job_device("reboot-all", "mj-1")
        .await
        .unwrap();
    assert_eq!(
        row.outcome.unwrap(),
        json!({ "deviceMethodResponse": { "status": 200, "payload": { "ran": "reboot" } } })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twin_job_killed_mid_run_resumes_and_bumps_every_device_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let hub = spawn_hub(dir.path(), 0, 0);
    let https = hub.ready["httpsPort"].as_u64().unwrap() as u16;
    let rest = hub.client();
    let devices = 2000;
    for chunk in 0..devices / 100 {
        let entries: Vec<Value> = (chunk * 100..(chunk + 1) * 100)
            .map(|i| json!({ "id": format!("kj-{i:04}"), "importMode": "create" }))
            .collect();
        let result = rest.bulk(&entries).await.unwrap();
        assert!(result.is_successful, "{:?}", result.errors);
    }
    let job = json!({
        "type": "scheduleUpdateTwin",
        "queryCondition": "*",
        "updateTwin": { "properties": { "desired": { "mark": "job-1" } } },
        "rateControl": { "maxPerSecond": 400 },
    });
    rest.create_job("crash-job", &job).await.unwrap();

    let mut hub = hub;
    let before = eventually("the job to be part-way", || async {
        let job = rest.job("crash-job").await.ok().flatten()?;
        let done = job["deviceJobStatistics"]["succeededCount"].as_u64()?;
        (done >= 200).then_some(done)
    })
    .await;
    hub.child.kill().unwrap(); // SIGKILL, mid-job
    hub.child.wait().unwrap();
    assert!(
        before < devices as u64,
        "the kill came after the job finished"
    );

    let _hub2 = spawn_hub(dir.path(), https, 0);
    let rest = _hub2.client();
    let job = eventually("the resumed job to complete", || async {
        let job = rest.job("crash-job").await.ok().flatten()?;
        (job["status"] == "completed").then_some(job)
    })
    .await;
    let stats = &job["deviceJobStatistics"];
    assert_eq!(stats["deviceCount"], devices, "{job}");
    assert_eq!(stats["succeededCount"], devices, "{job}");
    for i in 0..devices {
        let twin = rest.twin(&format!("kj-{i:04}")).await.unwrap().unwrap();
        let desired = &twin["properties"]["desired"];
        assert_eq!(desired["mark"], "job-1", "kj-{i:04} was skipped: {desired}");
        assert_eq!(
            desired["$version"], 2,
            "kj-{i:04}: desired must be bumped exactly once: {desired}"
        );
    }
}
