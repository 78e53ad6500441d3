//! Kill -9 at any step: the rollout is rebuilt from its rows and goes on; every push journalled
//! is handed on, under its own key, and no attempt is made twice or skipped.

use super::*;
use chrono::TimeZone as _;
use fleethub_core::firmware::{ReportedFirmware, UpdateStatus};
use fleethub_rollout::{
    BatchSpec, Command, Observation, RetrySpec, Selector, Status, Threshold, TripAction, WaveSpec,
};
use fleethub_store::StoreConfig;
use std::collections::BTreeMap;

const OLD: &str = "1.0.0";
const NEW: &str = "2.1.0";

fn spec() -> RolloutSpec {
    let wave = |name: &str, select, batch| WaveSpec {
        name: name.into(),
        select,
        batch,
        success: Threshold {
            percent: Some(100.0),
            count: None,
        },
        failure: Threshold::default(),
    };
    RolloutSpec {
        artifact: fleethub_rollout::Artifact {
            version: NEW.into(),
            sha256: "ab".repeat(32),
        },
        target: "tags.product = 'aq'".into(),
        waves: vec![
            wave("canary", Selector::Count(3), None),
            wave(
                "rest",
                Selector::Percent(100.0),
                Some(BatchSpec {
                    size: 4,
                    interval_secs: 600,
                }),
            ),
        ],
        soak_secs: 600,
        max_silence_secs: 300,
        device_timeout_secs: 900,
        retry: RetrySpec {
            retries: 2,
            backoff_secs: 60,
            factor: 2,
            max_backoff_secs: 600,
        },
        window: None,
        on_trip: TripAction::Pause,
        allow_downgrade: false,
        seed: None,
    }
}

fn firmware(version: &str, status: UpdateStatus) -> ReportedFirmware {
    ReportedFirmware {
        current_version: version.into(),
        status,
        progress: None,
        target_version: Some(NEW.into()),
        last_update_time: None,
        error: (status == UpdateStatus::Failed).then(|| "flash write error".to_string()),
    }
}

/// A device as the hub would know it: its last report (the twin) and whether it is connected.
struct Device {
    twin: ReportedFirmware,
    /// Fails the first push it acts on.
    flaky: bool,
    acted: u32,
}

/// A small deterministic generator for the crash points.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % sides
    }
}

async fn unsent(store: &Store) -> Vec<RolloutPushRow> {
    store
        .read(|r| r.unsent_rollout_pushes("r1", 1000))
        .await
        .unwrap()
}

/// Runs the rollout over 20 devices for up to six simulated hours, killing the process at
/// random points (before a step is committed, or after pushes were handed on but before they
/// were marked sent); answers how often each (device, attempt) was handed on.
async fn run_with_crashes(seed: u64) -> (BTreeMap<(String, u32), (usize, String)>, Store, u32) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.db");
    let mut store = Store::open(StoreConfig::new(&path)).unwrap();
    let t0 = Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).unwrap();
    let mut devices: BTreeMap<String, Device> = (0..20)
        .map(|i| {
            let device = Device {
                twin: firmware(OLD, UpdateStatus::Idle),
                flaky: i % 7 == 3,
                acted: 0,
            };
            (format!("d{i:02}"), device)
        })
        .collect();
    let facts = devices
        .iter()
        .map(|(id, d)| DeviceFacts {
            id: id.clone(),
            version: Some(d.twin.current_version.clone()),
            status: Some(d.twin.status),
            ..DeviceFacts::default()
        })
        .collect();
    let (mut rollout, _) = create(&store, "r1", &spec(), facts, t0).await.unwrap();
    let mut dice = Dice(seed);
    let mut handed: BTreeMap<(String, u32), (usize, String)> = BTreeMap::new();
    let mut crashes = 0;
    let mut now = t0;
    while now < t0 + chrono::Duration::hours(6) && rollout.status() == Status::Running {
        let next = now + chrono::Duration::seconds(60);
        // Hand on what the journal holds; devices act on each push once.
        let pushes = unsent(&store).await;
        let mut observed = Vec::new();
        for p in &pushes {
            let entry = handed
                .entry((p.device_id.clone(), p.attempt))
                .or_insert((0, p.version.clone()));
            entry.0 += 1;
            assert_eq!(entry.1, p.version, "a replayed push is the same push");
            let d = devices.get_mut(&p.device_id).unwrap();
            if p.attempt <= d.acted {
                continue;
            }
            d.acted = p.attempt;
            let id = p.device_id.clone();
            observed.push(Observation::Reported {
                device: id.clone(),
                firmware: firmware(OLD, UpdateStatus::Rebooting),
            });
            if d.flaky && p.attempt == 1 {
                d.twin = firmware(OLD, UpdateStatus::Failed);
            } else {
                d.twin = firmware(NEW, UpdateStatus::Success);
                observed.push(Observation::Connected { device: id.clone() });
            }
            observed.push(Observation::Reported {
                device: id,
                firmware: d.twin.clone(),
            });
        }
        let crash = dice.roll(6);
        if crash != 0 {
            let keys: Vec<(String, u32)> = pushes
                .iter()
                .map(|p| (p.device_id.clone(), p.attempt))
                .collect();
            store
                .write(move |tx| tx.mark_rollout_pushes_sent("r1", &keys, 0))
                .await
                .unwrap();
        }
        // The machine sees the reports and a minute of telemetry, then its step is committed.
        let mut step = Step::default();
        for o in observed {
            let s = rollout.observe(now, o);
            step.pushes.extend(s.pushes);
            step.events.extend(s.events);
        }
        for id in devices.keys() {
            let s = rollout.observe(now, Observation::Telemetry { device: id.clone() });
            step.events.extend(s.events);
        }
        let s = rollout.tick_through(now, next);
        step.pushes.extend(s.pushes);
        step.events.extend(s.events);
        now = next;
        if crash <= 1 {
            // Killed: nothing of this step is committed (crash 0 also lost the marks).
            crashes += 1;
            drop(rollout);
            drop(store);
            store = Store::open(StoreConfig::new(&path)).unwrap();
            rollout = load(&store, "r1").await.unwrap().expect("stored");
            // On restart the hub tells the machine what the twins and connections say now.
            // Every step is written, even one that looks empty: a restored machine pushes at
            // its first chance, and a push made but not journalled would be lost.
            let mut replay = Step::default();
            for (id, d) in &devices {
                let mut seen = Vec::new();
                if d.twin.current_version == NEW {
                    seen.push(Observation::Connected { device: id.clone() });
                }
                seen.push(Observation::Reported {
                    device: id.clone(),
                    firmware: d.twin.clone(),
                });
                for o in seen {
                    let s = rollout.observe(now, o);
                    replay.pushes.extend(s.pushes);
                    replay.events.extend(s.events);
                }
            }
            save(&store, &mut rollout, &replay, now).await.unwrap();
            continue;
        }
        save(&store, &mut rollout, &step, now).await.unwrap();
    }
    // A last round hands on what is left.
    for p in unsent(&store).await {
        handed
            .entry((p.device_id.clone(), p.attempt))
            .or_insert((0, p.version))
            .0 += 1;
    }
    assert_eq!(rollout.status(), Status::Completed, "seed {seed}");
    drop(dir);
    (handed, store, crashes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_any_step_neither_repeats_nor_skips_a_push() {
    for seed in [0x9e37_79b9_7f4a_7c15, 0xdead_beef_1234_5678] {
        let (handed, store, crashes) = run_with_crashes(seed).await;
        assert!(
            crashes > 3,
            "seed {seed}: the run was killed {crashes} times"
        );
        let mut journal = Vec::new();
        for device in (0..20).map(|i| format!("d{i:02}")) {
            let key = device.clone();
            let pushes = store
                .read(move |r| r.rollout_pushes_of("r1", &key))
                .await
                .unwrap();
            // Attempts of a device are 1, 2, … with no gap and no repeat.
            let attempts: Vec<u32> = pushes.iter().map(|p| p.attempt).collect();
            let expected: Vec<u32> = (1..=attempts.len() as u32).collect();
            assert_eq!(attempts, expected, "seed {seed}, {device}");
            journal.extend(pushes.into_iter().map(|p| (p.device_id, p.attempt)));
        }
        // Every journalled push was handed on, and nothing that was not journalled.
        let handed_keys: Vec<(String, u32)> = handed.keys().cloned().collect();
        journal.sort();
        assert_eq!(handed_keys, journal, "seed {seed}");
        // Healthy devices were pushed once; the flaky ones once more.
        let per_device = |d: &str| handed.keys().filter(|(id, _)| id == d).count();
        assert_eq!(per_device("d00"), 1, "seed {seed}");
        assert_eq!(per_device("d03"), 2, "seed {seed}");
        let rollout = load(&store, "r1").await.unwrap().unwrap();
        assert_eq!(rollout.compliance().updated, 20, "seed {seed}");
        let events = store
            .read(|r| r.rollout_events("r1", 0, 1000))
            .await
            .unwrap();
        assert_eq!(
            events.iter().filter(|e| e.kind == "completed").count(),
            1,
            "seed {seed}"
        );
    }
}

#[tokio::test]
async fn an_id_is_taken_once_and_a_bad_spec_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path().join("hub.db"))).unwrap();
    let now = Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).unwrap();
    create(&store, "r1", &spec(), Vec::new(), now)
        .await
        .unwrap();
    let err = create(&store, "r1", &spec(), Vec::new(), now)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "a rollout with id 'r1' already exists");
    let mut bad = spec();
    bad.waves.clear();
    let err = create(&store, "r2", &bad, Vec::new(), now)
        .await
        .unwrap_err();
    assert!(matches!(err, CreateError::Spec(_)), "{err}");
    assert!(load(&store, "r2").await.unwrap().is_none());
    // Commands are steps like any other.
    let mut r = load(&store, "r1").await.unwrap().unwrap();
    assert_eq!(r.status(), Status::Completed, "no devices: nothing to do");
    let step = r.command(now, Command::Abort).unwrap();
    save(&store, &mut r, &step, now).await.unwrap();
    let row = store.read(|r| r.get_rollout("r1")).await.unwrap().unwrap();
    assert_eq!(row.status, "aborted");
}
