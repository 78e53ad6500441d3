//! Rollouts on a real hub, with the simulator's virtual ESP32 devices: each wave's pushes go out
//! as device operations, the devices download from the hub's firmware store over HTTPS with
//! their own URLs, and the engine follows their reports, reconnections and telemetry.

use crate::esp32::{
    image, register, register_through, spawn_fleet, spawn_fleet_to, store, wait_for,
    wait_for_reports, wait_for_reports_through,
};
use crate::harness::{spawn_hub, TestHub};
use fleethub_client::{FirmwareUpload, HubClient};
use fleethub_hub::rollouts::{CreateRollout, RolloutView};
use fleethub_rollout::{
    Artifact, BatchSpec, DeviceRecord, DeviceState, EventKind, RetrySpec, RolloutSpec, Selector,
    Status, Threshold, TripAction, WaveSpec, WaveStatus,
};
use fleethub_sim::esp32::{BadFirmware, Behavior, Faults, FirmwareFailure};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

async fn tag(hub: &TestHub, ids: &[String], tags: Value) {
    for id in ids {
        let r = hub
            .call(
                Method::PATCH,
                &format!("/twins/{id}"),
                Some(json!({ "tags": tags })),
            )
            .await;
        assert!(r.status.is_success(), "{id}: {} {}", r.status, r.body);
    }
}

fn wave(name: &str, ring: &str, failures: u32) -> WaveSpec {
    WaveSpec {
        name: name.into(),
        select: Selector::Query(format!("tags.ring = '{ring}'")),
        batch: None,
        success: Threshold {
            percent: Some(100.0),
            count: None,
        },
        failure: Threshold {
            percent: None,
            count: Some(failures),
        },
    }
}

/// A rollout of 2.1.0 (`sha256`) over `tags.product = 'aq'`. The hub runs on the wall clock:
/// its seconds are real ones, so the soak is short.
fn night(
    sha256: String,
    waves: Vec<WaveSpec>,
    retry: RetrySpec,
    on_trip: TripAction,
) -> RolloutSpec {
    RolloutSpec {
        artifact: Artifact {
            version: "2.1.0".into(),
            sha256,
        },
        target: "tags.product = 'aq'".into(),
        waves,
        soak_secs: 3,
        max_silence_secs: 30,
        device_timeout_secs: 60,
        retry,
        window: None,
        on_trip,
        allow_downgrade: false,
        seed: None,
    }
}

/// Waits until rollout `id` is as `done` wants it; fails with its last view.
async fn view_when(
    hub: &TestHub,
    id: &str,
    what: &str,
    done: impl Fn(&RolloutView) -> bool,
) -> RolloutView {
    let done = &done;
    wait_for(what, move || {
        let (hub, id) = (hub.running.hub.clone(), id.to_string());
        async move {
            let view = hub.get_rollout(&id).await.map_err(|e| e.to_string())?;
            if done(&view) {
                return Ok(view);
            }
            let devices = hub.rollout_devices(&id).await.map_err(|e| e.to_string())?;
            let states: Vec<String> = devices
                .iter()
                .map(|d| {
                    format!(
                        "{} {:?} v{:?} {:?} {:?}",
                        d.id, d.state, d.version, d.status, d.failure
                    )
                })
                .collect();
            Err(format!(
                "{:?} {:?}, waves {:?}, devices {states:#?}",
                view.status,
                view.reason,
                view.waves
                    .iter()
                    .map(|w| (w.status, w.counts))
                    .collect::<Vec<_>>()
            ))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_passes_then_a_bad_image_trips_its_wave_which_rolls_back() {
    let hub = TestHub::start().await;
    let old = store(&hub, "1.0.0", &image(64 * 1024, 10)).await;
    let new = store(&hub, "2.1.0", &image(64 * 1024, 11)).await;
    let sha = |a: &Value| a["sha256"].as_str().unwrap().to_string();
    let canary = register(&hub, "canary", 2).await;
    let boston = register(&hub, "boston", 4).await;
    tag(&hub, &canary, json!({"product": "aq", "ring": "canary"})).await;
    tag(&hub, &boston, json!({"product": "aq", "ring": "boston"})).await;
    let good = Behavior {
        telemetry_interval_s: 60.0,
        boot_delay_s: 2.0,
        ..Behavior::default()
    };
    // Boston's Wi-Fi breaks on 2.1.0: silent after the reboot, and after two failed boots the
    // bootloader goes back to 1.0.0.
    let wifi_breaks = Behavior {
        faults: Faults {
            bad_firmware: vec![BadFirmware {
                version: "2.1.0".into(),
                failure: FirmwareFailure::WifiBreaks,
                failed_boots: 2,
                after_s: 0.0,
            }],
            ..Faults::default()
        },
        ..good.clone()
    };
    let fleet = spawn_fleet(
        &hub,
        vec![
            (canary.clone(), "canary", good),
            (boston.clone(), "boston", wifi_breaks),
        ],
    );
    let all: Vec<String> = canary.iter().chain(&boston).cloned().collect();
    wait_for_reports(&hub, &all, "every device to report 1.0.0", |fw| {
        fw["current_version"] == "1.0.0"
    })
    .await;
    let no_retries = RetrySpec {
        retries: 0,
        backoff_secs: 1,
        factor: 1,
        max_backoff_secs: 1,
    };
    let waves = vec![wave("canary", "canary", 0), wave("boston", "boston", 1)];
    let spec = night(
        sha(&new),
        waves,
        no_retries,
        TripAction::PauseAndRollbackWave,
    );
    let rollouts = &hub.running.hub;
    rollouts
        .create_rollout(CreateRollout {
            id: "night".into(),
            spec,
            supersedes: None,
        })
        .await
        .unwrap();
    view_when(&hub, "night", "the canary to pass its gate", |v| {
        v.waves[0].status == WaveStatus::Passed
    })
    .await;
    let view = view_when(&hub, "night", "boston to trip and roll back", |v| {
        v.status == Status::Paused
            && v.waves[1].status == WaveStatus::RolledBack
            && v.waves[1].counts.rolled_back == 4
    })
    .await;
    assert_eq!(view.waves[0].counts.updated, 2, "{view:#?}");
    assert_eq!(view.compliance.updated, 2);
    assert_eq!(view.compliance.rolled_back, 4);
    // The canaries run 2.1.0; Boston runs 1.0.0 and its desired firmware says so, each twin
    // with a download URL of its own.
    wait_for_reports(&hub, &canary, "the canaries on 2.1.0", |fw| {
        fw["current_version"] == "2.1.0" && fw["status"] == "success"
    })
    .await;
    wait_for_reports(&hub, &boston, "boston back on 1.0.0", |fw| {
        fw["current_version"] == "1.0.0"
    })
    .await;
    // The rollback's pushes go out at job speed through a device operation: a device whose
    // bootloader went back by itself can be counted rolled back before its push is written.
    for id in &boston {
        let fw = wait_for("boston's desired firmware back at 1.0.0", || async {
            let twin = hub.call(Method::GET, &format!("/twins/{id}"), None).await;
            let fw = twin.body["properties"]["desired"]["firmware"].clone();
            if fw["version"] == "1.0.0" {
                Ok(fw)
            } else {
                Err(format!("{id}: {fw}"))
            }
        })
        .await;
        assert_eq!(fw["sha256"], Value::String(sha(&old)), "{id}");
        assert!(fw["url"].as_str().unwrap().contains(id.as_str()), "{fw}");
    }
    let events = rollouts
        .rollout_events("night", 0, 1000)
        .await
        .unwrap()
        .events;
    let tripped = events
        .iter()
        .find(|e| e.kind == EventKind::GateTripped)
        .expect("a trip event");
    assert_eq!(tripped.wave.as_deref(), Some("boston"));
    assert!(
        events.iter().any(|e| e.kind == EventKind::RollbackStarted),
        "{events:#?}"
    );
    // Each device was pushed once per attempt: the canaries once, Boston's devices once and
    // then once back.
    for id in &all {
        let (r, d) = ("night".to_string(), id.clone());
        let pushes = hub
            .running
            .store
            .read(move |tx| fleethub_store::RolloutReads::rollout_pushes_of(tx, &r, &d))
            .await
            .unwrap();
        let attempts: Vec<u32> = pushes.iter().map(|p| p.attempt).collect();
        let expected: &[u32] = if id.starts_with("canary") {
            &[1]
        } else {
            &[1, 2]
        };
        assert_eq!(attempts, expected, "{id}");
        assert!(
            pushes.iter().all(|p| p.sent_ms.is_some()),
            "{id}: {pushes:?}"
        );
    }
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_survives_power_loss_in_the_middle_of_its_download() {
    let hub = TestHub::start().await;
    // Power fails at random OTA steps (each device's draws are fixed by its seed).
    let old = store(&hub, "1.0.0", &image(256 * 1024, 20)).await;
    let new = store(&hub, "2.1.0", &image(64 * 1024, 21)).await;
    let sha = |a: &Value| a["sha256"].as_str().unwrap().to_string();
    let ids = register(&hub, "paris", 3).await;
    tag(&hub, &ids, json!({"product": "aq", "ring": "paris"})).await;
    let behavior = Behavior {
        telemetry_interval_s: 60.0,
        boot_delay_s: 2.0,
        faults: Faults {
            power_loss: 0.3,
            ..Faults::default()
        },
        ..Behavior::default()
    };
    let fleet = spawn_fleet(&hub, vec![(ids.clone(), "paris", behavior)]);
    wait_for_reports(&hub, &ids, "every device to report 1.0.0", |fw| {
        fw["current_version"] == "1.0.0"
    })
    .await;
    let waves = vec![wave("paris", "paris", 0)];
    let spec = night(sha(&new), waves, RetrySpec::default(), TripAction::Pause);
    let rollouts = &hub.running.hub;
    rollouts
        .create_rollout(CreateRollout {
            id: "paris".into(),
            spec,
            supersedes: None,
        })
        .await
        .unwrap();
    view_when(&hub, "paris", "the rollout to complete", |v| {
        v.status == Status::Completed && v.compliance.updated == 3
    })
    .await;
    let before = fleet.stats.snapshot().power_losses;
    rollouts
        .rollout_command(
            "paris",
            fleethub_hub::rollouts::RolloutCommand::Rollback {
                wave: Some("paris".into()),
            },
        )
        .await
        .unwrap();
    let view = view_when(&hub, "paris", "every device to be rolled back", |v| {
        v.compliance.rolled_back == 3
    })
    .await;
    assert_eq!(view.status, Status::Paused);
    assert_eq!(view.waves[0].status, WaveStatus::RolledBack);
    wait_for_reports(&hub, &ids, "every device back on 1.0.0", |fw| {
        fw["current_version"] == "1.0.0" && fw["status"] == "success"
    })
    .await;
    // Power was lost during the rollback too, and the devices came back from it.
    let after = fleet.stats.snapshot().power_losses;
    assert!(
        after > before,
        "power losses: {before} before the rollback, {after} after"
    );
    for id in &ids {
        let twin = hub.call(Method::GET, &format!("/twins/{id}"), None).await;
        let fw = &twin.body["properties"]["desired"]["firmware"];
        assert_eq!(fw["sha256"], Value::String(sha(&old)), "{id}");
    }
    fleet.stop().await;
}

/// Uploads `blob` as `version` to a hub process through its REST client; its SHA-256.
async fn upload_through(
    client: &HubClient,
    dir: &std::path::Path,
    version: &str,
    blob: &[u8],
) -> String {
    let file = dir.join(format!("{version}.bin"));
    std::fs::write(&file, blob).unwrap();
    let upload = FirmwareUpload {
        version: version.into(),
        models: vec!["esp32".into()],
        ..FirmwareUpload::default()
    };
    let (_, artifact) = client.upload_firmware(&file, &upload).await.unwrap();
    artifact["sha256"].as_str().unwrap().to_string()
}

/// A rollout in a hub process, through REST: its view and its device records.
async fn rollout_through(
    client: &HubClient,
    id: &str,
) -> Result<(Value, Vec<DeviceRecord>), String> {
    let view = client.rollout(id).await.map_err(|e| e.to_string())?;
    let view = view.ok_or_else(|| format!("no rollout {id}"))?;
    let devices = client
        .rollout_devices(id)
        .await
        .map_err(|e| e.to_string())?;
    let devices = serde_json::from_value(devices).map_err(|e| e.to_string())?;
    Ok((view, devices))
}

fn states(devices: &[DeviceRecord]) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for d in devices {
        let name = serde_json::to_value(d.state).unwrap()["state"]
            .as_str()
            .unwrap()
            .to_string();
        *by.entry(name).or_default() += 1;
    }
    by
}

/// kill -9 while a wave is under way, twice, each time with devices downloading or rebooting
/// into the image and others still waiting for their batch; the hub starts again on the same
/// data directory and ports, the simulated devices reconnect, and the rollout completes. Over
/// every device: each attempt was journalled once and written to desired once (the twin's
/// desired `$version` moved once per push), attempts are numbered 1, 2, … without a gap, and
/// every device ends updated on 2.1.0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_mid_wave_pushes_each_device_once_per_attempt_and_skips_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = spawn_hub(dir.path(), 0, 0);
    let https = hub.ready["httpsPort"].as_u64().unwrap() as u16;
    let mqtt = hub.ready["mqttPort"].as_u64().unwrap() as u16;
    let rest = hub.client();
    let ca = std::fs::read(hub.ready["caFile"].as_str().unwrap()).unwrap();
    let tls = fleethub_sim::tls_config_trusting(&ca).unwrap();

    upload_through(&rest, dir.path(), "1.0.0", &image(256 * 1024, 30)).await;
    let new = upload_through(&rest, dir.path(), "2.1.0", &image(256 * 1024, 31)).await;
    let ids = register_through(&rest, "kill", 24).await;
    for id in &ids {
        let tags = json!({"tags": {"product": "aq", "ring": "all"}});
        rest.patch_twin(id, &tags).await.unwrap();
    }
    // A download takes about a simulated minute (0.6 s of real time at the fleet's 100x), so
    // a kill finds devices in the middle of one.
    let behavior = Behavior {
        telemetry_interval_s: 60.0,
        boot_delay_s: 2.0,
        faults: Faults {
            bandwidth_bytes_per_s: Some(4 * 1024),
            ..Faults::default()
        },
        ..Behavior::default()
    };
    let fleet = spawn_fleet_to(mqtt, tls, vec![(ids.clone(), "kill", behavior)], None);
    wait_for_reports_through(&rest, &ids, "every device to report 1.0.0", |fw| {
        fw["current_version"] == "1.0.0"
    })
    .await;
    let mut desired_before = BTreeMap::new();
    for id in &ids {
        let twin = rest.twin(id).await.unwrap().unwrap();
        let version = twin["properties"]["desired"]["$version"].as_u64().unwrap();
        desired_before.insert(id.clone(), version);
    }

    // Six devices every 3 s; a failed attempt (a download cut by the kill) is retried after a
    // second, and no number of them trips the wave.
    let mut all = wave("all", "all", 1000);
    all.batch = Some(BatchSpec {
        size: 6,
        interval_secs: 3,
    });
    let retry = RetrySpec {
        retries: 5,
        backoff_secs: 1,
        factor: 1,
        max_backoff_secs: 1,
    };
    let spec = night(new, vec![all], retry, TripAction::Pause);
    rest.create_rollout("kill", &serde_json::to_value(&spec).unwrap(), None)
        .await
        .unwrap();

    // The first kill catches the first batch in flight; the second a later batch in flight
    // while earlier devices soak or are done.
    for kill in 1..=2 {
        let rest = hub.client();
        let caught = wait_for("devices in flight and devices waiting", || {
            let rest = rest.clone();
            async move {
                let (_, devices) = rollout_through(&rest, "kill").await?;
                let by = states(&devices);
                let count = |s: &str| by.get(s).copied().unwrap_or(0);
                let past = count("soaking") + count("updated");
                let later = kill == 1 || past > 0;
                if count("in_flight") > 0 && count("waiting") > 0 && later {
                    Ok(by)
                } else {
                    Err(format!("{by:?}"))
                }
            }
        })
        .await;
        hub.child.kill().unwrap(); // SIGKILL
        hub.child.wait().unwrap();
        eprintln!("kill {kill}: {caught:?}");
        // Down long enough for the devices to notice and their downloads to fail.
        tokio::time::sleep(Duration::from_secs(1)).await;
        hub = spawn_hub(dir.path(), https, mqtt);
    }

    let rest = hub.client();
    let (view, devices) = wait_for("the rollout to complete", || {
        let rest = rest.clone();
        async move {
            let (view, devices) = rollout_through(&rest, "kill").await?;
            if view["status"] == "completed" {
                return Ok((view, devices));
            }
            let mut open = Vec::new();
            for d in devices.iter().filter(|d| d.state != DeviceState::Updated) {
                let reported = crate::esp32::reported_firmware(&rest, &d.id).await;
                open.push(format!("{d:?}; reported {reported}"));
            }
            Err(format!(
                "{} {:?}: {open:#?}",
                view["status"],
                states(&devices)
            ))
        }
    })
    .await;
    assert_eq!(view["compliance"]["updated"], 24, "{view:#}");
    assert_eq!(devices.len(), 24);
    for d in &devices {
        assert_eq!(d.state, DeviceState::Updated, "{d:?}");
    }
    wait_for_reports_through(&rest, &ids, "every device on 2.1.0", |fw| {
        fw["current_version"] == "2.1.0" && fw["status"] == "success"
    })
    .await;
    let mut desired_after = BTreeMap::new();
    for id in &ids {
        let twin = rest.twin(id).await.unwrap().unwrap();
        let version = twin["properties"]["desired"]["$version"].as_u64().unwrap();
        desired_after.insert(id.clone(), version);
    }
    drop(rest);
    hub.child.kill().unwrap();
    hub.child.wait().unwrap();
    fleet.stop().await;

    // The push journal, read from the data directory the hub left.
    let store = fleethub_store::Store::open(fleethub_store::StoreConfig::new(
        dir.path().join("data").join("fleethub.db"),
    ))
    .unwrap();
    let mut retried = 0;
    for d in &devices {
        let (r, id) = ("kill".to_string(), d.id.clone());
        let pushes = store
            .read(move |tx| fleethub_store::RolloutReads::rollout_pushes_of(tx, &r, &id))
            .await
            .unwrap();
        let attempts: Vec<u32> = pushes.iter().map(|p| p.attempt).collect();
        let expected: Vec<u32> = (1..=d.attempt).collect();
        assert_eq!(attempts, expected, "{}: {pushes:?}", d.id);
        assert!(
            pushes.iter().all(|p| p.sent_ms.is_some() && !p.rollback),
            "{}: {pushes:?}",
            d.id
        );
        let written = desired_after[&d.id] - desired_before[&d.id];
        assert_eq!(
            written,
            u64::from(d.attempt),
            "{}: desired written {written} times for {} attempts",
            d.id,
            d.attempt
        );
        retried += usize::from(d.attempt > 1);
    }
    eprintln!("devices pushed more than once: {retried}");
}

/// `GET /v1/devices/{id}/rollouts`: a device in a rollout reads its attempt there, one in none
/// reads an empty history, and an unregistered id is 404 `DeviceNotFound`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_reads_its_rollout_attempts() {
    let hub = TestHub::start().await;
    let new = store(&hub, "2.1.0", &image(16 * 1024, 21)).await;
    let members = register(&hub, "member", 1).await;
    let outside = register(&hub, "outside", 1).await;
    tag(&hub, &members, json!({"product": "aq", "ring": "canary"})).await;
    let sha = new["sha256"].as_str().unwrap().to_string();
    let spec = night(
        sha,
        vec![wave("canary", "canary", 0)],
        RetrySpec::default(),
        TripAction::Pause,
    );
    hub.running
        .hub
        .create_rollout(CreateRollout {
            id: "history".into(),
            spec,
            supersedes: None,
        })
        .await
        .unwrap();
    let path = format!("/v1/devices/{}/rollouts", members[0]);
    let attempt = wait_for("the member's push to be recorded", || async {
        let r = hub.call(Method::GET, &path, None).await;
        match r.body.as_array().map(Vec::as_slice) {
            Some([one]) if one["attempt"] == 1 => Ok(one.clone()),
            _ => Err(format!("{} {}", r.status, r.body)),
        }
    })
    .await;
    assert_eq!(attempt["rollout"], "history", "{attempt}");
    assert_eq!(attempt["to_version"], "2.1.0", "{attempt}");
    assert_eq!(attempt["wave"], "canary", "{attempt}");
    assert_eq!(attempt["state"], "in_flight", "{attempt}");
    assert_eq!(attempt["rollout_status"], "running", "{attempt}");
    assert!(attempt["started"].is_string(), "{attempt}");
    assert!(attempt["finished"].is_null(), "{attempt}");

    let none = hub
        .call(
            Method::GET,
            &format!("/v1/devices/{}/rollouts", outside[0]),
            None,
        )
        .await;
    assert_eq!(none.status, 200, "{}", none.body);
    assert_eq!(none.body, json!([]));

    let unknown = hub
        .call(Method::GET, "/v1/devices/nobody-here/rollouts", None)
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert_eq!(unknown.body["errorCode"], 404001, "{}", unknown.body);
    assert!(
        unknown.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("nobody-here"),
        "{}",
        unknown.body
    );
}
