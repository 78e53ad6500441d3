//! The machine on a manual clock: time is a value the test moves, never a sleep.

use super::*;
use crate::event::{Event, Push};
use crate::spec::{Artifact, BatchSpec, RetrySpec, Selector, Threshold, TripAction, WaveSpec};
use crate::window::WindowSpec;
use chrono::TimeZone as _;
use fleethub_core::firmware::UpdateStatus;

const V1: &str = "1.0.0";
const V2: &str = "2.1.0";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).unwrap()
}

fn wave(name: &str, select: Selector) -> WaveSpec {
    WaveSpec {
        name: name.into(),
        select,
        batch: None,
        success: Threshold {
            percent: Some(100.0),
            count: None,
        },
        // Never trips unless a test says otherwise.
        failure: Threshold::default(),
    }
}

fn spec(waves: Vec<WaveSpec>) -> RolloutSpec {
    RolloutSpec {
        artifact: Artifact {
            version: V2.into(),
            sha256: "ab".repeat(32),
        },
        target: "tags.product = 'aq-sensor'".into(),
        waves,
        soak_secs: 600,
        max_silence_secs: 300,
        device_timeout_secs: 900,
        retry: RetrySpec {
            retries: 0,
            backoff_secs: 60,
            factor: 2,
            max_backoff_secs: 3600,
        },
        window: None,
        on_trip: TripAction::Pause,
        allow_downgrade: false,
        seed: None,
    }
}

fn facts(id: &str) -> DeviceFacts {
    DeviceFacts {
        id: id.into(),
        version: Some(V1.into()),
        status: Some(UpdateStatus::Idle),
        zone: None,
        matches: Vec::new(),
    }
}

fn fleet(n: usize) -> Vec<DeviceFacts> {
    (0..n).map(|i| facts(&format!("d{i:03}"))).collect()
}

fn in_waves(id: &str, waves: &[usize]) -> DeviceFacts {
    DeviceFacts {
        matches: waves.to_vec(),
        ..facts(id)
    }
}

fn reported(version: &str, status: UpdateStatus, error: Option<&str>) -> ReportedFirmware {
    ReportedFirmware {
        current_version: version.into(),
        status,
        progress: None,
        target_version: Some(V2.into()),
        last_update_time: None,
        error: error.map(str::to_string),
    }
}

/// A rollout and the time it has been told, with what devices do.
struct Run {
    r: Rollout,
    now: DateTime<Utc>,
    pushes: Vec<Push>,
    events: Vec<Event>,
}

impl Run {
    fn new(spec: RolloutSpec, devices: Vec<DeviceFacts>) -> Run {
        let (r, step) = Rollout::create("r1", &spec, devices, t0()).unwrap();
        let mut run = Run {
            r,
            now: t0(),
            pushes: Vec::new(),
            events: Vec::new(),
        };
        run.take(step);
        run
    }

    fn take(&mut self, step: Step) {
        self.pushes.extend(step.pushes);
        self.events.extend(step.events);
    }

    /// Moves the clock to `t`, ticking at every wake on the way, as the hub's timer does.
    fn advance_to(&mut self, t: DateTime<Utc>) {
        let step = self.r.tick_through(self.now, t);
        self.now = t;
        self.take(step);
    }

    fn advance(&mut self, secs: i64) {
        self.advance_to(self.now + chrono::Duration::seconds(secs));
    }

    fn see(&mut self, o: Observation) {
        let step = self.r.observe(self.now, o);
        self.take(step);
    }

    fn command(&mut self, c: Command) {
        let step = self.r.command(self.now, c).unwrap();
        self.take(step);
    }

    /// The device reboots into the new version, reconnects and reports success.
    fn boots_new(&mut self, id: &str) {
        self.see(Observation::Reported {
            device: id.into(),
            firmware: reported(V1, UpdateStatus::Rebooting, None),
        });
        self.see(Observation::Connected { device: id.into() });
        self.see(Observation::Reported {
            device: id.into(),
            firmware: reported(V2, UpdateStatus::Success, None),
        });
    }

    fn telemetry(&mut self, id: &str) {
        self.see(Observation::Telemetry { device: id.into() });
    }

    /// Every device in flight updates, and every soaking device stays healthy through the soak.
    fn all_in_flight_update(&mut self) {
        for id in self.in_flight() {
            self.boots_new(&id);
        }
        for _ in 0..3 {
            self.advance(240);
            let soaking: Vec<String> = self
                .r
                .devices()
                .iter()
                .filter(|d| matches!(d.state, DeviceState::Soaking { .. }))
                .map(|d| d.id.clone())
                .collect();
            for id in soaking {
                self.telemetry(&id);
            }
        }
    }

    fn in_flight(&self) -> Vec<String> {
        self.r
            .devices()
            .iter()
            .filter(|d| matches!(d.state, DeviceState::InFlight { .. }))
            .map(|d| d.id.clone())
            .collect()
    }

    fn state(&self, id: &str) -> DeviceState {
        self.r.device(id).unwrap().state
    }

    fn pushed(&self, id: &str) -> Vec<u32> {
        self.pushes
            .iter()
            .filter(|p| p.device == id)
            .map(|p| p.attempt)
            .collect()
    }

    fn kinds(&self, kind: EventKind) -> Vec<&Event> {
        self.events.iter().filter(|e| e.kind == kind).collect()
    }
}

#[test]
fn a_canary_gates_the_next_wave_until_it_has_soaked() {
    let mut devices = vec![in_waves("c1", &[0]), in_waves("c2", &[0])];
    devices.extend(fleet(3));
    let mut run = Run::new(
        spec(vec![
            wave("canary", Selector::Query("tags.ring = 'canary'".into())),
            wave("rest", Selector::Percent(100.0)),
        ]),
        devices,
    );
    assert_eq!(run.pushes.len(), 2, "only the canary is pushed");
    assert_eq!(run.r.waves()[1].status, WaveStatus::Pending);
    run.boots_new("c1");
    run.boots_new("c2");
    assert!(matches!(run.state("c1"), DeviceState::Soaking { .. }));
    // Halfway through the soak nothing else moves.
    run.advance(240);
    run.telemetry("c1");
    run.telemetry("c2");
    run.advance(240);
    run.telemetry("c1");
    run.telemetry("c2");
    assert_eq!(run.pushes.len(), 2);
    assert_eq!(run.r.waves()[0].status, WaveStatus::Running);
    // At 600 s the canary has soaked: the gate passes and the rest are pushed at once.
    run.advance(120);
    assert_eq!(run.state("c1"), DeviceState::Updated);
    assert_eq!(run.r.waves()[0].status, WaveStatus::Passed);
    assert_eq!(run.r.waves()[1].status, WaveStatus::Running);
    assert_eq!(run.pushes.len(), 5);
    let passed = run.kinds(EventKind::GatePassed);
    assert_eq!(
        passed[0].message,
        "wave canary passed: 2 of 2 updated (gate 100%)"
    );
    run.all_in_flight_update();
    assert_eq!(run.r.status(), Status::Completed);
    assert_eq!(run.r.compliance().updated, 5);
    assert_eq!(run.r.compliance().targeted, 5);
}

#[test]
fn a_device_that_reports_success_without_reconnecting_is_not_healthy_yet() {
    let mut run = Run::new(spec(vec![wave("all", Selector::Percent(100.0))]), fleet(1));
    run.see(Observation::Reported {
        device: "d000".into(),
        firmware: reported(V2, UpdateStatus::Success, None),
    });
    assert!(matches!(run.state("d000"), DeviceState::InFlight { .. }));
    run.see(Observation::Connected {
        device: "d000".into(),
    });
    assert!(matches!(run.state("d000"), DeviceState::Soaking { .. }));
}

#[test]
fn silence_after_reboot_fails_the_device_at_its_timeout() {
    let mut run = Run::new(spec(vec![wave("all", Selector::Percent(100.0))]), fleet(2));
    run.see(Observation::Reported {
        device: "d000".into(),
        firmware: reported(V1, UpdateStatus::Downloading, None),
    });
    run.advance(600);
    run.see(Observation::Reported {
        device: "d000".into(),
        firmware: reported(V1, UpdateStatus::Rebooting, None),
    });
    // d001 never says anything: it fails 900 s after the push. d000 went quiet after
    // rebooting: it fails 900 s after that report.
    run.advance(300);
    assert_eq!(run.state("d001"), DeviceState::Flagged);
    assert!(matches!(run.state("d000"), DeviceState::InFlight { .. }));
    run.advance(599);
    assert!(matches!(run.state("d000"), DeviceState::InFlight { .. }));
    run.advance(1);
    assert_eq!(run.state("d000"), DeviceState::Flagged);
    let reason = run.r.device("d000").unwrap().failure.clone().unwrap();
    assert_eq!(reason, "silent after reboot: no report for 15m");
    let reason = run.r.device("d001").unwrap().failure.clone().unwrap();
    assert_eq!(reason, "no progress for 15m after the push");
}

/// Found in CI: the hub wakes at `next_wake`, a whole millisecond, and a soak that began part
/// of the way through a millisecond ended a fraction of it later. The timer fired first and the
/// device, which had sent telemetry, failed as "silent during the soak".
#[test]
fn a_soak_that_starts_mid_millisecond_ends_on_time_and_healthy() {
    let mut run = Run::new(spec(vec![wave("all", Selector::Percent(100.0))]), fleet(1));
    run.now += chrono::Duration::microseconds(400);
    run.boots_new("d000");
    let until = run.now + chrono::Duration::seconds(600);
    run.advance(250);
    run.telemetry("d000");
    run.advance(100);
    run.telemetry("d000");
    let wake = run.r.next_wake().unwrap();
    assert!(
        wake >= until,
        "woken at {wake}, before the soak ends at {until}"
    );
    // A tick at the wake, as the hub's timer makes it.
    let step = run.r.tick(wake);
    run.now = wake;
    run.take(step);
    assert_eq!(run.state("d000"), DeviceState::Updated);
    assert_eq!(run.r.device("d000").unwrap().failure, None);
}

#[test]
fn a_device_silent_during_the_soak_fails() {
    let mut run = Run::new(spec(vec![wave("all", Selector::Percent(100.0))]), fleet(2));
    run.boots_new("d000");
    run.boots_new("d001");
    run.advance(200);
    run.telemetry("d000"); // d001 sends nothing
    run.advance(200);
    run.telemetry("d000");
    assert!(matches!(run.state("d000"), DeviceState::Soaking { .. }));
    assert_eq!(run.state("d001"), DeviceState::Flagged, "300 s of silence");
    assert_eq!(
        run.r.device("d001").unwrap().failure.as_deref(),
        Some("silent during the soak: no telemetry for 5m")
    );
    // A report of a failure during the soak fails too.
    run.see(Observation::Reported {
        device: "d000".into(),
        firmware: reported(V1, UpdateStatus::RolledBack, Some("crashed on boot")),
    });
    assert_eq!(run.state("d000"), DeviceState::Flagged);
}

#[test]
fn failed_devices_retry_with_backoff_then_are_flagged() {
    let mut s = spec(vec![WaveSpec {
        failure: Threshold {
            percent: None,
            count: Some(10),
        },
        ..wave("all", Selector::Percent(100.0))
    }]);
    s.retry = RetrySpec {
        retries: 2,
        backoff_secs: 60,
        factor: 3,
        max_backoff_secs: 3600,
    };
    let mut run = Run::new(s, fleet(1));
    let fail = |run: &mut Run| {
        run.see(Observation::Reported {
            device: "d000".into(),
            firmware: reported(V1, UpdateStatus::Downloading, None),
        });
        run.see(Observation::Reported {
            device: "d000".into(),
            firmware: reported(V1, UpdateStatus::Failed, Some("sha256 mismatch")),
        })
    };
    fail(&mut run);
    assert_eq!(
        run.state("d000"),
        DeviceState::Backoff {
            until: t0() + chrono::Duration::seconds(60)
        }
    );
    assert_eq!(run.r.compliance().failed, 1);
    run.advance(59);
    assert_eq!(run.pushed("d000"), vec![1]);
    run.advance(1);
    assert_eq!(run.pushed("d000"), vec![1, 2], "retried after 60 s");
    fail(&mut run);
    run.advance(179);
    assert_eq!(run.pushed("d000"), vec![1, 2]);
    run.advance(1);
    assert_eq!(run.pushed("d000"), vec![1, 2, 3], "then after 180 s");
    fail(&mut run);
    assert_eq!(run.state("d000"), DeviceState::Flagged, "retries used up");
    assert_eq!(run.r.compliance().flagged, 1);
    let failed: Vec<_> = run.kinds(EventKind::DeviceFailed);
    assert_eq!(failed.len(), 2);
    assert!(failed[0]
        .message
        .starts_with("attempt 1 of 3 failed: sha256 mismatch"));
    assert_eq!(
        run.kinds(EventKind::DeviceFlagged)[0].message,
        "sha256 mismatch"
    );
    run.advance(86_400);
    assert_eq!(
        run.pushed("d000").len(),
        3,
        "a flagged device is not pushed again"
    );
    // An operator retry gives it a fresh set.
    run.command(Command::Retry { devices: None });
    assert_eq!(run.pushed("d000"), vec![1, 2, 3, 4]);
}

#[test]
fn the_failure_gate_trips_on_count_and_rolls_the_wave_back() {
    let mut s = spec(vec![
        WaveSpec {
            success: Threshold {
                percent: Some(98.0),
                count: None,
            },
            failure: Threshold {
                percent: Some(2.0),
                count: Some(5),
            },
            ..wave("boston", Selector::Percent(100.0))
        },
        wave("never", Selector::Percent(100.0)),
    ]);
    s.on_trip = TripAction::PauseAndRollbackWave;
    let mut run = Run::new(s, fleet(1000));
    assert_eq!(run.pushes.len(), 1000);
    // A hundred are downloading; the rest have said nothing since the push.
    for i in 100..200 {
        run.see(Observation::Reported {
            device: format!("d{i:03}"),
            firmware: reported(V1, UpdateStatus::Downloading, None),
        });
    }
    for i in 0..5 {
        run.see(Observation::Reported {
            device: format!("d{i:03}"),
            firmware: reported(
                V1,
                UpdateStatus::Failed,
                Some("wifi unreachable after reboot"),
            ),
        });
    }
    assert_eq!(
        run.r.status(),
        Status::Running,
        "5 is not past 5 (nor 0.5 % past 2 %)"
    );
    run.see(Observation::Reported {
        device: "d005".into(),
        firmware: reported(
            V1,
            UpdateStatus::Failed,
            Some("wifi unreachable after reboot"),
        ),
    });
    assert_eq!(run.r.status(), Status::Paused);
    assert_eq!(run.r.waves()[0].status, WaveStatus::RolledBack);
    let tripped = run.kinds(EventKind::GateTripped);
    assert_eq!(
        tripped[0].message,
        "wave boston tripped: 6 of 1000 failed (threshold 2% or 5 devices); most common: wifi unreachable after reboot (6)"
    );
    let rollbacks: Vec<&Push> = run.pushes.iter().filter(|p| p.rollback).collect();
    assert_eq!(rollbacks.len(), 1000, "every pushed device goes back");
    assert!(rollbacks.iter().all(|p| p.version == V1 && p.attempt == 2));
    // Those still running 1.0.0 and not mid-update are back already; the downloading ones
    // must say so.
    assert_eq!(run.r.totals().rolled_back, 900);
    assert_eq!(run.r.totals().rolling_back, 100);
    run.see(Observation::Reported {
        device: "d150".into(),
        firmware: reported(V1, UpdateStatus::Idle, None),
    });
    assert_eq!(run.state("d150"), DeviceState::RolledBack);
    // The rest never report: flagged at their timeout, and the next wave never started.
    run.advance(900);
    assert_eq!(run.r.compliance().rolled_back, 901);
    assert_eq!(run.r.compliance().flagged, 99);
    let stuck = run
        .kinds(EventKind::DeviceFlagged)
        .iter()
        .filter(|e| e.message == "rollback to 1.0.0: no progress for 15m")
        .count();
    assert_eq!(stuck, 99);
    assert_eq!(run.r.waves()[1].status, WaveStatus::Pending);
}

#[test]
fn the_success_gate_counts_percentages_of_the_wave() {
    let s = spec(vec![
        WaveSpec {
            success: Threshold {
                percent: Some(98.0),
                count: None,
            },
            failure: Threshold {
                percent: Some(5.0),
                count: None,
            },
            ..wave("first", Selector::Count(50))
        },
        wave("second", Selector::Percent(100.0)),
    ]);
    let mut run = Run::new(s, fleet(60));
    let first: Vec<String> = run.pushes.iter().map(|p| p.device.clone()).collect();
    assert_eq!(first.len(), 50);
    // 48 of 50 update; 2 fail (4 %, not past 5 %): 96 % is short of 98 %.
    for id in &first[..2] {
        run.see(Observation::Reported {
            device: id.clone(),
            firmware: reported(V1, UpdateStatus::Failed, Some("flash write error")),
        });
    }
    for id in &first[2..] {
        run.boots_new(id);
    }
    for _ in 0..3 {
        run.advance(240);
        for id in &first[2..] {
            run.telemetry(id);
        }
    }
    assert_eq!(run.r.waves()[0].counts.updated, 48);
    assert_eq!(run.r.waves()[0].status, WaveStatus::Running);
    assert_eq!(run.pushes.len(), 50);
    // An operator retry of one brings it to 49 of 50: 98 %.
    run.command(Command::Retry {
        devices: Some(vec![first[0].clone()]),
    });
    run.boots_new(&first[0]);
    for _ in 0..3 {
        run.advance(240);
        run.telemetry(&first[0]);
    }
    assert_eq!(run.r.waves()[0].status, WaveStatus::Passed);
    assert_eq!(run.pushes.len(), 61, "the second wave took the other 10");
}

#[test]
fn batches_push_n_devices_per_interval() {
    let s = spec(vec![WaveSpec {
        batch: Some(BatchSpec {
            size: 3,
            interval_secs: 3600,
        }),
        ..wave("all", Selector::Percent(100.0))
    }]);
    let mut run = Run::new(s, fleet(8));
    assert_eq!(run.pushes.len(), 3);
    // The pushed devices' timeouts come before the next batch.
    assert_eq!(
        run.r.next_wake(),
        Some(t0() + chrono::Duration::seconds(900))
    );
    run.all_in_flight_update();
    assert_eq!(run.pushes.len(), 3, "the next batch waits for its hour");
    run.advance_to(t0() + chrono::Duration::minutes(59));
    assert_eq!(run.pushes.len(), 3);
    assert_eq!(run.r.next_wake(), Some(t0() + chrono::Duration::hours(1)));
    run.advance_to(t0() + chrono::Duration::hours(1));
    assert_eq!(run.pushes.len(), 6);
    run.all_in_flight_update();
    run.advance_to(t0() + chrono::Duration::hours(2));
    assert_eq!(run.pushes.len(), 8);
    // Lowest buckets first.
    let mut buckets: Vec<u32> = run
        .pushes
        .iter()
        .map(|p| run.r.device(&p.device).unwrap().bucket)
        .collect();
    let pushed_order = buckets.clone();
    buckets.sort();
    assert_eq!(pushed_order, buckets);
}

#[test]
fn device_local_windows_push_each_device_at_its_own_night() {
    let mut s = spec(vec![wave("all", Selector::Percent(100.0))]);
    s.window = Some(WindowSpec {
        cron: "0 2 * * *".into(),
        duration_secs: 2 * 3600,
        zone: Some("America/New_York".into()),
        device_zone: Some("tags.tz".into()),
    });
    let zoned = |id: &str, tz: Option<&str>| DeviceFacts {
        zone: tz.map(str::to_string),
        ..facts(id)
    };
    let devices = vec![
        zoned("boston", Some("America/New_York")),
        zoned("seattle", Some("America/Los_Angeles")),
        zoned("paris", Some("Europe/Paris")),
        zoned("nowhere", Some("Mars/Olympus_Mons")),
        zoned("untagged", None),
    ];
    let (r, step) = Rollout::create("r1", &s, devices, t0()).unwrap();
    assert!(step.pushes.is_empty(), "12:00 UTC is nobody's 02:00");
    let mut run = Run {
        r,
        now: t0(),
        pushes: Vec::new(),
        events: step.events,
    };
    // Paris (UTC+1) opens first: 01:00 UTC on the 3rd.
    let paris = Utc.with_ymd_and_hms(2026, 12, 3, 1, 0, 0).unwrap();
    assert_eq!(run.r.next_wake(), Some(paris));
    run.advance_to(paris);
    assert_eq!(run.pushed("paris"), vec![1]);
    assert!(run.pushes.len() == 1);
    // New York's window (and the fallback's, for unknown or missing zones) opens at 07:00 UTC.
    run.advance_to(Utc.with_ymd_and_hms(2026, 12, 3, 6, 59, 0).unwrap());
    assert_eq!(run.pushes.len(), 1);
    run.advance_to(Utc.with_ymd_and_hms(2026, 12, 3, 7, 0, 0).unwrap());
    let mut now: Vec<&str> = run.pushes[1..].iter().map(|p| p.device.as_str()).collect();
    now.sort();
    assert_eq!(now, vec!["boston", "nowhere", "untagged"]);
    run.advance_to(Utc.with_ymd_and_hms(2026, 12, 3, 10, 0, 0).unwrap());
    assert_eq!(run.pushed("seattle"), vec![1]);
}

#[test]
fn a_window_across_midnight_pushes_after_midnight_and_not_after_it_closes() {
    let mut s = spec(vec![WaveSpec {
        batch: Some(BatchSpec {
            size: 1,
            interval_secs: 3 * 3600,
        }),
        ..wave("all", Selector::Percent(100.0))
    }]);
    s.window = Some(WindowSpec {
        cron: "0 22 * * *".into(),
        duration_secs: 4 * 3600,
        zone: Some("UTC".into()),
        device_zone: None,
    });
    s.soak_secs = 0;
    let mut run = Run::new(s, fleet(3));
    // Batches are every 3 h from the start (12:00). The window opens at 22:00: one device
    // then; the next batch, at 00:00, is still inside (until 02:00).
    run.advance_to(Utc.with_ymd_and_hms(2026, 12, 2, 21, 59, 0).unwrap());
    assert_eq!(run.pushes.len(), 0);
    run.advance_to(Utc.with_ymd_and_hms(2026, 12, 2, 22, 0, 0).unwrap());
    assert_eq!(run.pushes.len(), 1);
    run.advance_to(Utc.with_ymd_and_hms(2026, 12, 2, 23, 59, 0).unwrap());
    assert_eq!(run.pushes.len(), 1);
    run.advance_to(Utc.with_ymd_and_hms(2026, 12, 3, 0, 0, 0).unwrap());
    assert_eq!(run.pushes.len(), 2);
    // The batch at 03:00 falls after the window: the last device waits for 22:00.
    run.advance_to(Utc.with_ymd_and_hms(2026, 12, 3, 21, 59, 0).unwrap());
    assert_eq!(run.pushes.len(), 2);
    run.advance_to(Utc.with_ymd_and_hms(2026, 12, 3, 22, 0, 0).unwrap());
    assert_eq!(run.pushes.len(), 3);
}

#[test]
fn joiners_take_the_next_open_wave_and_leavers_are_not_pushed() {
    let mut devices = vec![in_waves("c1", &[0])];
    devices.extend(fleet(2));
    let mut run = Run::new(
        spec(vec![
            wave("canary", Selector::Query("tags.ring = 'canary'".into())),
            wave("rest", Selector::Percent(100.0)),
        ]),
        devices,
    );
    // A canary device registered while the canary runs joins it at once.
    run.see(Observation::Joined(in_waves("c2", &[0])));
    run.advance(1);
    assert_eq!(run.pushed("c2"), vec![1]);
    assert_eq!(run.r.waves()[0].counts.gate_size(), 2);
    // A device leaving before its wave starts is never pushed.
    run.see(Observation::Left {
        device: "d000".into(),
    });
    assert_eq!(run.state("d000"), DeviceState::Left);
    run.all_in_flight_update();
    assert_eq!(run.r.waves()[0].status, WaveStatus::Passed);
    assert_eq!(run.pushed("d001"), vec![1]);
    assert!(run.pushed("d000").is_empty());
    // Another canary device after the canary passed: the canary is closed, it joins "rest".
    run.see(Observation::Joined(in_waves("c3", &[0])));
    assert_eq!(run.r.device("c3").unwrap().wave, Some(1));
    run.advance(1);
    assert_eq!(run.pushed("c3"), vec![1]);
    // A device that comes back after leaving joins again.
    run.see(Observation::Joined(facts("d000")));
    run.advance(1);
    assert_eq!(run.pushed("d000"), vec![1]);
    run.all_in_flight_update();
    assert_eq!(run.r.status(), Status::Completed);
    // After completion a joiner has no open wave.
    run.see(Observation::Joined(facts("late")));
    assert_eq!(run.state("late"), DeviceState::Unassigned);
    assert!(run.pushed("late").is_empty());
}

#[test]
fn percentage_waves_are_cumulative_and_raising_one_only_adds_devices() {
    let members = |percents: &[f64]| -> Vec<Vec<String>> {
        let waves = percents
            .iter()
            .enumerate()
            .map(|(i, p)| wave(&format!("w{i}"), Selector::Percent(*p)))
            .collect();
        let mut s = spec(waves);
        s.seed = Some("fixed".into());
        let (r, _) = Rollout::create("r", &s, fleet(1000), t0()).unwrap();
        (0..percents.len())
            .map(|w| {
                r.devices()
                    .iter()
                    .filter(|d| d.wave == Some(w))
                    .map(|d| d.id.clone())
                    .collect()
            })
            .collect()
    };
    let a = members(&[10.0, 30.0, 100.0]);
    assert!((60..=140).contains(&a[0].len()), "{}", a[0].len());
    assert!((150..=250).contains(&a[1].len()), "{}", a[1].len());
    assert_eq!(a.iter().map(Vec::len).sum::<usize>(), 1000);
    let b = members(&[15.0, 30.0, 100.0]);
    assert!(a[0].iter().all(|d| b[0].contains(d)), "10 % is inside 15 %");
    assert!(b[0].len() > a[0].len());
    let first_two = |m: &Vec<Vec<String>>| {
        let mut v: Vec<String> = m[0].iter().chain(&m[1]).cloned().collect();
        v.sort();
        v
    };
    assert_eq!(
        first_two(&a),
        first_two(&b),
        "the first 30 % is the same devices"
    );
    // Another seed buckets differently.
    let (r, _) = Rollout::create(
        "other",
        &spec(vec![wave("w", Selector::Percent(10.0))]),
        fleet(1000),
        t0(),
    )
    .unwrap();
    let other: Vec<&str> = r
        .devices()
        .iter()
        .filter(|d| d.wave == Some(0))
        .map(|d| d.id.as_str())
        .collect();
    assert_ne!(other.len(), 0);
    assert!(other.iter().any(|d| !a[0].iter().any(|x| x == d)));
}

#[test]
fn downgrades_are_refused_unless_asked_for() {
    let newer = DeviceFacts {
        version: Some("3.0.0".into()),
        ..facts("ahead")
    };
    let current = DeviceFacts {
        version: Some(V2.into()),
        status: Some(UpdateStatus::Success),
        ..facts("current")
    };
    let devices = vec![newer.clone(), current.clone(), facts("behind")];
    let run = Run::new(spec(vec![wave("all", Selector::Percent(100.0))]), devices);
    assert_eq!(run.state("ahead"), DeviceState::Refused);
    assert_eq!(
        run.state("current"),
        DeviceState::Updated,
        "already on 2.1.0: nothing to push"
    );
    assert_eq!(run.pushed("behind"), vec![1]);
    assert_eq!(run.pushes.len(), 1);
    let refused = run.kinds(EventKind::DeviceRefused);
    assert_eq!(
        refused[0].message,
        "runs 3.0.0, newer than 2.1.0: a downgrade, refused (create the rollout with allow_downgrade to ask for one)"
    );
    assert_eq!(run.r.compliance().refused, 1);
    assert_eq!(run.r.compliance().targeted, 3);
    let mut s = spec(vec![wave("all", Selector::Percent(100.0))]);
    s.allow_downgrade = true;
    let run = Run::new(s, vec![newer]);
    assert_eq!(run.pushed("ahead"), vec![1]);
}

#[test]
fn supersede_stops_pushes_and_refuses_an_older_version() {
    let s = spec(vec![WaveSpec {
        batch: Some(BatchSpec {
            size: 1,
            interval_secs: 60,
        }),
        ..wave("all", Selector::Percent(100.0))
    }]);
    let mut run = Run::new(s.clone(), fleet(3));
    assert_eq!(run.pushes.len(), 1);
    let mut older = s.clone();
    older.artifact.version = "2.0.9".into();
    let err = run.r.check_supersede(&older).unwrap_err();
    assert!(err.0.contains("2.0.9 is older than 2.1.0"), "{err}");
    older.allow_downgrade = true;
    assert!(run.r.check_supersede(&older).is_ok());
    let mut newer = s;
    newer.artifact.version = "2.1.1".into();
    assert!(run.r.check_supersede(&newer).is_ok());
    run.command(Command::Supersede { by: "r2".into() });
    assert_eq!(run.r.status(), Status::Superseded);
    assert_eq!(run.r.totals().skipped, 2);
    run.advance(3600);
    assert_eq!(run.pushes.len(), 1, "nothing more after supersede");
    assert_eq!(run.r.next_wake(), None);
    let err = run.r.command(run.now, Command::Resume).unwrap_err();
    assert!(err.0.contains("is superseded"), "{err}");
}

#[test]
fn rollback_and_continue_moves_on_to_the_next_wave() {
    let mut s = spec(vec![
        WaveSpec {
            failure: Threshold {
                percent: None,
                count: Some(0),
            },
            ..wave("boston", Selector::Query("tags.city = 'boston'".into()))
        },
        wave("seattle", Selector::Query("tags.city = 'seattle'".into())),
    ]);
    s.on_trip = TripAction::RollbackWaveAndContinue;
    let devices = vec![
        in_waves("b1", &[0]),
        in_waves("b2", &[0]),
        in_waves("s1", &[1]),
    ];
    let mut run = Run::new(s, devices);
    run.see(Observation::Reported {
        device: "b2".into(),
        firmware: reported(V1, UpdateStatus::Applying, None),
    });
    run.see(Observation::Reported {
        device: "b1".into(),
        firmware: reported(V1, UpdateStatus::RolledBack, Some("wifi unreachable")),
    });
    assert_eq!(run.r.status(), Status::Running);
    assert_eq!(run.r.waves()[0].status, WaveStatus::RolledBack);
    assert_eq!(run.r.waves()[1].status, WaveStatus::Running);
    assert_eq!(
        run.state("b1"),
        DeviceState::RolledBack,
        "already back on 1.0.0"
    );
    assert!(matches!(run.state("b2"), DeviceState::RollingBack { .. }));
    assert_eq!(run.pushed("s1"), vec![1]);
    run.see(Observation::Reported {
        device: "b2".into(),
        firmware: reported(V1, UpdateStatus::Success, None),
    });
    run.all_in_flight_update();
    assert_eq!(run.r.status(), Status::Completed);
    let c = run.r.compliance();
    assert_eq!((c.updated, c.rolled_back, c.targeted), (1, 2, 3));
}

#[test]
fn pause_resume_and_abort() {
    let s = spec(vec![WaveSpec {
        batch: Some(BatchSpec {
            size: 1,
            interval_secs: 60,
        }),
        failure: Threshold {
            percent: None,
            count: Some(5),
        },
        ..wave("all", Selector::Percent(100.0))
    }]);
    let mut run = Run::new(s, fleet(4));
    run.command(Command::Pause);
    run.advance(600);
    assert_eq!(run.pushes.len(), 1, "paused: nothing new is pushed");
    assert!(run.r.command(run.now, Command::Pause).is_err());
    run.command(Command::Resume);
    run.advance(1);
    assert_eq!(run.pushes.len(), 2);
    run.command(Command::Abort);
    assert_eq!(run.r.status(), Status::Aborted);
    assert_eq!(run.r.totals().skipped, 2);
    run.advance(600);
    assert_eq!(run.pushes.len(), 2);
    assert_eq!(run.kinds(EventKind::Aborted).len(), 1);
}

#[test]
fn a_resumed_wave_trips_again_only_on_new_failures() {
    let s = spec(vec![WaveSpec {
        failure: Threshold {
            percent: None,
            count: Some(1),
        },
        ..wave("all", Selector::Percent(100.0))
    }]);
    let mut run = Run::new(s, fleet(6));
    for id in ["d000", "d001"] {
        run.see(Observation::Reported {
            device: id.into(),
            firmware: reported(V1, UpdateStatus::Failed, Some("bad")),
        });
    }
    assert_eq!(run.r.status(), Status::Paused);
    run.command(Command::Resume);
    assert_eq!(run.r.status(), Status::Running);
    run.see(Observation::Reported {
        device: "d002".into(),
        firmware: reported(V1, UpdateStatus::Failed, Some("bad")),
    });
    assert_eq!(
        run.r.status(),
        Status::Running,
        "one new failure is not past 1"
    );
    run.see(Observation::Reported {
        device: "d003".into(),
        firmware: reported(V1, UpdateStatus::Failed, Some("bad")),
    });
    assert_eq!(run.r.status(), Status::Paused);
}

#[test]
fn a_report_about_another_version_is_not_this_attempts_failure() {
    let mut run = Run::new(spec(vec![wave("all", Selector::Percent(100.0))]), fleet(1));
    let mut stale = reported(V1, UpdateStatus::Failed, Some("an old failure"));
    stale.target_version = Some("1.5.0".into());
    run.see(Observation::Reported {
        device: "d000".into(),
        firmware: stale,
    });
    assert!(matches!(run.state("d000"), DeviceState::InFlight { .. }));
}

#[test]
fn a_restored_rollout_goes_on_exactly_as_the_original() {
    let s = spec(vec![
        wave("canary", Selector::Count(2)),
        WaveSpec {
            batch: Some(BatchSpec {
                size: 2,
                interval_secs: 600,
            }),
            ..wave("rest", Selector::Percent(100.0))
        },
    ]);
    let mut run = Run::new(s.clone(), fleet(7));
    run.all_in_flight_update();
    run.boots_new(&run.in_flight()[0].clone());
    let json = serde_json::to_string(&run.r.snapshot()).unwrap();
    let restored: Snapshot = serde_json::from_str(&json).unwrap();
    let mut twin = Run {
        r: Rollout::restore("r1", &s, restored).unwrap(),
        now: run.now,
        pushes: Vec::new(),
        events: Vec::new(),
    };
    assert_eq!(twin.r.totals(), run.r.totals());
    assert_eq!(twin.r.waves(), run.r.waves());
    // The restored machine works out its windows and batches at its first tick.
    assert_eq!(twin.r.next_wake(), Some(DateTime::<Utc>::UNIX_EPOCH));
    let now = run.now;
    let (first, second) = (run.r.tick(now), twin.r.tick(now));
    assert_eq!(first, second);
    assert_eq!(twin.r.next_wake(), run.r.next_wake());
    let (a, b) = (run.pushes.len(), run.events.len());
    for r in [&mut run, &mut twin] {
        for _ in 0..6 {
            r.all_in_flight_update();
        }
    }
    assert_eq!(run.pushes[a..], twin.pushes[..]);
    assert_eq!(run.events[b..], twin.events[..]);
    assert_eq!(twin.r.snapshot(), run.r.snapshot());
    assert_eq!(twin.r.status(), Status::Completed);
}

/// Regression: a hub down through the end of a soak (kill -9, restart) failed a device that had
/// sent telemetry the dead hub never saw, as 'sent no telemetry during the soak', and one in
/// flight whose reports were lost timed out; the retry pushed a version the device already ran,
/// which it ignores, so every further attempt timed out too.
#[test]
fn no_device_fails_for_the_time_the_hub_was_down() {
    let s = spec(vec![wave("all", Selector::Percent(100.0))]);
    let mut run = Run::new(s.clone(), fleet(2));
    run.boots_new("d000"); // soaking, no telemetry seen yet
    let snapshot = run.r.snapshot();
    // The hub is down for longer than the soak and the device timeout.
    let back = run.now + chrono::Duration::seconds(1200);
    let mut r = Rollout::restore("r1", &s, snapshot).unwrap();
    r.resume_watching(back);
    let mut run = Run {
        r,
        now: back,
        pushes: Vec::new(),
        events: Vec::new(),
    };
    run.advance(0);
    assert!(matches!(run.state("d000"), DeviceState::Soaking { .. }));
    assert!(matches!(run.state("d001"), DeviceState::InFlight { .. }));
    run.advance(100);
    run.telemetry("d000");
    run.boots_new("d001");
    for _ in 0..3 {
        run.advance(250);
        run.telemetry("d000");
        run.telemetry("d001");
    }
    assert_eq!(run.state("d000"), DeviceState::Updated);
    assert_eq!(run.state("d001"), DeviceState::Updated);
    assert!(run.pushes.is_empty(), "{:?}", run.pushes);
    assert!(
        run.kinds(EventKind::DeviceFailed).is_empty(),
        "{:?}",
        run.events
    );
}

#[test]
fn a_bad_spec_names_its_field() {
    let mut s = spec(vec![
        wave("a", Selector::Percent(30.0)),
        wave("b", Selector::Percent(10.0)),
    ]);
    let err = Rollout::create("r", &s, vec![], t0()).err().unwrap();
    assert!(
        err.0.contains("waves[1].select.percent 10 is below"),
        "{err}"
    );
    s.waves = vec![wave("a", Selector::Percent(100.5))];
    let err = Rollout::create("r", &s, vec![], t0()).err().unwrap();
    assert!(err.0.contains("waves[0].select.percent 100.5"), "{err}");
    s.waves = vec![wave("a", Selector::Percent(50.0))];
    s.artifact.version = "two".into();
    let err = Rollout::create("r", &s, vec![], t0()).err().unwrap();
    assert!(err.0.contains("artifact.version 'two'"), "{err}");
}

#[test]
fn a_device_that_recovers_by_itself_during_its_backoff_is_not_pushed_again() {
    let mut s = spec(vec![wave("all", Selector::Percent(100.0))]);
    s.retry.retries = 1;
    let mut run = Run::new(s, fleet(1));
    run.see(Observation::Reported {
        device: "d000".into(),
        firmware: reported(V1, UpdateStatus::Failed, Some("connection reset")),
    });
    assert!(matches!(run.state("d000"), DeviceState::Backoff { .. }));
    assert_eq!(run.r.compliance().failed, 1);
    run.advance(30);
    run.boots_new("d000");
    assert!(matches!(run.state("d000"), DeviceState::Soaking { .. }));
    assert_eq!(
        run.r.compliance().failed,
        0,
        "no longer counted against the gate"
    );
    run.all_in_flight_update();
    assert_eq!(run.state("d000"), DeviceState::Updated);
    assert_eq!(run.pushed("d000"), vec![1]);
}

/// The kill -9 integration test's lost device: its download cut, it failed and backed off;
/// its backoff ended while the batch was used up, so it waited for the next one, and meanwhile
/// it finished the update on its own retry (rebooted, reconnected, reported success). Pushed
/// again, it would do nothing (it runs the image), and every retry would time out until flagged.
#[test]
fn a_device_that_updates_itself_while_its_retry_waits_for_a_batch_is_not_pushed_again() {
    let mut s = spec(vec![WaveSpec {
        batch: Some(BatchSpec {
            size: 1,
            interval_secs: 3600,
        }),
        ..wave("all", Selector::Percent(100.0))
    }]);
    s.retry.retries = 2;
    let mut run = Run::new(s, fleet(1));
    assert_eq!(run.pushed("d000"), vec![1]);
    run.see(Observation::Reported {
        device: "d000".into(),
        firmware: reported(V1, UpdateStatus::Failed, Some("connection reset")),
    });
    run.advance(61);
    assert_eq!(
        run.state("d000"),
        DeviceState::Waiting,
        "the batch is used up"
    );
    run.boots_new("d000");
    assert!(
        matches!(run.state("d000"), DeviceState::Soaking { .. }),
        "{:?}",
        run.state("d000")
    );
    assert_eq!(run.r.compliance().failed, 0);
    run.all_in_flight_update();
    assert_eq!(run.state("d000"), DeviceState::Updated);
    run.advance_to(t0() + chrono::Duration::hours(3));
    assert_eq!(run.pushed("d000"), vec![1]);
    assert_eq!(run.state("d000"), DeviceState::Updated);
}

/// A device that failed its soak (silent for a while) still runs the new version: its retry
/// watches it through a new soak, since a push of the image it runs changes nothing on it. The
/// soak counts as a try: one that stays silent is flagged when its retries are used up.
#[test]
fn a_retry_of_a_device_already_on_the_version_soaks_it_again_instead_of_pushing() {
    let mut s = spec(vec![wave("all", Selector::Percent(100.0))]);
    s.retry.retries = 1;
    let mut run = Run::new(s, fleet(2));
    run.boots_new("d000");
    run.boots_new("d001");
    run.advance(300);
    assert!(matches!(run.state("d000"), DeviceState::Backoff { .. }));
    run.advance(60);
    for id in ["d000", "d001"] {
        assert_eq!(
            run.pushed(id),
            vec![1],
            "{id}: not pushed the image it runs"
        );
        assert!(
            matches!(run.state(id), DeviceState::Soaking { .. }),
            "{id}: {:?}",
            run.state(id)
        );
    }
    for _ in 0..3 {
        run.telemetry("d000"); // d001 stays silent
        run.advance(240);
    }
    assert_eq!(run.state("d000"), DeviceState::Updated);
    assert_eq!(run.pushed("d000"), vec![1]);
    assert_eq!(run.state("d001"), DeviceState::Flagged, "retries used up");
    run.advance(86_400);
    assert_eq!(run.pushed("d001"), vec![1]);
    assert_eq!(run.state("d001"), DeviceState::Flagged);
}

#[test]
fn the_report_from_before_the_push_replayed_says_nothing_about_the_push() {
    let mut s = spec(vec![wave("all", Selector::Percent(100.0))]);
    s.retry.retries = 1;
    let mut run = Run::new(s, fleet(1));
    let failed = reported(V1, UpdateStatus::Failed, Some("flash write error"));
    run.see(Observation::Reported {
        device: "d000".into(),
        firmware: failed.clone(),
    });
    run.advance(60);
    assert_eq!(run.pushed("d000"), vec![1, 2]);
    // A restarted hub replays the twin: the same failure, from attempt 1.
    run.see(Observation::Reported {
        device: "d000".into(),
        firmware: failed.clone(),
    });
    assert!(matches!(run.state("d000"), DeviceState::InFlight { .. }));
    // Once the device has said something since, the same failure is a new one.
    run.see(Observation::Reported {
        device: "d000".into(),
        firmware: reported(V1, UpdateStatus::Downloading, None),
    });
    run.see(Observation::Reported {
        device: "d000".into(),
        firmware: failed,
    });
    assert_eq!(run.state("d000"), DeviceState::Flagged);
}

#[test]
fn the_rollout_completes_on_the_report_that_ends_its_last_device() {
    let s = spec(vec![WaveSpec {
        success: Threshold {
            percent: Some(50.0),
            count: None,
        },
        ..wave("all", Selector::Percent(100.0))
    }]);
    let mut run = Run::new(s, fleet(2));
    let first = run.pushes[0].device.clone();
    let second = run.pushes[1].device.clone();
    run.boots_new(&first);
    run.advance(240);
    run.telemetry(&first);
    run.advance(240);
    run.telemetry(&first);
    run.advance(120);
    assert_eq!(run.r.waves()[0].status, WaveStatus::Passed);
    assert_eq!(
        run.r.status(),
        Status::Running,
        "the second device is still in flight"
    );
    // Its failure (no retries left) is the last thing to happen: no tick follows.
    run.see(Observation::Reported {
        device: second,
        firmware: reported(V1, UpdateStatus::Failed, Some("bad block")),
    });
    assert_eq!(run.r.status(), Status::Completed);
    assert_eq!(run.kinds(EventKind::Completed).len(), 1);
}

#[test]
fn a_device_leaving_a_wave_can_let_its_gate_pass() {
    let s = spec(vec![WaveSpec {
        batch: Some(BatchSpec {
            size: 1,
            interval_secs: 3600,
        }),
        ..wave("first", Selector::Percent(100.0))
    }]);
    let mut run = Run::new(s, fleet(2));
    let waiting: Vec<String> = run
        .r
        .devices()
        .iter()
        .filter(|d| d.state == DeviceState::Waiting)
        .map(|d| d.id.clone())
        .collect();
    assert_eq!(waiting.len(), 1);
    run.all_in_flight_update();
    assert_eq!(
        run.r.waves()[0].status,
        WaveStatus::Running,
        "1 of 2 updated"
    );
    run.see(Observation::Left {
        device: waiting[0].clone(),
    });
    assert_eq!(run.r.waves()[0].status, WaveStatus::Passed, "1 of 1");
    assert_eq!(run.r.status(), Status::Completed);
}
