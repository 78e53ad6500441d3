//! `fleethub bench dashboard`: every dashboard page's data requests, timed from the client's
//! side, over a million registered devices (the `bench register` twins) with a configuration, a
//! firmware artifact, a rollout and a finished job to show. A page must not cost more because
//! the fleet is larger: the target is each page's data in at most 200 ms, what a person takes
//! as immediate, at 1,000,000 devices on this machine.

use super::browser::{self, Browser, Load};
use super::hub_process::HubProcess;
use super::million_devices::{median_p90, register_devices, wait_for_job, BUILDINGS};
use super::scenarios::{figure, figure_against, KEY, PREFIX};
use anyhow::{bail, Context, Result};
use fleethub_client::FirmwareUpload;
use fleethub_core::firmware::{REPORTED_STATUS_PATH, REPORTED_VERSION_PATH};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Times each request is made; the median is the figure.
const RUNS: usize = 5;
/// The target for one page's data, all its requests one after the other.
const PAGE_TARGET: &str = "<= 200";
/// The dashboard's page size on the devices page (`PAGE_SIZE` in app.js).
const PAGE_SIZE: &str = "50";
/// A query that selects one building, 1% of the fleet.
const TAG_QUERY: &str = "SELECT * FROM devices WHERE tags.building = 'b-042'";
/// The target for a page in the browser, from navigation to its content painted: the second
/// after which a person's flow of thought is interrupted.
const BROWSER_TARGET: &str = "<= 1000";

/// One request a page makes, as app.js makes it.
struct Request {
    method: Method,
    path: String,
    body: Option<Value>,
    /// The `x-ms-max-item-count` header, where the page sends one.
    page_size: Option<&'static str>,
}

impl Request {
    fn get(path: impl Into<String>) -> Request {
        Request {
            method: Method::GET,
            path: path.into(),
            body: None,
            page_size: None,
        }
    }

    fn query(text: impl Into<String>, page_size: &'static str) -> Request {
        Request {
            method: Method::POST,
            path: "/devices/query".into(),
            body: Some(json!({ "query": text.into() })),
            page_size: Some(page_size),
        }
    }
}

/// A page, its address in the dashboard, and the requests it makes to draw itself.
struct Page {
    name: &'static str,
    what: &'static str,
    /// The page's hash route (`#/devices/…`).
    route: String,
    requests: Vec<Request>,
}

/// What the benchmark created for the detail pages to show.
struct Shown {
    device: String,
    job: String,
    configuration: String,
    firmware: String,
    rollout: String,
}

fn pages(shown: &Shown) -> Vec<Page> {
    let Shown {
        device,
        job,
        configuration,
        firmware,
        rollout,
    } = shown;
    vec![
        Page {
            name: "overview",
            what: "overview (counts, firmware chart, compliance, flagged, events), computed afresh",
            // A `seen` past every event makes the hub compute it instead of serving its copy.
            route: "#/".into(),
            requests: vec![Request::get(format!(
                "/dashboard/overview?seen={}",
                i64::MAX
            ))],
        },
        Page {
            name: "devices",
            what: "devices page, the default query (first page of 50)",
            route: "#/devices".into(),
            requests: vec![Request::query("SELECT * FROM devices", PAGE_SIZE)],
        },
        Page {
            name: "devices_query",
            what: "devices page, a tag query (1% of devices, first page of 50)",
            route: format!("#/devices?q={}", encode(TAG_QUERY)),
            requests: vec![Request::query(TAG_QUERY, PAGE_SIZE)],
        },
        Page {
            name: "device",
            what: "device page (twin, its rollouts, last 100 messages, its jobs)",
            route: format!("#/devices/{}", encode(device)),
            requests: vec![
                Request::get(format!("/twins/{device}")),
                Request::get(format!("/v1/devices/{device}/rollouts?top=20")),
                Request::get(format!("/v1/telemetry?deviceId={device}&last=100")),
                Request::query(
                    format!("SELECT * FROM devices.jobs WHERE deviceId = '{device}'"),
                    "20",
                ),
            ],
        },
        Page {
            name: "rollouts",
            what: "rollouts list",
            route: "#/rollouts".into(),
            requests: vec![Request::get("/v1/rollouts?top=100")],
        },
        Page {
            name: "rollout",
            what: "rollout page (waves, gate, audit trail)",
            route: format!("#/rollouts/{}", encode(rollout)),
            requests: vec![
                Request::get(format!("/v1/rollouts/{rollout}")),
                Request::get(format!("/v1/rollouts/{rollout}/events?top=500")),
            ],
        },
        Page {
            name: "jobs",
            what: "jobs list",
            route: "#/jobs".into(),
            requests: vec![Request::get("/jobs/v2/query?pageSize=100")],
        },
        Page {
            name: "job",
            what: "job page (statistics, first 100 device rows)",
            route: format!("#/jobs/{}", encode(job)),
            requests: vec![
                Request::get(format!("/jobs/v2/{job}")),
                Request::query(
                    format!("SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '{job}'"),
                    "100",
                ),
            ],
        },
        Page {
            name: "configurations",
            what: "configurations list (with counts)",
            route: "#/configurations".into(),
            requests: vec![Request::get("/configurations?top=100")],
        },
        Page {
            name: "configuration",
            what: "configuration page (metrics counted now)",
            route: format!("#/configurations/{}", encode(configuration)),
            requests: vec![Request::get(format!("/configurations/{configuration}"))],
        },
        Page {
            name: "firmware",
            what: "firmware list",
            route: "#/firmware".into(),
            requests: vec![Request::get("/v1/firmware")],
        },
        Page {
            name: "firmware_detail",
            what: "firmware page (downloads per device)",
            route: format!("#/firmware/{}", encode(firmware)),
            requests: vec![Request::get(format!("/v1/firmware/{firmware}"))],
        },
    ]
}

/// Milliseconds one request takes, failing on an answer that is not a success.
async fn time_request(hub: &HubProcess, request: &Request) -> Result<f64> {
    let token = hub.token()?;
    let headers: Vec<(&str, &str)> = request
        .page_size
        .map(|n| vec![("x-ms-max-item-count", n)])
        .unwrap_or_default();
    let started = Instant::now();
    let reply = hub
        .client
        .call_as(
            request.method.clone(),
            &request.path,
            request.body.as_ref(),
            &headers,
            Some(&token),
        )
        .await?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if !reply.status.is_success() {
        bail!(
            "{} {} answered {}: {}",
            request.method,
            request.path,
            reply.status,
            reply.body
        );
    }
    Ok(ms)
}

/// The median over [`RUNS`] of one request.
async fn median_of(hub: &HubProcess, request: &Request) -> Result<f64> {
    let mut samples = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        samples.push(time_request(hub, request).await?);
    }
    Ok(median_p90(samples).0)
}

/// Creates what the detail pages show: a configuration over one building, a firmware artifact,
/// a rollout over another building (paused after its first push), a finished twin job over a
/// third building.
async fn create_shown(hub: &HubProcess) -> Result<Shown> {
    let configuration = "dashboard-eco";
    let body = json!({
        "id": configuration,
        "content": {"deviceContent": {"properties.desired.eco": {"enabled": true}}},
        "targetCondition": "tags.building = 'b-007'",
        "priority": 10,
        "labels": {},
        "metrics": {"queries": {"eco": "SELECT deviceId FROM devices WHERE properties.reported.eco.enabled = true"}},
    });
    hub.client
        .call(
            Method::PUT,
            &format!("/configurations/{configuration}"),
            Some(&body),
        )
        .await?
        .ok("creating the configuration")?;

    let dir = tempfile::tempdir()?;
    let image = dir.path().join("fw-2.11.0.bin");
    std::fs::write(&image, vec![0x5a; 64 * 1024])?;
    let upload = FirmwareUpload {
        version: "2.11.0".into(),
        models: vec!["esp32".into()],
        notes: None,
        signature: None,
        sha256: None,
    };
    let (_, artifact) = hub.client.upload_firmware(&image, &upload).await?;
    let firmware = artifact["sha256"]
        .as_str()
        .context("the upload answered no sha256")?
        .to_string();

    let rollout = "dashboard-night";
    let spec = json!({
        "artifact": {"version": "2.11.0", "sha256": firmware},
        "target": "tags.building = 'b-013'",
        "waves": [{"name": "all", "select": {"percent": 100},
                   "batch": {"size": 1, "interval_secs": 86_400},
                   "success": {"percent": 98}, "failure": {"percent": 2, "count": 5}}],
        "soak_secs": 0, "max_silence_secs": 600, "device_timeout_secs": 1200,
        "retry": {"retries": 0}
    });
    let created = hub.client.create_rollout(rollout, &spec, None).await?;
    println!(
        "  rollout {rollout} over {} devices",
        created["compliance"]["targeted"]
    );

    let job = "dashboard-interval";
    let body = json!({
        "jobId": job,
        "type": "scheduleUpdateTwin",
        "queryCondition": "tags.building = 'b-021'",
        "updateTwin": {"etag": "*", "properties": {"desired": {"config": {"telemetryIntervalSeconds": 30}}}},
        "maxExecutionTimeInSeconds": 3600,
    });
    hub.client.create_job(job, &body).await?;
    let finished = wait_for_job(hub, job).await?;
    println!(
        "  job {job}: {} ({} devices succeeded)",
        finished["status"], finished["deviceJobStatistics"]["succeededCount"]
    );
    Ok(Shown {
        device: format!("{PREFIX}{}", 13 + BUILDINGS),
        job: job.into(),
        configuration: configuration.into(),
        firmware,
        rollout: rollout.into(),
    })
}

/// Opens the change feed as the page does (no cursor: from the newest event) and answers the
/// milliseconds until its headers, then until the event of a twin change made once it is open.
async fn time_stream(hub: &HubProcess, device: &str, run: usize) -> Result<(f64, f64)> {
    let token = hub.token()?;
    let started = Instant::now();
    let mut response = hub
        .http
        .get(format!("{}/v1/events/stream", hub.base()))
        .header("Authorization", &token)
        .send()
        .await?
        .error_for_status()?;
    let opened = started.elapsed().as_secs_f64() * 1e3;
    let changed = Instant::now();
    hub.client
        .patch_twin(device, &json!({"tags": {"visited": run}}))
        .await?;
    let mut text = String::new();
    let deadline = Duration::from_secs(60);
    while !text.contains("event: events") {
        let chunk = tokio::time::timeout(deadline, response.chunk())
            .await
            .context("no change-feed event within a minute")??
            .context("the change feed ended")?;
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    Ok((opened, changed.elapsed().as_secs_f64() * 1e3))
}

/// `fleethub bench dashboard`.
pub(super) async fn dashboard(devices: Option<usize>) -> Result<()> {
    let count = devices.unwrap_or(1_000_000);
    println!("== dashboard: each page's data requests over {count} devices (median of {RUNS})");
    let hub = HubProcess::start()?;
    let secs = register_devices(&hub, PREFIX, count, KEY, 8).await?;
    println!("  registered in {secs:.1} s");
    let shown = create_shown(&hub).await?;
    let pages = pages(&shown);
    for page in &pages {
        let mut total = 0.0;
        let mut parts = Vec::new();
        for request in &page.requests {
            let ms = median_of(&hub, request).await?;
            total += ms;
            parts.push(format!(
                "{} {} {ms:.1} ms",
                request.method,
                short(&request.path)
            ));
        }
        println!("  {}: {total:.1} ms ({})", page.what, parts.join(", "));
        if page.name == "overview" {
            // Before the store kept device counts by firmware, the overview ran these two
            // aggregates over every twin on each computation.
            let mut before = 0.0;
            for path in [REPORTED_VERSION_PATH, REPORTED_STATUS_PATH] {
                let text = format!(
                    "SELECT {path} AS value, COUNT() AS devices FROM devices GROUP BY {path}"
                );
                before += median_of(&hub, &Request::query(text, "100")).await?;
            }
            println!(
                "    reference: the two GROUP BY queries the overview ran before, {before:.1} ms"
            );
            figure_against(
                "dashboard_overview_ms",
                total,
                "ms",
                PAGE_TARGET,
                "group_by_before",
                before,
            );
        } else {
            figure(
                &format!("dashboard_{}_ms", page.name),
                total,
                "ms",
                PAGE_TARGET,
            );
        }
    }
    let mut opened = Vec::new();
    let mut first = Vec::new();
    for run in 0..RUNS {
        let (o, f) = time_stream(&hub, &shown.device, run).await?;
        opened.push(o);
        first.push(f);
    }
    let (opened, first) = (median_p90(opened).0, median_p90(first).0);
    println!(
        "  change feed (SSE): open {opened:.1} ms; a twin change reaches it in {first:.1} ms \
         (the stream looks every 500 ms)"
    );
    figure("dashboard_sse_open_ms", opened, "ms", PAGE_TARGET);
    figure("dashboard_sse_first_event_ms", first, "ms", "<= 1000");
    in_browser(&hub, &pages).await
}

/// Each page opened afresh in headless Chromium, [`RUNS`] times, timed by the page from the
/// start of navigation to its content painted; beside it, the same for a route that draws no
/// data, which is what loading the app costs whatever the fleet.
async fn in_browser(hub: &HubProcess, pages: &[Page]) -> Result<()> {
    let (chromium, driver) = match browser::find() {
        Ok(found) => found,
        Err(why) => {
            println!("  in the browser: skipped, {why}");
            return Ok(());
        }
    };
    let browser = Browser::start(&chromium, &driver).await?;
    let timed = time_loads(hub, &browser, pages).await;
    browser.quit().await;
    timed
}

async fn time_loads(hub: &HubProcess, browser: &Browser, pages: &[Page]) -> Result<()> {
    let base = hub.base();
    browser
        .sign_in(&base, "iothubowner", &hub.owner_key)
        .await?;
    println!(
        "  in Chromium headless, navigation to the page's content painted (median of {RUNS} \
         fresh loads; in the document at):"
    );
    let app = median_load(browser, &format!("{base}/#/no-such-page")).await?;
    println!(
        "    the app without data (a route that draws \"Not found\"): {:.1} ms ({:.1} ms)",
        app.painted_ms, app.content_ms
    );
    for page in pages {
        let load = median_load(browser, &format!("{base}/{}", page.route)).await?;
        println!(
            "    {}: {:.1} ms ({:.1} ms)",
            page.what, load.painted_ms, load.content_ms
        );
        figure_against(
            &format!("dashboard_browser_{}_ms", page.name),
            load.painted_ms,
            "ms",
            BROWSER_TARGET,
            "app_without_data",
            app.painted_ms,
        );
    }
    Ok(())
}

/// The median over [`RUNS`] fresh loads of one address, of each of the two moments.
async fn median_load(browser: &Browser, url: &str) -> Result<Load> {
    let mut content = Vec::with_capacity(RUNS);
    let mut painted = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let load = browser.load(url).await?;
        content.push(load.content_ms);
        painted.push(load.painted_ms);
    }
    Ok(Load {
        content_ms: median_p90(content).0,
        painted_ms: median_p90(painted).0,
    })
}

/// `text` as JavaScript's `encodeURIComponent` writes it, for a route's query or id.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The path without its query string, for the summary line.
fn short(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_is_encoded_as_encode_uri_component_would() {
        assert_eq!(
            encode(TAG_QUERY),
            "SELECT%20*%20FROM%20devices%20WHERE%20tags.building%20%3D%20'b-042'"
        );
        assert_eq!(encode("café/1?a&b#c"), "caf%C3%A9%2F1%3Fa%26b%23c");
    }
}
