//! The job engine driven by a manual clock: no sleeps, every step deterministic.

use super::*;
use crate::{DeviceCommand, Hub, HubConfig};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use fleethub_core::{ErrorCode, ManualClock};
use fleethub_store::DeviceJobStatus;
use fleethub_store::{JobDeviceUpdate, JobReads, Store, StoreConfig};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tempfile::TempDir;
use tokio::sync::mpsc;

struct Fixture {
    hub: Hub,
    clock: ManualClock,
    store: Store,
    _dir: TempDir,
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

async fn fixture_with(jobs: JobsConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path().join("hub.db"))).unwrap();
    let clock = ManualClock::new(t0());
    let config = HubConfig {
        jobs: JobsConfig {
            autorun: false,
            ..jobs
        },
        ..HubConfig::default()
    };
    let hub = Hub::open(store.clone(), Arc::new(clock.clone()), config)
        .await
        .unwrap();
    Fixture {
        hub,
        clock,
        store,
        _dir: dir,
    }
}

/// An engine that updates one twin per step, so a test can act between two devices.
fn one_twin_per_step() -> JobsConfig {
    JobsConfig {
        twin_batch: 1,
        twin_batches_per_step: 1,
        ..JobsConfig::default()
    }
}

async fn fixture() -> Fixture {
    fixture_with(JobsConfig::default()).await
}

impl Fixture {
    async fn devices(&self, prefix: &str, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for i in 0..n {
            let id = format!("{prefix}{i:03}");
            self.hub
                .put_device(&id, json!({ "deviceId": id }), None)
                .await
                .unwrap();
            ids.push(id);
        }
        ids
    }

    async fn run(&self) -> StepOutcome {
        self.hub.job_engine().run_until_idle().await.unwrap()
    }

    async fn job(&self, id: &str) -> Job {
        self.hub.get_job(id).await.unwrap()
    }

    async fn stats(&self, id: &str) -> (u64, u64, u64, u64, u64) {
        let s = self.job(id).await.statistics;
        (
            s.device_count,
            s.succeeded_count,
            s.failed_count,
            s.running_count,
            s.pending_count,
        )
    }

    fn advance(&self, secs: i64) {
        self.clock.advance(ChronoDuration::seconds(secs));
    }

    async fn desired(&self, id: &str) -> Value {
        self.hub.get_twin(id).await.unwrap().desired.to_twin_json()
    }
}

fn twin_job(extra: Value) -> Value {
    let mut body = json!({
        "type": "scheduleUpdateTwin",
        "queryCondition": "*",
        "updateTwin": { "etag": "*", "properties": { "desired": { "fw": "2.0" } }, "tags": { "ring": 1 } },
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test]
async fn a_scheduled_job_waits_for_its_start_time_then_updates_every_twin() {
    let f = fixture().await;
    f.devices("d", 3).await;
    let start = fleethub_core::time::format_timestamp(t0() + ChronoDuration::seconds(60));
    let created = f
        .hub
        .create_job("j1", twin_job(json!({ "startTime": start })))
        .await
        .unwrap();
    assert_eq!(created.status, JobStatus::Scheduled);

    let idle = f.run().await;
    assert_eq!(f.job("j1").await.status, JobStatus::Scheduled);
    assert_eq!(
        idle.next_wake,
        Some(t0() + ChronoDuration::seconds(60)),
        "the engine asks to be woken at the start time"
    );
    assert!(f.desired("d000").await.get("fw").is_none());

    f.advance(59);
    f.run().await;
    assert_eq!(f.job("j1").await.status, JobStatus::Scheduled);
    f.advance(1);
    f.run().await;
    let job = f.job("j1").await;
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    assert!(job.end_time.is_some());
    assert_eq!(f.stats("j1").await, (3, 3, 0, 0, 0));
    for id in ["d000", "d001", "d002"] {
        let twin = f.hub.get_twin(id).await.unwrap();
        assert_eq!(twin.desired.values["fw"], "2.0");
        assert_eq!(twin.desired.version, 2, "one bump per device");
        assert_eq!(twin.tags["ring"], 1);
    }
    let row = f.hub.job_device("j1", "d001").await.unwrap();
    assert_eq!(row.status, DeviceJobStatus::Completed);
    assert_eq!(row.job_type, "scheduleUpdateTwin");
    assert!(row.start_time.is_some() && row.end_time.is_some());
    assert_eq!((row.outcome, row.error), (None, None));
}

#[tokio::test]
async fn rate_control_processes_exactly_n_devices_per_simulated_second() {
    let f = fixture().await;
    f.devices("d", 23).await;
    f.hub
        .create_job(
            "rate",
            twin_job(json!({ "rateControl": { "maxPerSecond": 5 } })),
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..5 {
        let idle = f.run().await;
        seen.push(f.stats("rate").await.1);
        if let Some(wake) = idle.next_wake {
            assert!(wake <= f.clock_now() + ChronoDuration::seconds(1), "{wake}");
        }
        f.advance(1);
    }
    assert_eq!(seen, vec![5, 10, 15, 20, 23]);
    assert_eq!(f.job("rate").await.status, JobStatus::Completed);
}

impl Fixture {
    fn clock_now(&self) -> DateTime<Utc> {
        use fleethub_core::Clock;
        self.clock.now()
    }
}

#[tokio::test]
async fn a_ramp_starts_slow_and_multiplies_its_rate() {
    let f = fixture().await;
    f.devices("d", 12).await;
    let rc = json!({ "maxPerSecond": 4, "ramp": { "initialPerMinute": 60, "incrementFactor": 2.0, "incrementEveryDevices": 2 } });
    f.hub
        .create_job("ramp", twin_job(json!({ "rateControl": rc })))
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..5 {
        f.run().await;
        seen.push(f.stats("ramp").await.1);
        f.advance(1);
    }
    // 1/s for two devices, then 2/s for two, then capped at 4/s.
    assert_eq!(seen, vec![1, 2, 4, 8, 12]);
}

#[tokio::test]
async fn devices_not_reached_within_max_execution_time_fail_with_a_timeout() {
    let f = fixture().await;
    f.devices("d", 10).await;
    let body =
        twin_job(json!({ "rateControl": { "maxPerSecond": 2 }, "maxExecutionTimeInSeconds": 2 }));
    f.hub.create_job("slow", body).await.unwrap();
    f.run().await;
    f.advance(1);
    f.run().await;
    assert_eq!(f.stats("slow").await, (10, 4, 0, 0, 6));
    f.advance(1);
    f.run().await;
    let job = f.job("slow").await;
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    assert_eq!(f.stats("slow").await, (10, 4, 6, 0, 0));
    let row = f.hub.job_device("slow", "d009").await.unwrap();
    assert_eq!(row.status, DeviceJobStatus::Failed);
    let error = row.error.unwrap();
    assert_eq!(error["code"], "JobTimedOut");
    assert!(
        error["description"]
            .as_str()
            .unwrap()
            .contains("maxExecutionTimeInSeconds (2)"),
        "{error}"
    );
    assert!(f.desired("d009").await.get("fw").is_none());
}

#[tokio::test]
async fn cancel_stops_a_running_job_and_cancels_its_pending_devices() {
    let f = fixture().await;
    f.devices("d", 10).await;
    let body = twin_job(json!({ "rateControl": { "maxPerSecond": 3 } }));
    f.hub.create_job("c", body).await.unwrap();
    f.run().await;
    let cancelled = f.hub.cancel_job("c").await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert_eq!(cancelled.statistics.succeeded_count, 3);
    assert_eq!(cancelled.statistics.failed_count, 7);
    assert_eq!(cancelled.statistics.canceled_count, 7);
    assert_eq!(cancelled.statistics.pending_count, 0);
    f.advance(5);
    f.run().await;
    assert_eq!(
        f.stats("c").await,
        (10, 3, 7, 0, 0),
        "nothing ran after the cancel"
    );
    let row = f.hub.job_device("c", "d009").await.unwrap();
    assert_eq!(row.status, DeviceJobStatus::Canceled);
    assert!(f.desired("d009").await.get("fw").is_none());
    let again = f.hub.cancel_job("c").await.unwrap();
    assert_eq!(
        again.status,
        JobStatus::Cancelled,
        "cancelling twice is harmless"
    );
}

#[tokio::test]
async fn cancelling_a_scheduled_job_means_it_never_starts() {
    let f = fixture().await;
    f.devices("d", 2).await;
    let start = fleethub_core::time::format_timestamp(t0() + ChronoDuration::seconds(10));
    f.hub
        .create_job("later", twin_job(json!({ "startTime": start })))
        .await
        .unwrap();
    f.hub.cancel_job("later").await.unwrap();
    f.advance(20);
    f.run().await;
    assert_eq!(f.job("later").await.status, JobStatus::Cancelled);
    assert_eq!(f.stats("later").await, (0, 0, 0, 0, 0));
    assert!(f.desired("d000").await.get("fw").is_none());
}

#[tokio::test]
async fn connected_devices_get_the_desired_patch_pushed_after_the_commit() {
    let f = fixture().await;
    f.devices("d", 3).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let conn = f.hub.device_connected("d000", tx);
    conn.set_subscriptions(false, true, false);
    f.hub.create_job("push", twin_job(json!({}))).await.unwrap();
    f.hub.job_engine().step().await.unwrap();
    let stats = f.stats("push").await;
    assert_eq!(stats.0, 3, "the snapshot holds all three devices");
    f.run().await;
    match rx.try_recv() {
        Ok(DeviceCommand::DesiredPatch { version, body }) => {
            assert_eq!(version, 2);
            let body: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body, json!({ "fw": "2.0", "$version": 2 }));
        }
        other => panic!("expected a desired patch, got {other:?}"),
    }
    drop(conn);
}

#[tokio::test]
async fn a_device_deleted_after_the_snapshot_fails_with_device_not_found() {
    let f = fixture_with(one_twin_per_step()).await;
    f.devices("d", 3).await;
    f.hub.create_job("del", twin_job(json!({}))).await.unwrap();
    f.hub.job_engine().step().await.unwrap();
    f.hub.delete_device("d002", None).await.unwrap();
    f.run().await;
    assert_eq!(f.stats("del").await, (3, 2, 1, 0, 0));
    let row = f.hub.job_device("del", "d002").await.unwrap();
    assert_eq!(row.status, DeviceJobStatus::Failed);
    assert_eq!(row.error.unwrap()["code"], "DeviceNotFound");
}

#[tokio::test]
async fn a_patch_that_breaks_a_twin_limit_fails_that_device_only() {
    let f = fixture().await;
    f.devices("d", 2).await;
    // d001's tags are already near the 8 KB limit; the job's tag pushes them over.
    let big = "x".repeat(4000);
    f.hub
        .update_twin(
            "d001",
            json!({ "tags": { "a": big.clone(), "b": big } }),
            None,
        )
        .await
        .unwrap();
    let body = json!({
        "type": "scheduleUpdateTwin",
        "queryCondition": "*",
        "updateTwin": { "tags": { "c": "y".repeat(300) } },
    });
    f.hub.create_job("limit", body).await.unwrap();
    f.run().await;
    assert_eq!(f.stats("limit").await, (2, 1, 1, 0, 0));
    let row = f.hub.job_device("limit", "d001").await.unwrap();
    assert_eq!(row.error.unwrap()["code"], "TwinSizeExceeded");
}

/// A connected fake device that answers every method call with status 200 and its own id.
fn answering_device(f: &Fixture, id: &str) -> crate::ConnectionHandle {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let conn = f.hub.device_connected(id, tx);
    conn.set_subscriptions(true, true, false);
    let (hub, id) = (f.hub.clone(), id.to_string());
    tokio::spawn(async move {
        while let Some(cmd) = rx.recv().await {
            if let DeviceCommand::MethodRequest { name, rid, .. } = cmd {
                let answer = json!({ "device": id, "method": name }).to_string();
                hub.method_response(&id, &rid, 200, answer.as_bytes());
            }
        }
    });
    conn
}

#[tokio::test]
async fn a_method_job_records_answers_and_fails_offline_devices() {
    let f = fixture().await;
    f.devices("m", 3).await;
    let _a = answering_device(&f, "m000");
    let _b = answering_device(&f, "m001");
    let body = json!({
        "type": "scheduleDeviceMethod",
        "queryCondition": "*",
        "cloudToDeviceMethod": { "methodName": "reboot", "payload": {}, "responseTimeoutInSeconds": 5, "connectTimeoutInSeconds": 0 },
    });
    f.hub.create_job("m", body).await.unwrap();
    f.run().await;
    let job = f.job("m").await;
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    assert_eq!(f.stats("m").await, (3, 2, 1, 0, 0));
    let row = f.hub.job_device("m", "m001").await.unwrap();
    assert_eq!(row.status, DeviceJobStatus::Completed);
    assert_eq!(
        row.outcome.unwrap(),
        json!({ "deviceMethodResponse": { "status": 200, "payload": { "device": "m001", "method": "reboot" } } })
    );
    let offline = f.hub.job_device("m", "m002").await.unwrap();
    assert_eq!(offline.status, DeviceJobStatus::Failed);
    assert_eq!(offline.error.unwrap()["code"], "DeviceNotOnline");
}

#[tokio::test]
async fn method_rows_left_running_by_a_crash_are_failed_not_called_again() {
    let f = fixture().await;
    f.devices("m", 2).await;
    let body = json!({
        "type": "scheduleDeviceMethod",
        "queryCondition": "*",
        "rateControl": { "maxPerMinute": 1 },
        "cloudToDeviceMethod": { "methodName": "reboot", "connectTimeoutInSeconds": 0 },
    });
    f.hub.create_job("crash", body).await.unwrap();
    // Take the snapshot, then pretend a call was in flight when the hub died.
    f.hub.job_engine().step().await.unwrap();
    f.hub.job_engine().run_until_idle().await.unwrap();
    f.store
        .write(|tx| {
            let running = JobDeviceUpdate {
                status: DeviceJobStatus::Running,
                start_time: Some("t"),
                end_time: None,
                updated_time: "t",
                outcome: None,
                error: None,
            };
            tx.update_job_device("crash", "m001", &running)
        })
        .await
        .unwrap();
    let failed = f.hub.job_engine().recover().await.unwrap();
    assert_eq!(failed, 1);
    let row = f.hub.job_device("crash", "m001").await.unwrap();
    assert_eq!(row.status, DeviceJobStatus::Failed);
    assert_eq!(row.error.unwrap()["code"], "JobInterrupted");
}

#[tokio::test]
async fn jobs_beyond_the_concurrency_limit_wait_queued() {
    let f = fixture_with(JobsConfig {
        max_concurrent: 1,
        ..JobsConfig::default()
    })
    .await;
    f.devices("d", 4).await;
    let slow = twin_job(json!({ "rateControl": { "maxPerSecond": 2 } }));
    f.hub.create_job("first", slow).await.unwrap();
    f.hub
        .create_job("second", twin_job(json!({})))
        .await
        .unwrap();
    f.run().await;
    assert_eq!(f.job("first").await.status, JobStatus::Running);
    assert_eq!(f.job("second").await.status, JobStatus::Queued);
    f.advance(1);
    f.run().await;
    assert_eq!(f.job("first").await.status, JobStatus::Completed);
    assert_eq!(f.job("second").await.status, JobStatus::Completed);
}

#[tokio::test]
async fn invalid_jobs_and_duplicate_ids_are_refused() {
    let f = fixture().await;
    f.hub.create_job("dup", twin_job(json!({}))).await.unwrap();
    let dup = f
        .hub
        .create_job("dup", twin_job(json!({})))
        .await
        .unwrap_err();
    assert_eq!(dup.code, ErrorCode::JobAlreadyExists);
    assert_eq!(dup.code.http_status(), 409);
    let bad_id = f
        .hub
        .create_job("a_b", twin_job(json!({})))
        .await
        .unwrap_err();
    assert_eq!(bad_id.code, ErrorCode::JobInvalid);
    let missing = f.hub.get_job("nope").await.unwrap_err();
    assert_eq!(missing.code, ErrorCode::JobNotFound);
    let missing = f.hub.cancel_job("nope").await.unwrap_err();
    assert_eq!(missing.code, ErrorCode::JobNotFound);
}

#[tokio::test]
async fn job_lists_filter_by_type_and_status_and_page_with_a_token() {
    let f = fixture().await;
    for i in 0..5 {
        f.hub
            .create_job(&format!("t{i}"), twin_job(json!({})))
            .await
            .unwrap();
        f.advance(1);
    }
    let method = json!({
        "type": "scheduleDeviceMethod",
        "queryCondition": "*",
        "cloudToDeviceMethod": { "methodName": "x" },
        "startTime": fleethub_core::time::format_timestamp(t0() + ChronoDuration::days(1)),
    });
    f.hub.create_job("m0", method).await.unwrap();
    let first = f
        .hub
        .query_jobs(JobQuery {
            job_type: Some("scheduleUpdateTwin".into()),
            page_size: Some(3),
            ..JobQuery::default()
        })
        .await
        .unwrap();
    let ids: Vec<_> = first.items.iter().map(|j| j.job_id.clone()).collect();
    assert_eq!(ids, ["t0", "t1", "t2"]);
    let rest = f
        .hub
        .query_jobs(JobQuery {
            job_type: Some("scheduleUpdateTwin".into()),
            page_size: Some(3),
            continuation_token: first.continuation_token,
            ..JobQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 2);
    assert!(rest.continuation_token.is_none());
    let scheduled = f
        .hub
        .query_jobs(JobQuery {
            job_status: Some("scheduled".into()),
            ..JobQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(scheduled.items.len(), 1);
    assert_eq!(scheduled.items[0].job_id, "m0");
    let bad = f
        .hub
        .query_jobs(JobQuery {
            job_status: Some("sleeping".into()),
            ..JobQuery::default()
        })
        .await
        .unwrap_err();
    assert!(bad.message.contains("'sleeping'"), "{}", bad.message);
}

#[tokio::test]
async fn finished_jobs_are_pruned_after_their_retention() {
    let f = fixture_with(JobsConfig {
        retention: std::time::Duration::from_secs(3600),
        ..JobsConfig::default()
    })
    .await;
    f.devices("d", 2).await;
    f.hub.create_job("old", twin_job(json!({}))).await.unwrap();
    f.run().await;
    f.advance(1800);
    assert_eq!(f.hub.prune_jobs().await.unwrap(), 0);
    f.advance(1801);
    assert_eq!(f.hub.prune_jobs().await.unwrap(), 1);
    assert_eq!(
        f.hub.get_job("old").await.unwrap_err().code,
        ErrorCode::JobNotFound
    );
    let rows = f
        .store
        .read(|r| r.list_job_devices("old", None, 10))
        .await
        .unwrap();
    assert!(rows.is_empty());
}

/// Throughput of a twin job over many devices: `FLEETHUB_JOB_DEVICES=1000000 cargo test -p
/// fleethub-hub --release twin_job_throughput -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark; run on demand in release mode"]
async fn twin_job_throughput() {
    let n: usize = std::env::var("FLEETHUB_JOB_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let batch = std::env::var("FLEETHUB_JOB_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(JobsConfig::default().twin_batch);
    let f = fixture_with(JobsConfig {
        twin_batch: batch,
        ..JobsConfig::default()
    })
    .await;
    let template = f.hub.get_device("x").await.err();
    assert!(template.is_some());
    let started = std::time::Instant::now();
    for chunk in 0..n.div_ceil(10_000) {
        f.store
            .write(move |tx| -> fleethub_core::HubResult<()> {
                for i in chunk * 10_000..((chunk + 1) * 10_000).min(n) {
                    let id = format!("dev-{i:07}");
                    let device: crate::Device =
                        serde_json::from_value(json!({ "deviceId": id })).unwrap();
                    tx.insert_device(&crate::twin::new_device_row(
                        &device,
                        "2026-01-01T00:00:00.0000000Z",
                    ))?;
                }
                Ok(())
            })
            .await
            .unwrap();
    }
    eprintln!("seeded {n} devices in {:?}", started.elapsed());
    let started = std::time::Instant::now();
    let mut body = twin_job(json!({}));
    if std::env::var_os("FLEETHUB_JOB_TAGS").is_none() {
        body["updateTwin"] = json!({ "properties": { "desired": { "fw": "2.0" } } });
    }
    f.hub.create_job("big", body).await.unwrap();
    f.run().await;
    let elapsed = started.elapsed();
    assert_eq!(f.stats("big").await, (n as u64, n as u64, 0, 0, 0));
    eprintln!(
        "twin job over {n} devices: {elapsed:?}, {:.0} devices/s",
        n as f64 / elapsed.as_secs_f64()
    );
}

#[tokio::test]
async fn the_query_condition_selects_the_snapshot_and_a_bad_one_is_refused() {
    let f = fixture().await;
    f.devices("d", 4).await;
    f.hub
        .update_twin("d003", json!({ "tags": { "site": "north" } }), None)
        .await
        .unwrap();
    let by_id = twin_job(json!({ "queryCondition": "deviceId IN ['d000', 'd002']" }));
    f.hub.create_job("ids", by_id).await.unwrap();
    let by_tag = twin_job(json!({ "queryCondition": "tags.site = 'north'" }));
    f.hub.create_job("tags", by_tag).await.unwrap();
    f.run().await;
    assert_eq!(f.stats("ids").await, (2, 2, 0, 0, 0));
    assert_eq!(f.stats("tags").await, (1, 1, 0, 0, 0));
    assert!(f.hub.job_device("ids", "d001").await.is_err());
    assert!(f.desired("d001").await.get("fw").is_none());

    let bad = twin_job(json!({ "queryCondition": "tags.site = = 'x'" }));
    let err = f.hub.create_job("bad", bad).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidQuery);
    assert!(
        err.message.contains('^'),
        "the parser's caret: {}",
        err.message
    );
}

#[tokio::test]
async fn a_twin_patched_between_a_batch_read_and_its_write_keeps_both_changes() {
    let f = fixture_with(one_twin_per_step()).await;
    f.devices("d", 3).await;
    let body = json!({
        "type": "scheduleUpdateTwin",
        "queryCondition": "*",
        "updateTwin": { "etag": "*", "properties": { "desired": { "fw": "2.0" } } },
    });
    f.hub.create_job("race", body).await.unwrap();
    // One step starts the job, takes its snapshot and updates d000.
    f.hub.job_engine().step().await.unwrap();
    let row = f.store.read(|r| r.get_job("race")).await.unwrap().unwrap();
    let doc = super::document::JobDocument::from_row(&row).unwrap();
    let update = doc.update_twin.clone().unwrap();
    let prepared = super::twin_batch::prepare(&f.hub, &doc, &update, None, 10)
        .await
        .unwrap();
    assert_eq!(prepared.len(), 2);
    // An operator's PATCH lands on d001 after the batch was read and merged.
    f.hub
        .update_twin(
            "d001",
            json!({ "properties": { "desired": { "led": 1 } } }),
            None,
        )
        .await
        .unwrap();
    let written = super::twin_batch::commit(&f.hub, &doc, &update, prepared)
        .await
        .unwrap();
    assert_eq!(written, 2);
    let conflicts = f.hub.metrics().write_conflicts.load(Ordering::Relaxed);
    assert_eq!(
        conflicts, 1,
        "d001's write lost to the PATCH and was merged again"
    );
    let twin = f.hub.get_twin("d001").await.unwrap();
    assert_eq!(twin.desired.values["fw"], "2.0");
    assert_eq!(twin.desired.values["led"], 1);
    assert_eq!(twin.desired.version, 3);
    let untouched = f.hub.get_twin("d002").await.unwrap();
    assert_eq!(untouched.desired.version, 2);
    // The stale batch is not applied twice when the engine runs on.
    f.run().await;
    assert_eq!(f.stats("race").await, (3, 3, 0, 0, 0));
    let twin = f.hub.get_twin("d001").await.unwrap();
    assert_eq!(twin.desired.version, 3);
}

// The device-operation layer, as the next engines (rollouts, configurations) call it.

fn desired_fw(version: &str) -> DeviceAction {
    let desired = json!({ "fw": version }).as_object().unwrap().clone();
    DeviceAction::UpdateTwin(TwinUpdate {
        tags: None,
        desired: Some(desired),
    })
}

fn listed(id: &str, targets: Vec<DeviceTarget>, action: DeviceAction) -> OperationSpec {
    OperationSpec::new(
        JobId::parse(id).unwrap(),
        DeviceSet::Listed(targets),
        action,
    )
}

#[tokio::test]
async fn an_operation_over_100000_listed_ids_drops_duplicates_and_fails_unknown_ids_per_device() {
    let f = fixture().await;
    let known = f.devices("d", 20).await;
    let mut targets: Vec<DeviceTarget> = (0..99_980)
        .map(|i| DeviceTarget::new(format!("ghost-{i:05}")))
        .collect();
    targets.extend(known.iter().map(DeviceTarget::new));
    // Every known id twice: the first entry counts, the second is dropped.
    targets.extend(known.iter().map(DeviceTarget::new));
    assert_eq!(targets.len(), 100_020);
    let created = f
        .hub
        .create_operation(listed("big", targets, desired_fw("3.0")))
        .await
        .unwrap();
    assert_eq!((created.listed, created.duplicates), (100_000, 20));
    assert_eq!(created.unknown.len(), 99_980);
    assert_eq!(created.unknown[0], "ghost-00000");
    assert_eq!(created.job.query_condition, "");

    f.run().await;
    let (count, succeeded, failed, running, pending) = f.stats("big").await;
    assert_eq!((count, succeeded, failed), (100_000, 20, 99_980));
    assert_eq!((running, pending), (0, 0));
    assert_eq!(f.job("big").await.status, JobStatus::Completed);
    assert_eq!(f.desired("d019").await["fw"], "3.0");
    let ghost = f.hub.job_device("big", "ghost-04242").await.unwrap();
    assert_eq!(ghost.status, DeviceJobStatus::Failed);
    assert_eq!(ghost.error.unwrap()["code"], "DeviceNotFound");
}

#[tokio::test]
async fn a_listed_operation_with_a_bad_id_is_refused_whole_and_writes_nothing() {
    let f = fixture().await;
    f.devices("d", 2).await;
    let targets = vec![
        DeviceTarget::new("d000"),
        DeviceTarget::new("d001"),
        DeviceTarget::new("not ok"),
    ];
    let e = f
        .hub
        .create_operation(listed("bad", targets, desired_fw("3.0")))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidDeviceId);
    assert!(
        e.message.starts_with("device list entry 2: "),
        "{}",
        e.message
    );
    assert_eq!(
        f.hub.get_job("bad").await.unwrap_err().code,
        ErrorCode::JobNotFound
    );
    // A patch a job could not apply is refused before anything is stored.
    let empty = DeviceAction::UpdateTwin(TwinUpdate {
        tags: None,
        desired: None,
    });
    let e = f
        .hub
        .create_operation(listed("bad", vec![DeviceTarget::new("d000")], empty))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::JobInvalid);
}

#[tokio::test]
async fn listed_devices_wait_for_their_not_before_time_across_a_restart() {
    let f = fixture().await;
    f.devices("d", 3).await;
    let at = |s| t0() + ChronoDuration::seconds(s);
    let targets = vec![
        DeviceTarget::new("d000"),
        DeviceTarget::not_before("d001", at(60)),
        DeviceTarget::not_before("d002", at(120)),
    ];
    f.hub
        .create_operation(listed("window", targets, desired_fw("4.0")))
        .await
        .unwrap();
    let idle = f.run().await;
    assert_eq!(
        idle.next_wake,
        Some(at(60)),
        "woken when the first window opens"
    );
    assert_eq!(f.desired("d000").await["fw"], "4.0");
    assert!(f.desired("d001").await.get("fw").is_none());
    let waiting = f.hub.job_device("window", "d001").await.unwrap();
    assert_eq!(waiting.status, DeviceJobStatus::Scheduled);
    assert_eq!(f.stats("window").await, (3, 1, 0, 0, 2));

    // A new hub over the same store: the times were persisted, not kept in memory.
    let config = HubConfig {
        jobs: JobsConfig {
            autorun: false,
            ..JobsConfig::default()
        },
        ..HubConfig::default()
    };
    let hub = Hub::open(f.store.clone(), Arc::new(f.clock.clone()), config)
        .await
        .unwrap();
    f.advance(59);
    let idle = hub.job_engine().run_until_idle().await.unwrap();
    assert_eq!(idle.next_wake, Some(at(60)), "not a second early");
    assert!(f.desired("d001").await.get("fw").is_none());
    f.advance(1);
    let idle = hub.job_engine().run_until_idle().await.unwrap();
    assert_eq!(f.desired("d001").await["fw"], "4.0");
    assert!(f.desired("d002").await.get("fw").is_none());
    assert_eq!(idle.next_wake, Some(at(120)));
    f.advance(60);
    hub.job_engine().run_until_idle().await.unwrap();
    assert_eq!(f.desired("d002").await["fw"], "4.0");
    assert_eq!(
        hub.get_job("window").await.unwrap().status,
        JobStatus::Completed
    );
}

#[tokio::test]
async fn an_operation_paced_in_batches_starts_n_devices_per_interval() {
    let f = fixture().await;
    let ids = f.devices("d", 5).await;
    let mut spec = listed(
        "waves",
        ids.iter().map(DeviceTarget::new).collect(),
        desired_fw("5.0"),
    );
    spec.pace = Some(Pace::batch(2, std::time::Duration::from_secs(60)).unwrap());
    f.hub.create_operation(spec).await.unwrap();
    let mut done = Vec::new();
    for _ in 0..3 {
        let idle = f.run().await;
        done.push(f.stats("waves").await.1);
        f.advance(30);
        f.run().await;
        assert_eq!(
            f.stats("waves").await.1,
            *done.last().unwrap(),
            "mid-interval"
        );
        if let Some(wake) = idle.next_wake {
            assert_eq!(wake, f.clock_now() + ChronoDuration::seconds(30));
        }
        f.advance(30);
    }
    assert_eq!(done, vec![2, 4, 5]);
    assert_eq!(f.job("waves").await.status, JobStatus::Completed);
}

/// Everything a subscriber has heard so far.
fn heard(rx: &mut mpsc::UnboundedReceiver<OperationNotice>) -> Vec<OperationNotice> {
    let mut out = Vec::new();
    while let Ok(n) = rx.try_recv() {
        out.push(n);
    }
    out
}

fn device_notice(op: &str, id: &str, status: DeviceJobStatus) -> OperationNotice {
    OperationNotice::DeviceFinished {
        operation: op.into(),
        device_id: id.into(),
        status,
    }
}

#[tokio::test]
async fn a_subscriber_hears_every_device_and_the_operation_once_each_in_commit_order() {
    let f = fixture_with(one_twin_per_step()).await;
    f.devices("d", 3).await;
    let mut rx = f.hub.subscribe_operations();
    let targets = ["d002", "nope", "d000", "d001"]
        .into_iter()
        .map(DeviceTarget::new)
        .collect();
    f.hub
        .create_operation(listed("op", targets, desired_fw("6.0")))
        .await
        .unwrap();
    assert_eq!(
        heard(&mut rx),
        vec![device_notice("op", "nope", DeviceJobStatus::Failed)],
        "the unknown id fails when the operation is created"
    );
    f.run().await;
    let done = DeviceJobStatus::Completed;
    assert_eq!(
        heard(&mut rx),
        vec![
            device_notice("op", "d000", done),
            device_notice("op", "d001", done),
            device_notice("op", "d002", done),
            OperationNotice::Finished {
                operation: "op".into(),
                status: JobStatus::Completed,
            },
        ]
    );
    f.run().await;
    assert!(heard(&mut rx).is_empty(), "nothing is announced twice");

    // A cancel announces the devices it cancels (waiting ones too), then the operation.
    let later = t0() + ChronoDuration::seconds(3600);
    let targets = vec![
        DeviceTarget::new("d000"),
        DeviceTarget::not_before("d001", later),
        DeviceTarget::not_before("d002", later),
    ];
    f.hub
        .create_operation(listed("stop", targets, desired_fw("7.0")))
        .await
        .unwrap();
    f.run().await;
    f.hub.cancel_job("stop").await.unwrap();
    f.run().await;
    let canceled = DeviceJobStatus::Canceled;
    assert_eq!(
        heard(&mut rx),
        vec![
            device_notice("stop", "d000", done),
            device_notice("stop", "d001", canceled),
            device_notice("stop", "d002", canceled),
            OperationNotice::Finished {
                operation: "stop".into(),
                status: JobStatus::Cancelled,
            },
        ]
    );
}

#[tokio::test]
async fn a_method_job_announces_each_answer_then_its_end() {
    let f = fixture().await;
    f.devices("m", 2).await;
    let _online = answering_device(&f, "m000");
    let mut rx = f.hub.subscribe_operations();
    let body = json!({
        "type": "scheduleDeviceMethod",
        "queryCondition": "*",
        "cloudToDeviceMethod": { "methodName": "reboot", "connectTimeoutInSeconds": 0 },
    });
    f.hub.create_job("calls", body).await.unwrap();
    f.run().await;
    let mut notices = heard(&mut rx);
    let last = notices.pop();
    notices.sort_by_key(|n| format!("{n:?}"));
    assert_eq!(
        notices,
        vec![
            device_notice("calls", "m000", DeviceJobStatus::Completed),
            device_notice("calls", "m001", DeviceJobStatus::Failed),
        ]
    );
    assert_eq!(
        last,
        Some(OperationNotice::Finished {
            operation: "calls".into(),
            status: JobStatus::Completed,
        })
    );
}
