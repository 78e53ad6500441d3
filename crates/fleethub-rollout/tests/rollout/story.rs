//! The night a security fix ships (issue 11's story), at the scale of one test: a canary in New
//! York, a beta ring in Paris, Boston whose devices lose Wi-Fi on 2.1.0, and Seattle. Every
//! device pushes at its own 02:00; Boston's wave trips, is rolled back, and Seattle goes on.

use chrono::{DateTime, Duration, TimeZone, Utc};
use fleethub_core::firmware::{ReportedFirmware, UpdateStatus};
use fleethub_rollout::{
    Artifact, BatchSpec, DeviceFacts, DeviceState, Event, EventKind, Observation, RetrySpec,
    Rollout, RolloutSpec, Selector, Status, Threshold, TripAction, WaveSpec, WaveStatus,
    WindowSpec,
};
use std::collections::HashMap;

const OLD: &str = "1.0.0";
const NEW: &str = "2.1.0";

#[derive(Clone, Copy, PartialEq)]
enum Health {
    Fine,
    /// Boots 2.1.0, cannot reach Wi-Fi, and its bootloader goes back to 1.0.0.
    WifiBroken,
    /// Boots 2.1.0 and is never heard from again.
    NeverBack,
}

struct Device {
    id: String,
    zone: &'static str,
    ring: usize,
    health: Health,
    running: String,
    alive: bool,
    /// The last push attempt this device acted on.
    acted: u32,
}

fn wave(name: &str, select: Selector, success: f64) -> WaveSpec {
    WaveSpec {
        name: name.into(),
        select,
        batch: Some(BatchSpec {
            size: 200,
            interval_secs: 3600,
        }),
        success: Threshold {
            percent: Some(success),
            count: None,
        },
        failure: Threshold {
            percent: Some(2.0),
            count: Some(5),
        },
    }
}

fn spec() -> RolloutSpec {
    RolloutSpec {
        artifact: Artifact {
            version: NEW.into(),
            sha256: "5e".repeat(32),
        },
        target: "tags.product = 'aq-sensor' AND SEMVER(properties.reported.firmware.current_version) < '2.1.0'".into(),
        waves: vec![
            wave("canary", Selector::Query("tags.ring = 'canary'".into()), 100.0),
            wave("beta", Selector::Query("tags.ring = 'beta'".into()), 98.0),
            wave("boston", Selector::Query("tags.city = 'boston'".into()), 98.0),
            wave("rest", Selector::Percent(100.0), 98.0),
        ],
        soak_secs: 1800,
        max_silence_secs: 600,
        device_timeout_secs: 1200,
        retry: RetrySpec {
            retries: 2,
            backoff_secs: 600,
            factor: 2,
            max_backoff_secs: 3600,
        },
        window: Some(WindowSpec {
            cron: "0 2 * * *".into(),
            duration_secs: 7200,
            zone: Some("America/New_York".into()),
            device_zone: Some("tags.tz".into()),
        }),
        on_trip: TripAction::RollbackWaveAndContinue,
        allow_downgrade: false,
        seed: None,
    }
}

fn fleet() -> Vec<Device> {
    let mut devices = Vec::new();
    let mut add =
        |prefix: &str, n: usize, zone: &'static str, ring: usize, health: fn(usize) -> Health| {
            for i in 0..n {
                devices.push(Device {
                    id: format!("{prefix}-{i:03}"),
                    zone,
                    ring,
                    health: health(i),
                    running: OLD.into(),
                    alive: true,
                    acted: 0,
                });
            }
        };
    add("nyc", 20, "America/New_York", 0, |_| Health::Fine);
    add("paris", 100, "Europe/Paris", 1, |_| Health::Fine);
    add("boston", 200, "America/New_York", 2, |i| {
        if i < 3 {
            Health::NeverBack
        } else {
            Health::WifiBroken
        }
    });
    add("seattle", 180, "America/Los_Angeles", 3, |_| Health::Fine);
    devices
}

fn report(version: &str, status: UpdateStatus, error: Option<String>) -> ReportedFirmware {
    ReportedFirmware {
        current_version: version.into(),
        status,
        progress: None,
        target_version: Some(NEW.into()),
        last_update_time: None,
        error,
    }
}

struct Night {
    rollout: Rollout,
    now: DateTime<Utc>,
    events: Vec<Event>,
    /// Per device, the latest push: (attempt, version).
    latest: HashMap<String, (u32, String)>,
    pushes: HashMap<(String, u32), usize>,
}

impl Night {
    fn take(&mut self, step: fleethub_rollout::Step) {
        for p in step.pushes {
            *self
                .pushes
                .entry((p.device.clone(), p.attempt))
                .or_default() += 1;
            self.latest.insert(p.device, (p.attempt, p.version));
        }
        self.events.extend(step.events);
    }

    fn see(&mut self, o: Observation) {
        let step = self.rollout.observe(self.now, o);
        self.take(step);
    }

    fn run_to(&mut self, t: DateTime<Utc>) {
        let step = self.rollout.tick_through(self.now, t);
        self.now = t;
        self.take(step);
    }

    /// What each device does with its latest push, and its telemetry.
    fn devices_act(&mut self, fleet: &mut [Device]) {
        for d in fleet.iter_mut() {
            if let Some((attempt, version)) = self.latest.get(&d.id).cloned() {
                if attempt > d.acted {
                    d.acted = attempt;
                    self.act(d, &version);
                }
            }
            if d.alive {
                self.see(Observation::Telemetry {
                    device: d.id.clone(),
                });
            }
        }
    }

    fn act(&mut self, d: &mut Device, version: &str) {
        if !d.alive {
            return;
        }
        let id = d.id.clone();
        if version == OLD {
            // A rollback: already on 1.0.0 after its own bootloader's, or installs it.
            d.running = OLD.into();
            self.see(Observation::Reported {
                device: id,
                firmware: report(OLD, UpdateStatus::Idle, None),
            });
            return;
        }
        self.see(Observation::Reported {
            device: id.clone(),
            firmware: report(&d.running, UpdateStatus::Rebooting, None),
        });
        match d.health {
            Health::Fine => {
                d.running = NEW.into();
                self.see(Observation::Connected { device: id.clone() });
                self.see(Observation::Reported {
                    device: id,
                    firmware: report(NEW, UpdateStatus::Success, None),
                });
            }
            Health::WifiBroken => {
                self.see(Observation::Connected { device: id.clone() });
                self.see(Observation::Reported {
                    device: id,
                    firmware: report(
                        OLD,
                        UpdateStatus::RolledBack,
                        Some(
                            "firmware 2.1.0 rolled back to 1.0.0: wifi unreachable after reboot"
                                .into(),
                        ),
                    ),
                });
            }
            Health::NeverBack => d.alive = false,
        }
    }
}

#[test]
fn the_night_a_security_fix_ships() {
    let mut fleet = fleet();
    let facts: Vec<DeviceFacts> = fleet
        .iter()
        .map(|d| DeviceFacts {
            id: d.id.clone(),
            version: Some(OLD.into()),
            status: Some(UpdateStatus::Idle),
            zone: Some(d.zone.into()),
            matches: vec![d.ring].into_iter().filter(|&r| r < 3).collect(),
        })
        .collect();
    let start = Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).unwrap();
    let (rollout, step) = Rollout::create("night", &spec(), facts, start).unwrap();
    let mut night = Night {
        rollout,
        now: start,
        events: Vec::new(),
        latest: HashMap::new(),
        pushes: HashMap::new(),
    };
    night.take(step);
    assert!(night.latest.is_empty(), "noon in New York: nobody's window");

    // Five-minute steps for three days; devices act on what they were pushed in each step.
    let end = start + Duration::days(3);
    while night.now < end {
        let next = night.now + Duration::minutes(5);
        night.run_to(next);
        night.devices_act(&mut fleet);
    }

    let r = &night.rollout;
    assert_eq!(r.status(), Status::Completed, "{:#?}", r.waves());
    let statuses: Vec<WaveStatus> = r.waves().iter().map(|w| w.status).collect();
    assert_eq!(
        statuses,
        vec![
            WaveStatus::Passed,
            WaveStatus::Passed,
            WaveStatus::RolledBack,
            WaveStatus::Passed
        ]
    );
    let tripped: Vec<&Event> = night
        .events
        .iter()
        .filter(|e| e.kind == EventKind::GateTripped)
        .collect();
    assert_eq!(
        tripped.len(),
        1,
        "the gate tripped in Boston and nowhere else"
    );
    assert_eq!(tripped[0].wave.as_deref(), Some("boston"));
    // 2 % of 200 is 4: the fifth failure passes it, before the count's sixth.
    assert_eq!(
        tripped[0].message,
        "wave boston tripped: 5 of 200 failed (threshold 2% or 5 devices); most common: firmware 2.1.0 rolled back to 1.0.0: wifi unreachable after reboot (5)"
    );
    let c = r.compliance();
    assert_eq!(c.targeted, 500);
    assert_eq!(c.updated, 300, "everyone outside Boston");
    assert_eq!(c.rolled_back, 197);
    assert_eq!(c.flagged, 3, "never came back");
    for d in r.devices().iter().filter(|d| d.id.starts_with("boston")) {
        if d.id.as_str() < "boston-003" {
            assert_eq!(d.state, DeviceState::Flagged, "{}", d.id);
        } else {
            assert_eq!(d.state, DeviceState::RolledBack, "{}", d.id);
        }
    }
    // Each device's window: the canary at 02:00 New York (07:00 UTC on the 3rd); Paris the
    // next night at 02:00 Paris (01:00 UTC on the 4th), after the canary passed; Boston at
    // 02:00 New York on the 4th, Seattle at 02:00 Seattle (10:00 UTC) on the 4th.
    let started: Vec<(String, DateTime<Utc>)> = night
        .events
        .iter()
        .filter(|e| e.kind == EventKind::WaveStarted)
        .map(|e| (e.wave.clone().unwrap(), e.at))
        .collect();
    assert_eq!(started[0], ("canary".into(), start));
    assert!(started[1].1 < Utc.with_ymd_and_hms(2026, 12, 3, 8, 0, 0).unwrap());
    // No device was pushed twice for one attempt.
    assert!(night.pushes.values().all(|&n| n == 1));
    let first_push_hour = |prefix: &str| -> Vec<DateTime<Utc>> {
        let mut at: Vec<DateTime<Utc>> = r
            .devices()
            .iter()
            .filter(|d| d.id.starts_with(prefix) && d.attempt > 0)
            .filter_map(|d| d.pushed_at)
            .collect();
        at.sort();
        at.dedup();
        at
    };
    let paris = first_push_hour("paris");
    assert_eq!(
        paris,
        vec![Utc.with_ymd_and_hms(2026, 12, 4, 1, 0, 0).unwrap()]
    );
    let seattle = first_push_hour("seattle");
    assert_eq!(
        seattle,
        vec![Utc.with_ymd_and_hms(2026, 12, 4, 10, 0, 0).unwrap()]
    );
}
