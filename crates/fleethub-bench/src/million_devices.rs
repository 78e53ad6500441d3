//! Benchmarks over a million registered devices: bulk registration of realistic ~1 KB twins,
//! and, on top of those devices, queries and jobs.

use super::hub_process::{cpu_seconds, HubProcess};
use super::scenarios::{figure, figure_against};
use anyhow::{anyhow, Result};
use fleethub_core::firmware::{
    DesiredFirmware, ReportedFirmware, UpdateStatus, REPORTED_VERSION_PATH,
};
use fleethub_sim::load::percentile;
use serde_json::{json, Value};
use std::time::Instant;

const CITIES: [&str; 10] = [
    "boston", "chicago", "denver", "austin", "seattle", "miami", "atlanta", "phoenix", "portland",
    "detroit",
];
const VERSIONS: [&str; 6] = ["1.0.0", "1.1.0", "2.0.0", "2.1.0", "2.9.1", "2.10.0"];
/// Buildings the devices are spread over: one building holds 1% of the devices (the selective-query case).
pub const BUILDINGS: usize = 100;

/// The image every benchmark device is asked to run (served nowhere: no device downloads it).
fn desired_firmware(version: &str) -> DesiredFirmware {
    DesiredFirmware {
        version: version.into(),
        url: format!("https://firmware.example.com/aq-sensor/{version}.bin"),
        sha256: "9f2c4a7e1b3d5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8".into(),
        size: 1_048_576,
        signature: None,
        models: Vec::new(),
    }
}

/// One device's bulk-import entry with a realistic twin of about 1 KB: location and ownership
/// tags, a desired firmware and configuration, and what the firmware reports back.
pub fn device_entry(prefix: &str, i: usize, key: &str) -> Value {
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
                "firmware": desired_firmware(version),
                "config": {"telemetryIntervalSeconds": 60, "pm25Alarm": 35, "ledBrightness": 40},
            },
            "reported": {
                "firmware": ReportedFirmware {
                    current_version: version.into(),
                    status: UpdateStatus::Success,
                    progress: Some(100),
                    target_version: None,
                    last_update_time: Some("2026-11-01T02:00:00.0000000Z".into()),
                    error: None,
                },
                "sensors": {"pm25": (i % 90) as f64 / 2.0, "temperature": 18.5, "humidity": 41},
                "network": {"rssi": -40 - (i % 50) as i64, "ip": format!("10.{}.{}.{}", i % 250, (i / 250) % 250, i % 200), "ssid": "fleet-iot"},
                "uptimeSeconds": i * 13 % 864_000,
            },
        },
    })
}

/// Registers `count` devices with [`device_entry`] twins, `concurrency` bulk calls of 100 at a
/// time; returns the elapsed seconds.
pub async fn register_devices(
    hub: &HubProcess,
    prefix: &str,
    count: usize,
    key: &str,
    concurrency: usize,
) -> Result<f64> {
    hub.register_with(count, concurrency, |i| device_entry(prefix, i, key))
        .await
}

/// `fleethub bench register`: a million devices with ~1 KB twins through bulk import.
pub async fn register(devices: Option<usize>) -> Result<()> {
    let count = devices.unwrap_or(1_000_000);
    let size = serde_json::to_vec(&device_entry("bench-", count / 2, "k"))?.len();
    println!("== register: {count} devices through bulk import (100 per call), ~{size} B each");
    let hub = HubProcess::start()?;
    let cpu0 = cpu_seconds(hub.pid());
    let secs = register_devices(&hub, "bench-", count, super::scenarios::KEY, 8).await?;
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

/// Median and 90th percentile of `samples` (milliseconds).
pub(super) fn median_p90(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |q| percentile(&samples, q).unwrap_or(0.0);
    (at(50.0), at(90.0))
}

/// Times `POST /devices/query` for `text` (first page, default page size) `runs` times.
async fn time_query(hub: &HubProcess, text: &str, runs: usize) -> Result<(f64, f64, usize)> {
    let mut samples = Vec::with_capacity(runs);
    let mut items = 0;
    for _ in 0..runs {
        let started = Instant::now();
        let page = hub.client.query_page(text, None, None).await?;
        samples.push(started.elapsed().as_secs_f64() * 1e3);
        items = page.items.len();
    }
    let (p50, p90) = median_p90(samples);
    Ok((p50, p90, items))
}

/// `fleethub bench query`: query latency over a million realistic twins, and (unless
/// `postgres` is false) the same questions to PostgreSQL 15 holding the same twins as JSONB.
pub async fn query(devices: Option<usize>, postgres: bool) -> Result<()> {
    let count = devices.unwrap_or(1_000_000);
    println!("== query: latency over {count} twins (~1 KB each)");
    let hub = HubProcess::start()?;
    let secs = register_devices(&hub, "bench-", count, super::scenarios::KEY, 8).await?;
    println!("  registered in {secs:.1} s");
    let mut figures = Vec::new();
    for case in QUERY_CASES {
        let text = case.fleethub();
        let (p50, p90, items) = time_query(&hub, &text, case.runs).await?;
        println!(
            "  {}: p50 {p50:.1} ms, p90 {p90:.1} ms over {} runs ({items} items)",
            case.what, case.runs
        );
        figures.push(p50);
    }
    // The reference runs alone: the hub stops first, so the two never share the CPU.
    drop(hub);
    let reference = if postgres {
        match postgres_times(count).await {
            Ok(times) => Some(times),
            Err(e) => {
                println!("  PostgreSQL reference skipped: {e:#}");
                None
            }
        }
    } else {
        None
    };
    for (i, (case, p50)) in QUERY_CASES.iter().zip(figures).enumerate() {
        match &reference {
            Some(times) => figure_against(case.name, p50, "ms", case.target, "postgres", times[i]),
            None => figure(case.name, p50, "ms", case.target),
        }
    }
    Ok(())
}

/// One question of `bench query`, in FleetHub's query language and in PostgreSQL's SQL.
struct QueryCase {
    what: &'static str,
    name: &'static str,
    target: &'static str,
    runs: usize,
    /// FleetHub's query; `{fw}` stands for the reported firmware version's path.
    fleethub: &'static str,
    /// The same question as a team would write it over `twins (device_id text, twin jsonb)`.
    sql: &'static str,
}

impl QueryCase {
    fn fleethub(&self) -> String {
        self.fleethub.replace("{fw}", REPORTED_VERSION_PATH)
    }
}

const QUERY_CASES: [QueryCase; 3] = [
    QueryCase {
        what: "selective tag equality (1% of rows), first page of 100",
        name: "query_tag_equality_p50_ms",
        target: "<= 10",
        runs: 20,
        fleethub: "SELECT * FROM devices WHERE tags.building = 'b-042'",
        sql:
            "SELECT device_id, twin FROM twins WHERE twin @> '{\"tags\":{\"building\":\"b-042\"}}' \
              ORDER BY device_id LIMIT 100",
    },
    QueryCase {
        what: "scan on a reported property (COUNT over every twin)",
        name: "query_reported_scan_p50_ms",
        target: "<= 500",
        runs: 5,
        fleethub: "SELECT COUNT() AS n FROM devices WHERE properties.reported.sensors.pm25 > 40",
        sql: "SELECT count(*) FROM twins \
              WHERE (twin #> '{properties,reported,sensors,pm25}')::float8 > 40",
    },
    QueryCase {
        what: "GROUP BY firmware version with COUNT",
        name: "query_group_by_firmware_p50_ms",
        target: "<= 600",
        runs: 5,
        fleethub: "SELECT {fw} AS fw, COUNT() AS n FROM devices GROUP BY {fw}",
        sql: "SELECT twin #>> '{properties,reported,firmware,current_version}' AS fw, count(*) \
              FROM twins GROUP BY 1",
    },
];

/// PostgreSQL's median time for each of [`QUERY_CASES`], over the same `count` twins.
async fn postgres_times(count: usize) -> Result<Vec<f64>> {
    let tmp = std::env::temp_dir();
    let pg = super::postgres::Postgres::start(&tmp, "2GB")?;
    let client = pg.connect().await?;
    let (copy_secs, index_secs) = super::postgres::load(&client, count, |i| {
        let entry = device_entry("bench-", i, super::scenarios::KEY);
        let id = entry["id"].as_str().unwrap_or_default().to_string();
        (id, super::postgres::twin_document(&entry))
    })
    .await?;
    let size = super::postgres::size_bytes(&client).await?;
    println!(
        "  PostgreSQL 15: COPY {count} twins in {copy_secs:.1} s ({:.0}/s), GIN index + ANALYZE \
         {index_secs:.1} s, {:.0} MB with indexes",
        count as f64 / copy_secs,
        size as f64 / 1e6
    );
    let mut times = Vec::new();
    for case in QUERY_CASES {
        let (samples, rows) = super::postgres::time_sql(&client, case.sql, case.runs).await?;
        let (p50, p90) = median_p90(samples);
        println!(
            "  PostgreSQL, {}: p50 {p50:.1} ms, p90 {p90:.1} ms over {} runs ({rows} rows)",
            case.what, case.runs
        );
        times.push(p50);
    }
    Ok(times)
}

/// Polls a job until it leaves queued/scheduled/running; returns the final document.
pub(super) async fn wait_for_job(hub: &HubProcess, id: &str) -> Result<Value> {
    loop {
        let job = hub
            .client
            .job(id)
            .await?
            .ok_or_else(|| anyhow!("job {id} is gone"))?;
        match job["status"].as_str() {
            // Once a second, as a dashboard would: each GET counts the job's device rows.
            Some("queued" | "scheduled" | "running") => {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await
            }
            _ => return Ok(job),
        }
    }
}

/// Seconds from the job's creation to its end, by the hub's own timestamps (the client polls
/// once a second, which would blur short jobs).
fn job_seconds(job: &Value) -> Option<f64> {
    let at = |field: &str| {
        job[field]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    };
    let (created, ended) = (at("createdTime")?, at("endTime")?);
    Some((ended - created).num_microseconds()? as f64 / 1e6)
}

async fn create_job(hub: &HubProcess, body: &Value) -> Result<()> {
    let id = body["jobId"].as_str().unwrap_or_default();
    hub.client.create_job(id, body).await?;
    Ok(())
}

/// `fleethub bench jobs`: a twin job over a million devices with 10,000 of them connected, and
/// a method job over 10,000 connected devices.
pub async fn jobs(args: &super::BenchArgs) -> Result<()> {
    let count = args.devices.unwrap_or(1_000_000);
    let connected = 10_000.min(count);
    println!("== jobs: scheduleUpdateTwin over {count} devices ({connected} connected)");
    let hub = HubProcess::start()?;
    let secs = register_devices(&hub, "bench-", count, super::scenarios::KEY, 8).await?;
    println!("  registered in {secs:.1} s");
    let twin_job = json!({
        "jobId": "bench-twin",
        "type": "scheduleUpdateTwin",
        "queryCondition": "*",
        "updateTwin": {"etag": "*", "properties": desired_firmware("2.11.0").twin_patch()["properties"]},
        "maxExecutionTimeInSeconds": 3600,
    });
    let (received, outcome) = super::scenarios::holding(
        args,
        &hub,
        super::worker::WorkerMode::Desired,
        connected,
        || async {
            let started = Instant::now();
            create_job(&hub, &twin_job).await?;
            let job = wait_for_job(&hub, "bench-twin").await?;
            // Let the last pushes land before the workers stop counting.
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            anyhow::Ok((job, started.elapsed().as_secs_f64()))
        },
    )
    .await?;
    let (job, polled) = outcome?;
    let stats = &job["deviceJobStatistics"];
    let succeeded = stats["succeededCount"].as_u64().unwrap_or(0);
    let secs = job_seconds(&job).unwrap_or(polled - 2.0);
    println!(
        "  job {} in {secs:.1} s: {succeeded} devices succeeded, {} failed; {received} desired patches reached the {connected} connected devices",
        job["status"], stats["failedCount"]
    );
    figure("twin_job_seconds", secs, "s", "<= 60");
    figure(
        "twin_job_device_ops_per_sec",
        succeeded as f64 / secs,
        "ops/s",
        ">= 16000",
    );

    drop(hub);
    method_job(args).await
}

/// `fleethub bench method-job`: a `scheduleDeviceMethod` job over 10,000 connected devices, on a
/// hub that holds just those devices (so the figure is the method machinery, not a snapshot scan
/// of a larger registry).
pub async fn method_job(args: &super::BenchArgs) -> Result<()> {
    let connected = 10_000.min(args.devices.unwrap_or(10_000));
    println!("== jobs: scheduleDeviceMethod over {connected} connected devices");
    let hub = HubProcess::start()?;
    register_devices(&hub, "bench-", connected, super::scenarios::KEY, 8).await?;
    let method_job = json!({
        "jobId": "bench-method",
        "type": "scheduleDeviceMethod",
        // Every registered device is held by the workers and connected.
        "queryCondition": "connectionState = 'Connected'",
        "cloudToDeviceMethod": {"methodName": "echo", "payload": {}, "responseTimeoutInSeconds": 30, "connectTimeoutInSeconds": 5},
        "maxExecutionTimeInSeconds": 3600,
    });
    let (_, outcome) = super::scenarios::holding(
        args,
        &hub,
        super::worker::WorkerMode::Methods,
        connected,
        || async {
            let started = Instant::now();
            create_job(&hub, &method_job).await?;
            let job = wait_for_job(&hub, "bench-method").await?;
            anyhow::Ok((job, started.elapsed().as_secs_f64()))
        },
    )
    .await?;
    let (job, polled) = outcome?;
    let stats = &job["deviceJobStatistics"];
    let succeeded = stats["succeededCount"].as_u64().unwrap_or(0);
    let secs = job_seconds(&job).unwrap_or(polled);
    println!(
        "  job {} in {secs:.1} s: {succeeded} succeeded, {} failed",
        job["status"], stats["failedCount"]
    );
    figure(
        "method_job_device_ops_per_sec",
        succeeded as f64 / secs,
        "ops/s",
        ">= 5000",
    );
    Ok(())
}

fn system_count(c: &Value, name: &str) -> u64 {
    c["systemMetrics"]["results"][name].as_u64().unwrap_or(0)
}

async fn configuration(hub: &HubProcess, id: &str) -> Result<Value> {
    hub.client
        .configuration(id)
        .await?
        .ok_or_else(|| anyhow!("configuration {id} is gone"))
}

/// `fleethub bench configurations`: a configuration targeting one city (a tenth of the
/// devices): seconds from its creation until `appliedCount` reaches the targeted count, then how
/// long after a targeted twin leaves the target its metrics show it (median of 5).
pub async fn configurations(devices: Option<usize>) -> Result<()> {
    let count = devices.unwrap_or(1_000_000);
    println!("== configurations: one configuration over {count} devices (a tenth targeted)");
    let hub = HubProcess::start()?;
    let secs = register_devices(&hub, "bench-", count, super::scenarios::KEY, 8).await?;
    println!("  registered in {secs:.1} s");
    let body = json!({
        "content": {"deviceContent": {"properties.desired.config.telemetryIntervalSeconds": 30}},
        "targetCondition": "tags.city = 'boston'",
        "priority": 10,
        "metrics": {"queries": {"highPm25": "SELECT deviceId FROM devices WHERE \
            tags.city = 'boston' AND properties.reported.sensors.pm25 > 40"}},
    });
    let started = Instant::now();
    hub.client
        .put_configuration("bench-boston", &body, None)
        .await?;
    let mut last = configuration(&hub, "bench-boston").await?;
    let targeted = system_count(&last, "targetedCount");
    while system_count(&last, "appliedCount") < targeted {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        last = configuration(&hub, "bench-boston").await?;
    }
    let applied_secs = started.elapsed().as_secs_f64();
    println!("  {targeted} twins targeted, all applied in {applied_secs:.1} s");
    figure("configuration_applied_seconds", applied_secs, "s", "<= 10");

    // A targeted device leaves the target; time until both counts show it.
    let mut samples = Vec::new();
    for i in (0..count).step_by(CITIES.len()).take(5) {
        let id = format!("bench-{i}");
        let (before_t, before_a) = (
            system_count(&last, "targetedCount"),
            system_count(&last, "appliedCount"),
        );
        let started = Instant::now();
        hub.client
            .patch_twin(&id, &json!({"tags": {"city": "elsewhere"}}))
            .await?;
        loop {
            last = configuration(&hub, "bench-boston").await?;
            let now = (
                system_count(&last, "targetedCount"),
                system_count(&last, "appliedCount"),
            );
            if now.0 < before_t && now.1 < before_a {
                break;
            }
        }
        samples.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let (p50, p90) = median_p90(samples);
    println!("  metrics after a twin leaves the target: p50 {p50:.0} ms, p90 {p90:.0} ms");
    figure("configuration_metrics_refresh_ms", p50, "ms", "<= 1000");
    Ok(())
}
