//! The pure model, driven step by step without a network: a small synchronous driver feeds
//! it an in-memory image, cuts power where told, and checks after every boot that a valid
//! image is always there to boot.

use super::faults::SwitchCut;
use super::flash::SlotState;
use super::methods::AfterMethod;
use super::model::{Boot, Cut, Model, NextStep, Now, OtaCommand, StepEnd, Written};
use super::{BadFirmware, Behavior, Faults, FirmwareFailure};
use fleethub_core::firmware::{sha256_hex, DesiredFirmware, UpdateStatus};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

fn now() -> Now {
    Now {
        elapsed: Duration::from_secs(100),
        wall: UNIX_EPOCH + Duration::from_secs(1_750_000_000),
    }
}

fn image(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

fn desired(version: &str, blob: &[u8]) -> Value {
    let mut desired = DesiredFirmware {
        version: version.into(),
        url: format!("https://fw.example/{version}.bin"),
        sha256: sha256_hex(blob),
        size: blob.len() as u64,
        signature: None,
        models: Vec::new(),
    }
    .desired_section();
    desired["$version"] = json!(2);
    desired
}

fn device(faults: Faults, seed: u64) -> Model {
    let behavior = Behavior {
        faults,
        ..Behavior::default()
    };
    Model::new("dev-1", "1.0.0", Arc::new(behavior), seed)
}

/// What happened while driving a device to the end of its update.
#[derive(Debug, Default, PartialEq)]
struct Log {
    power_losses: u32,
    boots: u32,
    /// Offsets the download (re)started from.
    offsets: Vec<u64>,
    statuses: Vec<&'static str>,
}

impl Log {
    fn note(&mut self, m: &mut Model) {
        if let Some(report) = m.take_report() {
            let status = report["firmware"]["status"].as_str().unwrap_or("?");
            let status = UpdateStatus::ALL
                .into_iter()
                .find(|s| s.as_str() == status)
                .map_or("?", UpdateStatus::as_str);
            if self.statuses.last() != Some(&status) {
                self.statuses.push(status);
            }
        }
    }
}

/// Boots and follows `want` like the real driver would, until the device has nothing more
/// to do. Checks after every boot that some slot holds a valid image.
fn drive(m: &mut Model, want: &Value, blob: &[u8], chunk: usize) -> Log {
    let mut log = Log::default();
    'boot: for _ in 0..100 {
        log.boots += 1;
        let boot = m.power_on(&now());
        assert!(
            m.flash.slots.iter().any(|s| s.state == SlotState::Valid),
            "no valid slot after boot: {:?}",
            m.flash.slots
        );
        log.note(m);
        let health = match boot {
            Boot::Crashed | Boot::NoNetwork => continue 'boot,
            Boot::Dead => return log,
            Boot::Running { health_fails_after } => health_fails_after,
        };
        m.set_desired(want.clone(), 2, &now());
        if let Some(after) = health {
            assert!(m.health_check_failed(after, &now()));
            log.note(m);
            continue 'boot;
        }
        if m.ram.pending {
            m.self_test_passed(&now());
            log.note(m);
            m.evaluate_desired(&now());
        }
        log.note(m);
        loop {
            let step = m.begin_download(&now());
            log.note(m);
            match step {
                None => return log,
                Some(NextStep::Verify) => {}
                Some(NextStep::Download { offset, size, .. }) => {
                    log.offsets.push(offset);
                    let mut at = offset as usize;
                    loop {
                        let end = (at + chunk).min(size as usize);
                        match m.write_chunk(&blob[at..end], &now()) {
                            Written::More => at = end,
                            Written::Complete => break,
                            Written::PowerCut => {
                                log.power_losses += 1;
                                m.lose_power();
                                continue 'boot;
                            }
                            Written::Stale => panic!("stale chunk during a test download"),
                        }
                        log.note(m);
                    }
                }
            }
            log.note(m);
            m.mark(UpdateStatus::Verifying, &now());
            log.note(m);
            match m.verify(&now()) {
                StepEnd::Done => {}
                StepEnd::PowerCut => {
                    log.power_losses += 1;
                    m.lose_power();
                    continue 'boot;
                }
                StepEnd::Failed(_) => {
                    log.note(m);
                    continue;
                }
            }
            m.mark(UpdateStatus::Applying, &now());
            log.note(m);
            let applied = m.apply(&now());
            log.note(m);
            if applied == StepEnd::PowerCut {
                log.power_losses += 1;
                m.lose_power();
            }
            continue 'boot;
        }
    }
    panic!("device did not settle in 100 boots: {log:?}");
}

fn assert_updated(m: &Model, version: &str) {
    assert_eq!(m.running_version(), version);
    assert_eq!(m.status(), UpdateStatus::Success);
    assert_eq!(m.flash.slot(m.ram.running).state, SlotState::Valid);
    let report = m.report_patch();
    assert_eq!(report["firmware"]["current_version"], version);
    assert_eq!(report["firmware"]["status"], "success");
    assert_eq!(report["firmware"]["progress"], 100);
    assert!(report["firmware"]["error"].is_null());
    assert!(report["firmware"]["last_update_time"].is_string());
}

#[test]
fn an_update_without_faults_goes_through_every_status_in_order() {
    let blob = image(10_000);
    let mut m = device(Faults::default(), 1);
    let log = drive(&mut m, &desired("2.0.0", &blob), &blob, 512);
    assert_updated(&m, "2.0.0");
    assert_eq!(log.power_losses, 0);
    assert_eq!(
        log.statuses,
        [
            "idle",
            "downloading",
            "downloaded",
            "verifying",
            "applying",
            "rebooting",
            "verifying",
            "success"
        ]
    );
    assert_eq!(m.ram.running, 1, "the update went into slot B");
    assert_eq!(m.flash.slot(0).version, "1.0.0");
}

#[test]
fn power_loss_at_every_step_resumes_and_ends_on_the_new_version() {
    let blob = image(10_000);
    let cuts = [
        Cut::Download(0),
        Cut::Download(1),
        Cut::Download(511),
        Cut::Download(512),
        Cut::Download(4_321),
        Cut::Download(9_999),
        Cut::Verify,
        Cut::Switch(SwitchCut::BeforeBootRecord),
        Cut::Switch(SwitchCut::AfterBootRecord),
    ];
    for cut in cuts {
        let mut m = device(Faults::default(), 1);
        m.injected = Some(cut);
        let log = drive(&mut m, &desired("2.0.0", &blob), &blob, 512);
        assert_updated(&m, "2.0.0");
        assert_eq!(log.power_losses, 1, "{cut:?}: {log:?}");
        if let Cut::Download(at) = cut {
            assert_eq!(log.offsets, [0, at], "{cut:?} resumes where flash ends");
        } else {
            assert_eq!(log.offsets, [0], "{cut:?} needs no second download");
        }
    }
}

#[test]
fn random_power_losses_never_leave_a_device_unbootable() {
    let blob = image(50_000);
    let mut total_losses = 0;
    for seed in 0..50 {
        let faults = Faults {
            power_loss: 0.5,
            ..Faults::default()
        };
        let mut m = device(faults, seed);
        let log = drive(&mut m, &desired("2.0.0", &blob), &blob, 4096);
        assert_updated(&m, "2.0.0");
        total_losses += log.power_losses;
    }
    assert!(total_losses > 25, "power was lost {total_losses} times");
}

#[test]
fn a_corrupt_download_fails_then_a_full_download_succeeds() {
    let blob = image(8_000);
    let faults = Faults {
        corrupt_download: 0.5,
        ..Faults::default()
    };
    let mut retried = 0;
    for seed in 0..20 {
        let mut m = device(faults.clone(), seed);
        let log = drive(&mut m, &desired("2.0.0", &blob), &blob, 1000);
        if log.statuses.contains(&"failed") {
            retried += 1;
            assert!(
                log.offsets.iter().all(|o| *o == 0),
                "re-downloads whole: {log:?}"
            );
            assert_eq!(
                m.flash
                    .nvs
                    .last_error
                    .as_deref()
                    .map(|e| e.contains("SHA-256")),
                Some(true)
            );
        }
        if m.status() == UpdateStatus::Success {
            assert_updated(&m, "2.0.0");
        }
    }
    assert!(retried > 0, "no seed drew a corrupt download");
}

#[test]
fn a_download_that_is_always_corrupt_gives_up_on_the_old_version() {
    let blob = image(2_000);
    let faults = Faults {
        corrupt_download: 1.0,
        ..Faults::default()
    };
    let mut m = device(faults, 3);
    let log = drive(&mut m, &desired("2.0.0", &blob), &blob, 1000);
    assert_eq!(m.running_version(), "1.0.0");
    assert_eq!(m.status(), UpdateStatus::Failed);
    assert_eq!(log.offsets.len(), 5);
    let error = m.report_patch()["firmware"]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("2.0.0") && error.contains("SHA-256"),
        "{error}"
    );
}

#[test]
fn a_device_that_never_comes_back_dies_on_its_first_boot_into_the_image() {
    let blob = image(2_000);
    let faults = Faults {
        never_back: 1.0,
        ..Faults::default()
    };
    let mut m = device(faults, 5);
    let log = drive(&mut m, &desired("2.0.0", &blob), &blob, 1000);
    assert_eq!(
        log.boots, 2,
        "the first boot, then the one it never comes back from"
    );
    assert_eq!(
        log.statuses.last(),
        Some(&"rebooting"),
        "the last the hub hears: {log:?}"
    );
    // Before the update it booted as usual: the fault is about rebooting into a new image.
    let mut fresh = device(
        Faults {
            never_back: 1.0,
            ..Faults::default()
        },
        5,
    );
    assert!(matches!(fresh.power_on(&now()), Boot::Running { .. }));
}

fn bad(failure: FirmwareFailure) -> Faults {
    Faults {
        bad_firmware: vec![BadFirmware {
            version: "2.0.0".into(),
            failure,
            failed_boots: 3,
            after_s: 30.0,
        }],
        ..Faults::default()
    }
}

#[test]
fn each_bad_firmware_kind_rolls_back_to_the_old_version() {
    let blob = image(4_000);
    for failure in [
        FirmwareFailure::WifiBreaks,
        FirmwareFailure::BootLoop,
        FirmwareFailure::HealthCheckFails,
    ] {
        let mut m = device(bad(failure), 9);
        let want = desired("2.0.0", &blob);
        let log = drive(&mut m, &want, &blob, 1000);
        assert_eq!(m.running_version(), "1.0.0", "{failure:?}");
        assert_eq!(m.status(), UpdateStatus::RolledBack, "{failure:?}");
        let report = m.report_patch();
        let error = report["firmware"]["error"].as_str().unwrap();
        assert!(error.contains("2.0.0"), "{failure:?}: {error}");
        assert_eq!(m.flash.slot(1).state, SlotState::Invalid);
        // The factory boot, the bad image's boots, and the boot into the old image (for a
        // boot failure that is the fourth boot of the bad slot, which the bootloader refuses).
        let bad_boots = if failure == FirmwareFailure::HealthCheckFails {
            2
        } else {
            4
        };
        assert_eq!(log.boots, 1 + bad_boots, "{failure:?}: {log:?}");
        assert_eq!(log.statuses.last(), Some(&"rolled_back"));

        // The same desired version is not tried again…
        assert_eq!(m.set_desired(want.clone(), 3, &now()), OtaCommand::Nothing);
        m.power_on(&now());
        assert_eq!(m.set_desired(want, 3, &now()), OtaCommand::Nothing);
        // …but another one is.
        let fixed = image(4_100);
        let log = drive(&mut m, &desired("2.0.1", &fixed), &fixed, 1000);
        assert_updated(&m, "2.0.1");
        assert_eq!(log.power_losses, 0);
    }
}

/// A rollout retrying a device writes its desired firmware again, with a fresh URL: the device
/// tries the version it rolled back from once more, while the push it rolled back from, read
/// again after a restart, still changes nothing.
#[test]
fn a_new_push_of_a_version_rolled_back_from_is_tried_again() {
    let blob = image(4_000);
    let mut m = device(bad(FirmwareFailure::HealthCheckFails), 9);
    let want = desired("2.0.0", &blob);
    drive(&mut m, &want, &blob, 1000);
    assert_eq!(m.status(), UpdateStatus::RolledBack);
    m.power_on(&now());
    assert_eq!(m.set_desired(want.clone(), 3, &now()), OtaCommand::Nothing);
    let mut retry = want.clone();
    retry["firmware"]["url"] = json!("https://fw.example/2.0.0.bin?attempt=3");
    let log = drive(&mut m, &retry, &blob, 1000);
    assert!(log.statuses.contains(&"downloading"), "{log:?}");
    // Still a bad image: it rolls back again, and that push is not tried a third time.
    assert_eq!(m.status(), UpdateStatus::RolledBack);
    assert_eq!(log.statuses.last(), Some(&"rolled_back"));
    m.power_on(&now());
    assert_eq!(m.set_desired(retry, 4, &now()), OtaCommand::Nothing);
}

#[test]
fn factory_reset_returns_to_the_factory_image_in_slot_a() {
    let blob = image(3_000);
    let mut m = device(Faults::default(), 4);
    drive(&mut m, &desired("2.0.0", &blob), &blob, 1000);
    assert_updated(&m, "2.0.0");
    let reply = m.call_method(
        "set_property",
        &json!({"name": "interval", "value": 30}),
        &now(),
    );
    assert_eq!(reply.status, 200);
    let reply = m.call_method("factory_reset", &Value::Null, &now());
    assert_eq!((reply.status, reply.then), (200, AfterMethod::FactoryReset));
    m.power_on(&now());
    assert_eq!(m.running_version(), "1.0.0");
    assert_eq!(m.ram.running, 0);
    assert_eq!(m.flash.slot(1).state, SlotState::Empty);
    assert!(m.flash.nvs.settings.is_empty());
    assert_eq!(m.status(), UpdateStatus::Idle);
}

#[test]
fn a_desired_version_equal_to_the_running_one_does_nothing() {
    let blob = image(1_000);
    let mut m = device(Faults::default(), 5);
    m.power_on(&now());
    let _ = m.take_report();
    assert_eq!(
        m.set_desired(desired("1.0.0", &blob), 2, &now()),
        OtaCommand::Nothing
    );
    assert!(m.ram.ota.is_none());
    assert_eq!(m.take_report(), None);
    assert_eq!(m.begin_download(&now()), None);
}

#[test]
fn unusable_desired_firmware_is_reported_failed_naming_the_field() {
    let mut m = device(Faults::default(), 6);
    m.power_on(&now());
    let cases = [
        json!({"firmware": "2.0.0"}),
        json!({"firmware": {"version": "2", "url": "ftp://x", "sha256": "00", "size": 1}}),
        json!({"firmware": {"version": "2", "url": "https://x", "sha256": "zz", "size": 1}}),
        json!({"firmware": {"version": "2", "url": "https://x", "sha256": "00".repeat(32), "size": -1}}),
        json!({"firmware": {"version": 2}}),
    ];
    for case in cases {
        assert_eq!(m.set_desired(case.clone(), 2, &now()), OtaCommand::Nothing);
        assert_eq!(m.status(), UpdateStatus::Failed, "{case}");
        let error = m.report_patch()["firmware"]["error"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(error.contains("desired.firmware"), "{case}: {error}");
    }
}

#[test]
fn the_same_seed_repeats_the_same_faults() {
    let blob = image(20_000);
    let faults = Faults {
        power_loss: 0.4,
        corrupt_download: 0.3,
        ..Faults::default()
    };
    let run = |seed| {
        let mut m = device(faults.clone(), seed);
        let log = drive(&mut m, &desired("2.0.0", &blob), &blob, 2048);
        let telemetry: Vec<_> = (0..5).map(|_| m.sample(&now()).body).collect();
        (log, telemetry)
    };
    assert_eq!(run(11), run(11));
    let differ = (12..20).any(|seed| run(seed).0 != run(11).0);
    assert!(differ, "eight other seeds all drew the same faults");
}

#[test]
fn methods_answer_like_the_documentation_says() {
    let mut m = device(Faults::default(), 7);
    m.power_on(&now());
    let unknown = m.call_method("self_destruct", &Value::Null, &now());
    assert_eq!(unknown.status, 404);
    assert!(unknown.payload["error"]
        .as_str()
        .unwrap()
        .contains("reboot"));
    let set = m.call_method(
        "set_property",
        &json!({"name": "interval", "value": 30}),
        &now(),
    );
    assert_eq!(
        set.then,
        AfterMethod::Report(json!({"settings": {"interval": 30}}))
    );
    assert_eq!(m.telemetry_interval(), Some(Duration::from_secs(30)));
    let get = m.call_method("get_property", &json!({"name": "interval"}), &now());
    assert_eq!((get.status, get.payload["value"].clone()), (200, json!(30)));
    let bad = m.call_method(
        "set_property",
        &json!({"name": "interval", "value": 0}),
        &now(),
    );
    assert_eq!(bad.status, 400);
    let missing = m.call_method("get_property", &json!({"name": "colour"}), &now());
    assert_eq!(missing.status, 404);
    let odd = m.call_method("set_property", &json!("not an object"), &now());
    assert_eq!(odd.status, 400);
    let diag = m.call_method("diagnostics", &Value::Null, &now());
    assert_eq!(diag.status, 200);
    assert_eq!(diag.payload["slots"][0]["version"], "1.0.0");
    assert_eq!(diag.payload["slots"][1]["state"], "empty");
    assert_eq!(diag.payload["boot_count"], 1);
    assert_eq!(
        m.call_method("reboot", &Value::Null, &now()).then,
        AfterMethod::Reboot
    );
}

/// `desired.firmware` for `blob` with models and the hub's signature made with `key`.
fn signed(version: &str, blob: &[u8], key: &ring::signature::EcdsaKeyPair) -> Value {
    let mut fw = DesiredFirmware {
        version: version.into(),
        url: format!(
            "https://hub.example/v1/firmware/{}/download",
            sha256_hex(blob)
        ),
        sha256: sha256_hex(blob),
        size: blob.len() as u64,
        signature: None,
        models: vec!["esp32".into()],
    };
    fw.signature = Some(crate::firmware_key::test_sign(key, &fw));
    let mut desired = fw.desired_section();
    desired["$version"] = json!(2);
    desired
}

#[test]
fn a_bad_signature_is_refused_before_any_slot_is_touched() {
    let (pinned, key) = crate::firmware_key::test_pair();
    let (_, other_key) = crate::firmware_key::test_pair();
    let blob = image(5_000);
    let mut m = device(Faults::default(), 1);
    m.firmware_key = Some(Arc::new(pinned));
    let before = m.flash.slots.clone();
    for (want, why) in [
        (signed("2.0.0", &blob, &other_key), "does not verify"),
        (desired("2.0.0", &blob), "unsigned"),
    ] {
        let log = drive(&mut m, &want, &blob, 1000);
        assert!(log.offsets.is_empty(), "nothing was downloaded: {log:?}");
        assert_eq!(m.flash.slots, before, "no slot was erased or written");
        assert!(m.flash.download.is_none());
        assert_eq!(m.running_version(), "1.0.0");
        assert_eq!(m.status(), UpdateStatus::Failed);
        let error = m.report_patch()["firmware"]["error"].to_string();
        assert!(error.contains("2.0.0") && error.contains(why), "{error}");
        // The refusal is final for that target: reading desired again starts nothing.
        assert_eq!(m.set_desired(want, 3, &now()), OtaCommand::Nothing);
    }
    let log = drive(&mut m, &signed("2.0.0", &blob, &key), &blob, 1000);
    assert_eq!(log.offsets, [0]);
    assert_updated(&m, "2.0.0");
}

#[test]
fn the_bad_signature_fault_refuses_like_a_wrong_key() {
    let blob = image(3_000);
    let faults = Faults {
        bad_signature: 1.0,
        ..Faults::default()
    };
    let mut m = device(faults, 4);
    let log = drive(&mut m, &desired("2.0.0", &blob), &blob, 1000);
    assert!(log.offsets.is_empty(), "{log:?}");
    assert_eq!(m.flash.slot(1).state, SlotState::Empty);
    let error = m.report_patch()["firmware"]["error"].to_string();
    assert!(error.contains("does not verify"), "{error}");
}

#[test]
fn power_loss_at_a_byte_cuts_once_and_the_download_resumes_there() {
    let blob = image(9_000);
    let faults = Faults {
        power_loss_at_byte: Some(4_000),
        ..Faults::default()
    };
    let mut m = device(faults, 1);
    let log = drive(&mut m, &desired("2.0.0", &blob), &blob, 1000);
    assert_updated(&m, "2.0.0");
    assert_eq!(log.power_losses, 1);
    assert_eq!(log.offsets, [0, 4_000]);
}

#[test]
fn a_new_url_for_the_same_image_keeps_the_bytes_in_the_slot() {
    let blob = image(6_000);
    let mut m = device(Faults::default(), 1);
    m.power_on(&now());
    m.set_desired(desired("2.0.0", &blob), 2, &now());
    m.begin_download(&now());
    assert_eq!(m.write_chunk(&blob[..2_500], &now()), Written::More);
    let mut moved = desired("2.0.0", &blob);
    moved["firmware"]["url"] = json!("https://mirror.example/2.0.0.bin");
    assert_eq!(m.set_desired(moved, 3, &now()), OtaCommand::Start);
    match m.begin_download(&now()) {
        Some(NextStep::Download { url, offset, .. }) => {
            assert_eq!(
                (url.as_str(), offset),
                ("https://mirror.example/2.0.0.bin", 2_500)
            );
        }
        other => panic!("expected a resumed download, got {other:?}"),
    }
    assert_eq!(m.write_chunk(&blob[2_500..], &now()), Written::Complete);
    assert_eq!(m.verify(&now()), StepEnd::Done);
}
