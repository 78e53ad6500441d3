use super::*;
use chrono::TimeZone as _;

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

fn window(cron: &str, hours: u64, zone: &str) -> Window {
    Window::new(&WindowSpec {
        cron: cron.into(),
        duration_secs: hours * 3600,
        zone: Some(zone.into()),
        device_zone: None,
    })
    .unwrap()
}

fn open(until: DateTime<Utc>) -> Position {
    Position::Open { until }
}

fn closed(opens: DateTime<Utc>) -> Position {
    Position::Closed { opens: Some(opens) }
}

#[test]
fn a_nightly_window_in_new_york_opens_at_two_local() {
    let w = window("0 2 * * *", 2, "America/New_York");
    let ny = Zone::named("America/New_York").unwrap();
    // December: EST, UTC-5. 01:30 local is 06:30 UTC.
    assert_eq!(
        w.position(&ny, utc(2026, 12, 2, 6, 30)),
        closed(utc(2026, 12, 2, 7, 0))
    );
    assert_eq!(
        w.position(&ny, utc(2026, 12, 2, 7, 0)),
        open(utc(2026, 12, 2, 9, 0))
    );
    assert_eq!(
        w.position(&ny, utc(2026, 12, 2, 8, 59)),
        open(utc(2026, 12, 2, 9, 0))
    );
    // At the closing instant the next night's window is the next opening.
    assert_eq!(
        w.position(&ny, utc(2026, 12, 2, 9, 0)),
        closed(utc(2026, 12, 3, 7, 0))
    );
}

#[test]
fn the_same_window_is_read_in_each_zone() {
    let w = window("0 2 * * *", 2, "UTC");
    let tokyo = Zone::named("Asia/Tokyo").unwrap();
    let seattle = Zone::named("America/Los_Angeles").unwrap();
    let now = utc(2026, 12, 2, 17, 30); // 02:30 in Tokyo, 09:30 in Seattle
    assert_eq!(w.position(&tokyo, now), open(utc(2026, 12, 2, 19, 0)));
    assert_eq!(w.position(&seattle, now), closed(utc(2026, 12, 3, 10, 0)));
}

#[test]
fn a_window_across_midnight_is_open_after_midnight() {
    let w = window("0 22 * * *", 4, "Europe/Paris");
    let paris = Zone::named("Europe/Paris").unwrap();
    // 00:30 Paris (CET, UTC+1) on 3 December: inside the window opened at 22:00 on the 2nd.
    assert_eq!(
        w.position(&paris, utc(2026, 12, 2, 23, 30)),
        open(utc(2026, 12, 3, 1, 0))
    );
    // 21:00 Paris: the window opens at 22:00.
    assert_eq!(
        w.position(&paris, utc(2026, 12, 2, 20, 0)),
        closed(utc(2026, 12, 2, 21, 0))
    );
    // Weekdays only: Friday 22:00 runs into Saturday; Saturday night has no window.
    let w = window("0 22 * * 1-5", 4, "Europe/Paris");
    // 2026-12-05 is a Saturday: 00:30 on Saturday is still Friday's window.
    assert_eq!(
        w.position(&paris, utc(2026, 12, 4, 23, 30)),
        open(utc(2026, 12, 5, 1, 0))
    );
    // Saturday 23:00: next is Monday 22:00 (21:00 UTC).
    assert_eq!(
        w.position(&paris, utc(2026, 12, 5, 22, 0)),
        closed(utc(2026, 12, 7, 21, 0))
    );
}

#[test]
fn spring_forward_keeps_the_wall_clock_edges() {
    // 2026-03-08: New York skips 02:00-03:00. 02:00 does not exist, so the window opens at
    // 03:00 EDT (07:00 UTC) and still closes at 04:00 EDT (08:00 UTC): one real hour.
    let w = window("0 2 * * *", 2, "America/New_York");
    let ny = Zone::named("America/New_York").unwrap();
    assert_eq!(
        w.position(&ny, utc(2026, 3, 8, 6, 30)),
        closed(utc(2026, 3, 8, 7, 0))
    );
    assert_eq!(
        w.position(&ny, utc(2026, 3, 8, 7, 0)),
        open(utc(2026, 3, 8, 8, 0))
    );
    // The next night is EDT (UTC-4): 02:00 is 06:00 UTC.
    assert_eq!(
        w.position(&ny, utc(2026, 3, 8, 8, 0)),
        closed(utc(2026, 3, 9, 6, 0))
    );
}

#[test]
fn fall_back_keeps_the_wall_clock_edges() {
    // 2026-11-01: New York repeats 01:00-02:00. 01:00 means its first occurrence (EDT, 05:00
    // UTC); 03:00 is EST (08:00 UTC): three real hours.
    let w = window("0 1 * * *", 2, "America/New_York");
    let ny = Zone::named("America/New_York").unwrap();
    assert_eq!(
        w.position(&ny, utc(2026, 11, 1, 4, 59)),
        closed(utc(2026, 11, 1, 5, 0))
    );
    assert_eq!(
        w.position(&ny, utc(2026, 11, 1, 5, 0)),
        open(utc(2026, 11, 1, 8, 0))
    );
    assert_eq!(
        w.position(&ny, utc(2026, 11, 1, 7, 30)),
        open(utc(2026, 11, 1, 8, 0))
    );
}

#[test]
fn a_device_zone_falls_back_when_missing_or_unknown() {
    let w = Window::new(&WindowSpec {
        cron: "0 2 * * *".into(),
        duration_secs: 7200,
        zone: Some("America/New_York".into()),
        device_zone: Some("tags.tz".into()),
    })
    .unwrap();
    assert_eq!(w.device_zone_path(), Some("tags.tz"));
    assert_eq!(w.zone_for(Some("Asia/Tokyo")).name, "Asia/Tokyo");
    assert_eq!(
        w.zone_for(Some("Mars/Olympus_Mons")).name,
        "America/New_York"
    );
    assert_eq!(w.zone_for(None).name, "America/New_York");
    // A fixed-zone window ignores what devices carry.
    let fixed = window("0 2 * * *", 2, "UTC");
    assert_eq!(fixed.zone_for(Some("Asia/Tokyo")).name, "UTC");
}

#[test]
fn bad_windows_are_refused_with_a_reason() {
    let spec = |cron: &str, secs: u64, zone: &str| WindowSpec {
        cron: cron.into(),
        duration_secs: secs,
        zone: Some(zone.into()),
        device_zone: None,
    };
    let err = Window::new(&spec("0 2 30 2 *", 3600, "UTC")).unwrap_err();
    assert!(err.contains("never matches"), "{err}");
    let err = Window::new(&spec("0 2 * * *", 30, "UTC")).unwrap_err();
    assert!(err.contains("a minute to a week"), "{err}");
    let err = Window::new(&spec("0 2 * * *", 3600, "Boston")).unwrap_err();
    assert!(err.contains("not a known time zone"), "{err}");
    // Leap days open within four years.
    assert!(Window::new(&spec("0 2 29 2 *", 3600, "UTC")).is_ok());
}
