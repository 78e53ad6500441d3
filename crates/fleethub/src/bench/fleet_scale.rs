//! Fleet-scale benchmarks: bulk registration of a million realistic twins, and (on top of that
//! fleet) queries and jobs.

use super::hub_process::{cpu_seconds, HubProcess};
use super::scenarios::figure;
use anyhow::{bail, Result};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::time::Instant;

const CITIES: [&str; 10] = [
    "boston", "chicago", "denver", "austin", "seattle", "miami", "atlanta", "phoenix", "portland",
    "detroit",
];
const VERSIONS: [&str; 6] = ["1.0.0", "1.1.0", "2.0.0", "2.1.0", "2.9.1", "2.10.0"];
/// Buildings per fleet: one building holds 1% of the devices (the selective-query case).
pub const BUILDINGS: usize = 100;

/// One device's bulk-import entry with a realistic twin of about 1 KB: location and ownership
/// tags, a desired firmware and configuration, and what the firmware reports back.
pub fn fleet_entry(prefix: &str, i: usize, key: &str) -> Value {
    let city = CITIES[i % CITIES.len()];
    let version = VERSIONS[(i / 7) % VERSIONS.len()];
    json!({
        "id": format!("{prefix}{i}"),
        "importMode": "create",
        "authentication": {"type": "sas", "symmetricKey": {"primaryKey": key, "secondaryKey": key}},
        "tags": {
            "city": city,
            "building": format!("b-{:03}", i % BUILDINGS),
            "floor": (i / BUILDINGS) % 8,
            "environment": if i.is_multiple_of(10) { "staging" } else { "prod" },
            "ring": if i.is_multiple_of(100) { "canary" } else { "broad" },
            "owner": {"team": "air-quality", "contact": "ops@example.com"},
            "location": {"lat": 42.0 + (i % 1000) as f64 / 1000.0, "lon": -71.0 - (i % 997) as f64 / 1000.0},
        },
        "properties": {
            "desired": {
                "firmware": {
                    "version": version,
                    "url": format!("https://firmware.example.com/aq-sensor/{version}.bin"),
                    "sha256": "9f2c4a7e1b3d5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8",
                    "size": 1_048_576,
                },
                "config": {"telemetryIntervalSeconds": 60, "pm25Alarm": 35, "ledBrightness": 40},
            },
            "reported": {
                "firmware": {
                    "current_version": version,
                    "status": "success",
                    "progress": 100,
                    "last_update_time": "2026-11-01T02:00:00.0000000Z",
                },
                "sensors": {"pm25": (i % 90) as f64 / 2.0, "temperature": 18.5, "humidity": 41},
                "network": {"rssi": -40 - (i % 50) as i64, "ip": format!("10.{}.{}.{}", i % 250, (i / 250) % 250, i % 200), "ssid": "fleet-iot"},
                "uptimeSeconds": i * 13 % 864_000,
            },
        },
    })
}

/// Registers `count` devices with [`fleet_entry`] twins, `concurrency` bulk calls of 100 at a
/// time; returns the elapsed seconds.
pub async fn register_fleet(
    hub: &HubProcess,
    prefix: &str,
    count: usize,
    key: &str,
    concurrency: usize,
) -> Result<f64> {
    let token = hub.token()?;
    let url = format!("{}/devices", hub.base());
    let started = Instant::now();
    let mut calls = futures_util::stream::iter((0..count).step_by(100))
        .map(|first| {
            let body: Vec<Value> = (first..(first + 100).min(count))
                .map(|i| fleet_entry(prefix, i, key))
                .collect();
            let req = hub
                .http
                .post(&url)
                .header("Authorization", &token)
                .json(&body);
            async move {
                let resp = req.send().await?;
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                anyhow::Ok((status, text))
            }
        })
        .buffer_unordered(concurrency);
    while let Some(result) = calls.next().await {
        let (status, text) = result?;
        if !status.is_success() || text.contains("\"isSuccessful\":false") {
            bail!("bulk registration failed: {status} {text}");
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

/// `fleethub bench register`: a million devices with ~1 KB twins through bulk import.
pub async fn register(devices: Option<usize>) -> Result<()> {
    let count = devices.unwrap_or(1_000_000);
    let size = serde_json::to_vec(&fleet_entry("bench-", count / 2, "k"))?.len();
    println!("== register: {count} devices through bulk import (100 per call), ~{size} B each");
    let hub = HubProcess::start()?;
    let cpu0 = cpu_seconds(hub.pid());
    let secs = register_fleet(&hub, "bench-", count, super::scenarios::KEY, 8).await?;
    let hub_cpu = cpu_seconds(hub.pid()) - cpu0;
    let rate = count as f64 / secs;
    println!(
        "  {count} devices in {secs:.1} s: {rate:.0} devices/s; hub CPU {hub_cpu:.1} s ({:.1} µs/device)",
        hub_cpu * 1e6 / count as f64
    );
    figure(
        "bulk_register_devices_per_sec",
        rate,
        "devices/s",
        ">= 50000",
    );
    Ok(())
}
