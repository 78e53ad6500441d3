use super::*;
use crate::spec::{Artifact, BatchSpec, Selector, Threshold, TripAction, WaveSpec};
use crate::window::WindowSpec;
use crate::WaveStatus;
use chrono::TimeZone;

fn wave(name: &str, select: Selector) -> WaveSpec {
    WaveSpec {
        name: name.into(),
        select,
        batch: Some(BatchSpec {
            size: 200,
            interval_secs: 3600,
        }),
        success: Threshold {
            percent: Some(98.0),
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
            version: "2.1.0".into(),
            sha256: "ab".repeat(32),
        },
        target: "tags.product = 'aq-sensor'".into(),
        waves: vec![
            wave("canary", Selector::Query("tags.ring = 'canary'".into())),
            wave("boston", Selector::Query("tags.city = 'boston'".into())),
            wave("rest", Selector::Percent(100.0)),
        ],
        soak_secs: 1800,
        max_silence_secs: 900,
        device_timeout_secs: 1200,
        retry: Default::default(),
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

/// 10 canaries in New York, 50 in Boston, 100 in Seattle.
fn fleet() -> Vec<DeviceFacts> {
    let mut out = Vec::new();
    let mut add = |prefix: &str, n: usize, zone: &str, wave: Option<usize>| {
        for i in 0..n {
            out.push(DeviceFacts {
                id: format!("{prefix}-{i:03}"),
                version: Some("1.0.0".into()),
                status: Some(UpdateStatus::Idle),
                zone: Some(zone.into()),
                matches: wave.into_iter().collect(),
            });
        }
    };
    add("nyc", 10, "America/New_York", Some(0));
    add("boston", 50, "America/New_York", Some(1));
    add("seattle", 100, "America/Los_Angeles", None);
    out
}

fn noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 2, 17, 0, 0).unwrap()
}

#[test]
fn a_plan_of_healthy_devices_pushes_each_at_its_own_local_window() {
    let r = rehearse("night", &spec(), fleet(), noon(), &Expectations::default()).unwrap();
    assert_eq!(r.status, Status::Completed, "{:?}", r.waves);
    assert!(r.devices.iter().all(|d| d.state == DeviceState::Updated));
    let first = |prefix: &str| {
        r.devices
            .iter()
            .filter(|d| d.id.starts_with(prefix))
            .filter_map(|d| d.first_push)
            .min()
            .unwrap()
    };
    // 02:00 in New York is 07:00 UTC; the canary soaks 30 minutes before Boston moves.
    assert_eq!(
        first("nyc"),
        Utc.with_ymd_and_hms(2026, 12, 3, 7, 0, 0).unwrap()
    );
    assert!(first("boston") > first("nyc") + Duration::minutes(30));
    assert!(first("boston") < Utc.with_ymd_and_hms(2026, 12, 3, 9, 0, 0).unwrap());
    // Seattle's 02:00 is 10:00 UTC.
    assert_eq!(
        first("seattle"),
        Utc.with_ymd_and_hms(2026, 12, 3, 10, 0, 0).unwrap()
    );
    assert!(r
        .milestones()
        .all(|e| e.kind != EventKind::GateTripped && e.kind != EventKind::DeviceFailed));
}

#[test]
fn a_wave_that_fails_trips_is_rolled_back_and_the_rest_goes_on() {
    let expect = Expectations {
        wave_failure_rates: [("boston".to_string(), 1.0)].into_iter().collect(),
        ..Expectations::default()
    };
    let r = rehearse("night", &spec(), fleet(), noon(), &expect).unwrap();
    let statuses: Vec<WaveStatus> = r.waves.iter().map(|w| w.status).collect();
    assert_eq!(
        statuses,
        [
            WaveStatus::Passed,
            WaveStatus::RolledBack,
            WaveStatus::Passed
        ]
    );
    let tripped: Vec<&Event> = r
        .milestones()
        .filter(|e| e.kind == EventKind::GateTripped)
        .collect();
    assert_eq!(tripped.len(), 1);
    assert_eq!(tripped[0].wave.as_deref(), Some("boston"));
    assert!(r
        .devices
        .iter()
        .filter(|d| d.id.starts_with("boston"))
        .all(|d| d.state == DeviceState::RolledBack || d.state == DeviceState::Skipped));
    // The same inputs rehearse the same night.
    assert_eq!(
        r,
        rehearse("night", &spec(), fleet(), noon(), &expect).unwrap()
    );
}

#[test]
fn devices_that_never_come_back_are_retried_then_flagged() {
    let expect = Expectations {
        never_back_rate: 0.03,
        ..Expectations::default()
    };
    let r = rehearse("night", &spec(), fleet(), noon(), &expect).unwrap();
    let flagged: Vec<&DeviceOutcome> = r
        .devices
        .iter()
        .filter(|d| d.state == DeviceState::Flagged)
        .collect();
    assert!(!flagged.is_empty() && flagged.len() < 10, "{flagged:?}");
    for d in flagged {
        assert_eq!(d.attempts, 3, "the first push and two retries: {d:?}");
        assert!(
            d.failure
                .as_deref()
                .unwrap_or("")
                .contains("silent after reboot"),
            "{d:?}"
        );
    }
}
