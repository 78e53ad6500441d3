//! Rollouts through the hub's API, driven by hand on a manual clock: the rollout engine's passes
//! and the job engine are stepped by the test; devices are played by calls the gateway would
//! make (connect, reported patches, telemetry).

use super::engine::TwinChange;
use super::*;
use crate::connections::ConnectionHandle;
use crate::{FirmwareConfig, HubConfig, JobsConfig, TelemetryIn, UploadRequest};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use fleethub_core::firmware::{DesiredFirmware, ReportedFirmware, UpdateStatus};
use fleethub_core::ManualClock;
use fleethub_rollout::{
    Artifact, EventKind, RetrySpec, Selector, Status, Threshold, TripAction, WaveSpec, WaveStatus,
};
use fleethub_store::{Store, StoreConfig};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use tempfile::TempDir;

pub(super) struct Fixture {
    pub hub: Hub,
    pub clock: ManualClock,
    pub dir: TempDir,
    pub old_sha: String,
    pub new_sha: String,
    connections: HashMap<String, ConnectionHandle>,
}

pub(super) const OLD: &str = "1.0.0";
pub(super) const NEW: &str = "2.1.0";

async fn open_hub(dir: &TempDir, clock: &ManualClock) -> Hub {
    let store = Store::open(StoreConfig::new(dir.path().join("hub.db"))).unwrap();
    let mut firmware = FirmwareConfig::in_data_dir(dir.path());
    firmware.base_url = Some("https://hub.test".into());
    let config = HubConfig {
        jobs: JobsConfig {
            autorun: false,
            ..JobsConfig::default()
        },
        firmware: Some(firmware),
        ..HubConfig::default()
    };
    Hub::open(store, Arc::new(clock.clone()), config)
        .await
        .unwrap()
}

async fn upload(hub: &Hub, version: &str) -> String {
    let mut up = hub
        .begin_firmware_upload(UploadRequest {
            version: version.into(),
            models: vec!["esp32".into()],
            ..UploadRequest::default()
        })
        .await
        .unwrap();
    up.write(format!("image {version}").as_bytes())
        .await
        .unwrap();
    up.finish().await.unwrap().artifact.manifest.sha256
}

pub(super) fn reported(version: &str, status: UpdateStatus) -> ReportedFirmware {
    ReportedFirmware {
        current_version: version.into(),
        status,
        progress: None,
        target_version: Some(NEW.into()),
        last_update_time: None,
        error: (status == UpdateStatus::Failed).then(|| "wifi unreachable after reboot".into()),
    }
}

impl Fixture {
    pub(super) async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let t0: DateTime<Utc> = "2026-12-02T12:00:00Z".parse().unwrap();
        let clock = ManualClock::new(t0);
        let hub = open_hub(&dir, &clock).await;
        let old_sha = upload(&hub, OLD).await;
        let new_sha = upload(&hub, NEW).await;
        Fixture {
            hub,
            clock,
            dir,
            old_sha,
            new_sha,
            connections: HashMap::new(),
        }
    }

    /// A kill -9 and a restart: the hub is dropped without any goodbye and opened again on
    /// the same files.
    pub(super) async fn restart(&mut self) {
        self.connections.clear();
        let hub = open_hub(&self.dir, &self.clock).await;
        self.hub = hub;
    }

    pub(super) async fn device(&mut self, id: &str, tags: serde_json::Value) {
        self.hub
            .put_device(id, json!({ "deviceId": id }), None)
            .await
            .unwrap();
        self.hub
            .update_twin(id, json!({ "tags": tags }), None)
            .await
            .unwrap();
        self.report(id, &reported(OLD, UpdateStatus::Idle)).await;
        self.connect(id);
    }

    pub(super) fn connect(&mut self, id: &str) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        std::mem::forget(rx);
        self.connections.remove(id);
        let handle = self.hub.device_connected(id, tx);
        self.connections.insert(id.to_string(), handle);
    }

    pub(super) async fn report(&self, id: &str, fw: &ReportedFirmware) {
        let patch = serde_json::to_vec(&fw.reported_patch()).unwrap();
        self.hub.device_report(id, &patch).await.unwrap();
    }

    pub(super) async fn telemetry(&self, id: &str) {
        self.telemetry_with_id(id, None).await;
    }

    pub(super) async fn telemetry_with_id(&self, id: &str, message_id: Option<&str>) {
        let msg = TelemetryIn {
            message_id: message_id.map(str::to_string),
            properties: Vec::new(),
            body: bytes::Bytes::from_static(b"{\"pm25\": 3}"),
        };
        self.hub.ingest_telemetry(id, msg).await.unwrap();
    }

    /// Runs the rollout engine and the operations it made until neither has anything to do.
    pub(super) async fn settle(&self) {
        for _ in 0..20 {
            self.hub.run_rollouts().await.unwrap();
            let out = self.hub.job_engine().run_until_idle().await.unwrap();
            let queued = self.hub.rollouts_state().queue_len();
            if !out.progressed && queued == 0 {
                return;
            }
        }
    }

    pub(super) async fn advance(&self, secs: i64) {
        self.clock.advance(ChronoDuration::seconds(secs));
        self.settle().await;
    }

    pub(super) async fn desired(&self, id: &str) -> Option<DesiredFirmware> {
        let twin = self.hub.get_twin(id).await.unwrap();
        let desired = twin.desired.to_twin_json();
        DesiredFirmware::from_desired(&desired).unwrap()
    }

    /// A device that acts on its desired firmware: installs it and reboots into it (connects
    /// again), reporting as it goes; a `bad` one reports failure instead.
    pub(super) async fn act(&mut self, id: &str, bad: bool) {
        let Some(desired) = self.desired(id).await else {
            return;
        };
        let mut fw = reported(OLD, UpdateStatus::Rebooting);
        fw.target_version = Some(desired.version.clone());
        self.report(id, &fw).await;
        if bad {
            let mut fw = reported(OLD, UpdateStatus::Failed);
            fw.target_version = Some(desired.version.clone());
            self.report(id, &fw).await;
            return;
        }
        self.connect(id);
        let mut fw = reported(&desired.version, UpdateStatus::Success);
        fw.target_version = Some(desired.version.clone());
        self.report(id, &fw).await;
    }

    pub(super) fn spec(&self, waves: Vec<WaveSpec>) -> RolloutSpec {
        RolloutSpec {
            artifact: Artifact {
                version: NEW.into(),
                sha256: self.new_sha.clone(),
            },
            target: "tags.product = 'aq'".into(),
            waves,
            soak_secs: 600,
            max_silence_secs: 300,
            device_timeout_secs: 900,
            retry: RetrySpec {
                retries: 0,
                backoff_secs: 60,
                factor: 2,
                max_backoff_secs: 600,
            },
            window: None,
            on_trip: TripAction::PauseAndRollbackWave,
            allow_downgrade: false,
            seed: None,
        }
    }
}

pub(super) fn wave(name: &str, select: Selector, failure_count: Option<u32>) -> WaveSpec {
    WaveSpec {
        name: name.into(),
        select,
        batch: None,
        success: Threshold {
            percent: Some(100.0),
            count: None,
        },
        failure: Threshold {
            percent: None,
            count: failure_count,
        },
    }
}

fn create(id: &str, spec: RolloutSpec) -> CreateRollout {
    CreateRollout {
        id: id.into(),
        spec,
        supersedes: None,
    }
}

async fn events(hub: &Hub, id: &str) -> Vec<RolloutEvent> {
    hub.rollout_events(id, 0, 1000).await.unwrap().events
}

#[tokio::test]
async fn create_checks_the_spec_the_artifact_and_the_id() {
    let f = Fixture::new().await;
    let good = f.spec(vec![wave("all", Selector::Percent(100.0), None)]);
    let code = |e: HubError| e.code;
    let mut bad = good.clone();
    bad.waves.clear();
    let e = f.hub.create_rollout(create("r1", bad)).await.unwrap_err();
    assert_eq!(code(e), ErrorCode::RolloutInvalid);
    let e = f
        .hub
        .create_rollout(create("no spaces", good.clone()))
        .await
        .unwrap_err();
    assert_eq!(code(e), ErrorCode::RolloutInvalid);
    let mut missing = good.clone();
    missing.artifact.sha256 = "ab".repeat(32);
    let e = f
        .hub
        .create_rollout(create("r1", missing))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::FirmwareNotFound, "{e}");
    let mut mislabelled = good.clone();
    mislabelled.artifact.version = "2.2.0".into();
    let e = f
        .hub
        .create_rollout(create("r1", mislabelled))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::RolloutInvalid);
    assert!(e.message.contains("holds"), "{e}");
    let mut query = good.clone();
    query.target = "tags.product = ".into();
    let e = f.hub.create_rollout(create("r1", query)).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidQuery);
    let mut wave_query = good.clone();
    wave_query.waves = vec![wave("x", Selector::Query("tags. = 1".into()), None)];
    let e = f
        .hub
        .create_rollout(create("r1", wave_query))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidQuery);
    assert!(e.message.contains("waves[0].select.query"), "{e}");
    f.hub
        .create_rollout(create("r1", good.clone()))
        .await
        .unwrap();
    let e = f.hub.create_rollout(create("r1", good)).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::RolloutAlreadyExists);
    let e = f.hub.get_rollout("nope").await.unwrap_err();
    assert_eq!(e.code, ErrorCode::RolloutNotFound);
    assert!(f.hub.list_rollouts(10).await.unwrap().len() == 1);
}

#[tokio::test]
async fn a_canary_passes_and_the_next_wave_is_pushed_through_operations() {
    let mut f = Fixture::new().await;
    for i in 0..2 {
        f.device(
            &format!("canary-{i}"),
            json!({"product": "aq", "ring": "canary"}),
        )
        .await;
    }
    for i in 0..4 {
        f.device(&format!("rest-{i}"), json!({"product": "aq"}))
            .await;
    }
    f.device("other", json!({"product": "lamp"})).await;
    let spec = f.spec(vec![
        wave(
            "canary",
            Selector::Query("tags.ring = 'canary'".into()),
            Some(0),
        ),
        wave("rest", Selector::Percent(100.0), Some(1)),
    ]);
    let view = f.hub.create_rollout(create("night", spec)).await.unwrap();
    assert_eq!(view.compliance.targeted, 6);
    assert_eq!(view.waves[0].status, WaveStatus::Running);
    assert_eq!(view.waves[0].gate.size, 2);
    assert_eq!(view.waves[0].gate.success_text, "100%");
    f.settle().await;
    // The canary's twins name the new image with a URL of their own; nobody else's does.
    let d = f.desired("canary-0").await.expect("pushed");
    assert_eq!(
        (d.version.as_str(), d.sha256.as_str()),
        (NEW, f.new_sha.as_str())
    );
    assert!(d.url.contains("canary-0"), "{}", d.url);
    assert!(d.signature.is_some());
    assert!(f.desired("rest-0").await.is_none());
    assert!(f.desired("other").await.is_none());
    for i in 0..2 {
        f.act(&format!("canary-{i}"), false).await;
    }
    f.settle().await;
    let view = f.hub.get_rollout("night").await.unwrap();
    assert_eq!(view.waves[0].counts.in_progress, 2, "soaking: {view:?}");
    // Telemetry through the soak, then the gate passes and the rest is pushed.
    for _ in 0..3 {
        for i in 0..2 {
            f.telemetry(&format!("canary-{i}")).await;
        }
        f.advance(200).await;
    }
    let view = f.hub.get_rollout("night").await.unwrap();
    assert_eq!(view.waves[0].status, WaveStatus::Passed, "{view:?}");
    assert_eq!(view.waves[1].status, WaveStatus::Running);
    for i in 0..4 {
        let d = f.desired(&format!("rest-{i}")).await.expect("rest pushed");
        assert_eq!(d.version, NEW);
    }
    let kinds: Vec<EventKind> = events(&f.hub, "night")
        .await
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        &kinds[..4],
        &[
            EventKind::Created,
            EventKind::WaveStarted,
            EventKind::GatePassed,
            EventKind::WaveStarted
        ]
    );
    // Paging: two at a time, read on by the cursor.
    let page = f.hub.rollout_events("night", 0, 2).await.unwrap();
    assert_eq!(page.events.len(), 2);
    let next = f
        .hub
        .rollout_events("night", page.next.unwrap(), 2)
        .await
        .unwrap();
    assert_eq!(next.events[0].kind, EventKind::GatePassed);
}

#[tokio::test]
async fn a_bad_image_trips_the_gate_and_its_wave_rolls_back() {
    let mut f = Fixture::new().await;
    for i in 0..3 {
        f.device(&format!("d{i}"), json!({"product": "aq"})).await;
    }
    let spec = f.spec(vec![wave("all", Selector::Percent(100.0), Some(1))]);
    f.hub.create_rollout(create("bad", spec)).await.unwrap();
    f.settle().await;
    f.act("d0", true).await;
    f.settle().await;
    let view = f.hub.get_rollout("bad").await.unwrap();
    assert_eq!(view.status, Status::Running, "1 failure is not past 1");
    f.act("d1", true).await;
    f.settle().await;
    let view = f.hub.get_rollout("bad").await.unwrap();
    assert_eq!(view.status, Status::Paused, "{view:?}");
    assert_eq!(view.waves[0].status, WaveStatus::RolledBack);
    // Every pushed device is sent back to 1.0.0, the version it ran, with its own URL.
    for i in 0..3 {
        let d = f.desired(&format!("d{i}")).await.unwrap();
        assert_eq!(
            (d.version.as_str(), d.sha256.as_str()),
            (OLD, f.old_sha.as_str())
        );
    }
    let trip = events(&f.hub, "bad")
        .await
        .into_iter()
        .find(|e| e.kind == EventKind::GateTripped)
        .unwrap();
    assert!(
        trip.message.contains("wifi unreachable"),
        "{}",
        trip.message
    );
    // Commands the state does not allow are 409.
    let e = f
        .hub
        .rollout_command("bad", RolloutCommand::Pause)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::RolloutStateConflict);
    f.hub
        .rollout_command("bad", RolloutCommand::Abort)
        .await
        .unwrap();
    let e = f
        .hub
        .rollout_command("bad", RolloutCommand::Resume)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::RolloutStateConflict);
    let e = f
        .hub
        .rollout_command("nope", RolloutCommand::Resume)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::RolloutNotFound);
}

#[tokio::test]
async fn supersede_refuses_a_downgrade_unless_asked() {
    let mut f = Fixture::new().await;
    f.device("d0", json!({"product": "aq"})).await;
    let spec = f.spec(vec![wave("all", Selector::Percent(100.0), None)]);
    f.hub.create_rollout(create("new", spec)).await.unwrap();
    let mut older = f.spec(vec![wave("all", Selector::Percent(100.0), None)]);
    older.artifact = Artifact {
        version: OLD.into(),
        sha256: f.old_sha.clone(),
    };
    let request = CreateRollout {
        id: "old".into(),
        spec: older.clone(),
        supersedes: Some("new".into()),
    };
    let e = f.hub.create_rollout(request.clone()).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::RolloutInvalid);
    assert!(e.message.contains("downgrade"), "{e}");
    older.allow_downgrade = true;
    let request = CreateRollout {
        spec: older,
        ..request
    };
    f.hub.create_rollout(request).await.unwrap();
    let superseded = f.hub.get_rollout("new").await.unwrap();
    assert_eq!(superseded.status, Status::Superseded);
}

/// Every device's journal: attempts 1..n with no gap or repeat, every one marked sent.
pub(super) async fn assert_pushed_once_per_attempt(hub: &Hub, rollout: &str, devices: &[String]) {
    for device in devices {
        let (r, d) = (rollout.to_string(), device.clone());
        let pushes = hub
            .store()
            .read(move |tx| tx.rollout_pushes_of(&r, &d))
            .await
            .unwrap();
        let attempts: Vec<u32> = pushes.iter().map(|p| p.attempt).collect();
        let expected: Vec<u32> = (1..=attempts.len() as u32).collect();
        assert_eq!(attempts, expected, "{device}");
        assert!(!attempts.is_empty(), "{device} was never pushed");
        assert!(
            pushes.iter().all(|p| p.sent_ms.is_some()),
            "{device}: {pushes:?}"
        );
    }
}

#[tokio::test]
async fn a_restart_mid_wave_goes_on_and_pushes_each_attempt_once() {
    let mut f = Fixture::new().await;
    let ids: Vec<String> = (0..6).map(|i| format!("d{i}")).collect();
    for id in &ids {
        f.device(id, json!({"product": "aq"})).await;
    }
    let mut all = wave("all", Selector::Percent(100.0), Some(3));
    all.batch = Some(fleethub_rollout::BatchSpec {
        size: 2,
        interval_secs: 600,
    });
    let spec = f.spec(vec![all]);
    f.hub.create_rollout(create("r", spec)).await.unwrap();
    // Killed before the first operation ran: its rows are in the store, nothing was written
    // to a twin yet.
    f.restart().await;
    f.settle().await;
    let pushed: Vec<&String> = {
        let mut v = Vec::new();
        for id in &ids {
            if f.desired(id).await.is_some() {
                v.push(id);
            }
        }
        v
    };
    assert_eq!(pushed.len(), 2, "one batch");
    for round in 0..4 {
        for id in &ids {
            if f.desired(id).await.is_some() {
                f.act(id, false).await;
            }
        }
        f.settle().await;
        if round % 2 == 0 {
            f.restart().await;
            for id in &ids {
                f.connect(id);
            }
        }
        for _ in 0..4 {
            for id in &ids {
                f.telemetry(id).await;
            }
            f.advance(200).await;
        }
    }
    let view = f.hub.get_rollout("r").await.unwrap();
    assert_eq!(view.status, Status::Completed, "{view:?}");
    assert_eq!(view.compliance.updated, 6);
    assert_pushed_once_per_attempt(&f.hub, "r", &ids).await;
}

#[tokio::test]
async fn a_device_that_starts_matching_joins_and_one_that_leaves_is_not_pushed() {
    let mut f = Fixture::new().await;
    f.device("canary-0", json!({"product": "aq", "ring": "canary"}))
        .await;
    f.device("rest-0", json!({"product": "aq"})).await;
    f.device("rest-1", json!({"product": "aq"})).await;
    let spec = f.spec(vec![
        wave(
            "canary",
            Selector::Query("tags.ring = 'canary'".into()),
            Some(0),
        ),
        wave("rest", Selector::Percent(100.0), Some(1)),
    ]);
    f.hub.create_rollout(create("dyn", spec)).await.unwrap();
    f.settle().await;
    // New after the rollout began, and one moving out of the target before its wave.
    f.device("late", json!({"product": "aq"})).await;
    f.hub
        .update_twin("rest-1", json!({"tags": {"product": "lamp"}}), None)
        .await
        .unwrap();
    f.settle().await;
    let records = f.hub.rollout_devices("dyn").await.unwrap();
    let state = |id: &str| {
        records
            .iter()
            .find(|d| d.id == id)
            .map(|d| (d.state, d.wave))
    };
    assert_eq!(
        state("late"),
        Some((fleethub_rollout::DeviceState::Waiting, Some(1)))
    );
    assert_eq!(
        state("rest-1").unwrap().0,
        fleethub_rollout::DeviceState::Left
    );
    f.act("canary-0", false).await;
    for _ in 0..4 {
        f.telemetry("canary-0").await;
        f.advance(200).await;
    }
    assert_eq!(f.desired("late").await.unwrap().version, NEW);
    assert_eq!(f.desired("rest-0").await.unwrap().version, NEW);
    assert!(f.desired("rest-1").await.is_none(), "left before its wave");
    let view = f.hub.get_rollout("dyn").await.unwrap();
    assert_eq!(view.totals.left, 1);
}

/// `bench rollout` found gates decided seconds after their report under a fleet's load: a pass
/// took up to 20,000 queued observations and committed once, after all of them. A pass now
/// takes a bounded chunk and commits it, so the decision does not wait for what queued behind.
#[tokio::test]
async fn a_gate_is_committed_by_the_pass_that_takes_its_report_not_after_the_backlog() {
    let mut f = Fixture::new().await;
    f.device("canary-0", json!({"product": "aq", "ring": "canary"}))
        .await;
    f.device("rest-0", json!({"product": "aq"})).await;
    let mut spec = f.spec(vec![
        wave(
            "canary",
            Selector::Query("tags.ring = 'canary'".into()),
            Some(0),
        ),
        wave("rest", Selector::Percent(100.0), Some(1)),
    ]);
    spec.soak_secs = 0;
    f.hub.create_rollout(create("busy", spec)).await.unwrap();
    f.settle().await;
    f.act("canary-0", false).await;
    // What 5,000 writes to a waiting device's twin leave behind them once committed.
    let state = f.hub.rollouts_state().clone();
    for _ in 0..5_000 {
        state.twin_changed("rest-0".into(), TwinChange::Any);
    }
    f.hub.run_rollouts().await.unwrap();
    let kinds: Vec<EventKind> = events(&f.hub, "busy")
        .await
        .iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.contains(&EventKind::GatePassed), "{kinds:?}");
    let figures = f.hub.rollout_figures();
    assert_eq!(figures.gate_decisions, 1);
    // The decision's latency in its parts (each rounded down to a microsecond).
    let parts = figures.decision_queued_sum_us
        + figures.decision_pass_sum_us
        + figures.decision_commit_sum_us;
    assert!(
        parts <= figures.decision_latency_sum_us && figures.decision_latency_sum_us <= parts + 3,
        "{figures:?}"
    );
    assert!(figures.decision_commit_sum_us > 0, "{figures:?}");
    assert!(
        state.queue_len() >= 5_000 - engine::PASS_OBSERVATIONS,
        "the backlog is left to later passes: {} queued",
        state.queue_len()
    );
    f.settle().await;
    assert_eq!(state.queue_len(), 0);
    assert_eq!(f.desired("rest-0").await.unwrap().version, NEW);
}

/// A fleet's steady reports (sensor values kept in the twin) must not cost a twin read each
/// while a rollout runs: only a report touching what the target reads is judged again.
#[tokio::test]
async fn a_report_is_judged_against_the_target_only_when_it_touches_what_the_target_reads() {
    let mut f = Fixture::new().await;
    f.device("canary-0", json!({"product": "aq", "ring": "canary"}))
        .await;
    let mut spec = f.spec(vec![
        wave(
            "canary",
            Selector::Query("tags.ring = 'canary'".into()),
            Some(0),
        ),
        wave("rest", Selector::Percent(100.0), Some(1)),
    ]);
    spec.target =
        "tags.product = 'aq' AND SEMVER(properties.reported.firmware.current_version) < '2.1.0'"
            .into();
    f.hub.create_rollout(create("fw", spec)).await.unwrap();
    f.settle().await;
    // A device already on the new version: not targeted.
    f.hub
        .put_device("late", json!({ "deviceId": "late" }), None)
        .await
        .unwrap();
    f.hub
        .update_twin("late", json!({"tags": {"product": "aq"}}), None)
        .await
        .unwrap();
    f.report("late", &reported(NEW, UpdateStatus::Idle)).await;
    f.settle().await;
    let tracked =
        |records: Vec<fleethub_rollout::DeviceRecord>| records.iter().any(|d| d.id == "late");
    assert!(!tracked(f.hub.rollout_devices("fw").await.unwrap()));
    let reads = f.hub.rollout_figures().membership_reads;
    let unqueued = f.hub.rollout_figures().unqueued_reports;
    for pm25 in 0..3 {
        let patch = json!({"sensors": {"pm25": pm25}}).to_string();
        f.hub.device_report("late", patch.as_bytes()).await.unwrap();
    }
    // `bench rollout` found a gate's report waiting behind such reports in the queue, a pass
    // dropping each unread: they are not queued at all now.
    assert_eq!(f.hub.rollouts_state().queue_len(), 0);
    assert_eq!(f.hub.rollout_figures().unqueued_reports, unqueued + 3);
    f.settle().await;
    assert_eq!(f.hub.rollout_figures().membership_reads, reads);
    // Its firmware goes back to 1.0.0: it matches the target now, and joins.
    f.report("late", &reported(OLD, UpdateStatus::Idle)).await;
    assert!(f.hub.rollouts_state().queue_len() > 0);
    f.settle().await;
    assert_eq!(f.hub.rollout_figures().membership_reads, reads + 1);
    assert!(tracked(f.hub.rollout_devices("fw").await.unwrap()));
}

/// Found with the simulator: a device that lost power sent its telemetry again under message
/// ids the hub had stored, the duplicates were not taken as signs of life, and the rollout
/// failed it as silent during the soak.
#[tokio::test]
async fn telemetry_under_a_message_id_seen_before_still_counts_as_alive() {
    let mut f = Fixture::new().await;
    f.device("d0", json!({"product": "aq"})).await;
    let spec = f.spec(vec![wave("all", Selector::Percent(100.0), Some(0))]);
    f.hub.create_rollout(create("dup", spec)).await.unwrap();
    f.settle().await;
    f.telemetry_with_id("d0", Some("m-1")).await;
    f.act("d0", false).await;
    f.settle().await;
    for _ in 0..4 {
        f.telemetry_with_id("d0", Some("m-1")).await;
        f.advance(200).await;
    }
    let view = f.hub.get_rollout("dup").await.unwrap();
    assert_eq!(view.compliance.updated, 1, "{view:?}");
    assert_eq!(view.status, Status::Completed);
}

/// Regression: a rollout no longer in memory (finished, then the hub restarted) was listed with
/// totals summed from its waves, which miss the devices no wave took.
#[tokio::test]
async fn a_listed_rollout_counts_the_devices_no_wave_took() {
    let mut f = Fixture::new().await;
    f.device("canary-0", json!({"product": "aq", "ring": "canary"}))
        .await;
    f.device("other-0", json!({"product": "aq"})).await;
    f.device("other-1", json!({"product": "aq"})).await;
    let canary = Selector::Query("tags.ring = 'canary'".into());
    let spec = f.spec(vec![wave("canary", canary, None)]);
    f.hub.create_rollout(create("ring", spec)).await.unwrap();
    f.settle().await;
    f.hub
        .rollout_command("ring", RolloutCommand::Abort)
        .await
        .unwrap();
    // The two the canary wave left over were unassigned; the abort skipped them.
    let live = f.hub.list_rollouts(10).await.unwrap().remove(0);
    assert_eq!(live.totals.skipped, 2, "{live:#?}");
    assert_eq!(live.compliance.targeted, 3);
    f.restart().await;
    let stored = f.hub.list_rollouts(10).await.unwrap().remove(0);
    assert_eq!(stored.status, Status::Aborted);
    assert_eq!(stored.totals, live.totals, "{stored:#?}");
    assert_eq!(stored.compliance, live.compliance);
}

/// Found while testing the OpenAPI routes: a rollout waiting for its maintenance window had
/// pushed nothing yet, so no twin named its artifact, and the artifact could be deleted from
/// under it.
#[tokio::test]
async fn an_artifact_a_running_rollout_will_push_cannot_be_deleted() {
    let mut f = Fixture::new().await;
    f.device("d0", json!({"product": "aq"})).await;
    let mut spec = f.spec(vec![wave("all", Selector::Percent(100.0), None)]);
    // Closed now: it opens on a leap day.
    spec.window = Some(fleethub_rollout::WindowSpec {
        cron: "0 0 29 2 *".into(),
        duration_secs: 3600,
        zone: Some("UTC".into()),
        device_zone: None,
    });
    f.hub.create_rollout(create("waiting", spec)).await.unwrap();
    f.settle().await;
    assert!(f.desired("d0").await.is_none(), "nothing pushed yet");
    let e = f.hub.delete_firmware(&f.new_sha).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::FirmwareInUse, "{e}");
    assert!(e.message.contains("rollout(s) waiting"), "{}", e.message);
    f.hub
        .rollout_command("waiting", RolloutCommand::Abort)
        .await
        .unwrap();
    f.hub.delete_firmware(&f.new_sha).await.unwrap();
}
