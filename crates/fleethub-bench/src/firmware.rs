//! `bench firmware`: many devices downloading one image at once, the way `esp_https_ota` does
//! (a HEAD probe, then 64 KiB `Range` requests over HTTP/1.1 and TLS), from the hub's firmware
//! store with a URL minted per device, then the same file from nginx with the same clients in
//! the same run. Figures: aggregate throughput of each, their ratio, and how much the hub's
//! resident memory grew while it served (every download serves slices of one shared in-memory
//! copy of the image, so what grows is per connection: TLS and HTTP state, no image buffers).

use super::hub_process::{cpu_seconds, rss_kib, HubProcess};
use super::nginx::Nginx;
use super::scenarios::{figure, BenchArgs, KEY};
use anyhow::{anyhow, Context, Result};
use fleethub_client::FirmwareUpload;
use fleethub_sim::load::percentile;
use futures_util::StreamExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// The image every device downloads: 1 MiB.
const IMAGE_BYTES: u64 = 1024 * 1024;
const PREFIX: &str = "fw-bench-";
/// How often the hub's resident memory is sampled while it serves.
const RSS_EVERY: Duration = Duration::from_millis(50);

/// One batch of concurrent downloads.
struct Batch {
    ok: usize,
    failed: usize,
    first_error: Option<String>,
    bytes: u64,
    secs: f64,
    /// Per-download seconds, ascending.
    took: Vec<f64>,
}

impl Batch {
    fn mib_per_sec(&self) -> f64 {
        self.bytes as f64 / (1024.0 * 1024.0) / self.secs.max(1e-9)
    }

    fn describe(&self, who: &str) -> String {
        let pct = |q| percentile(&self.took, q).unwrap_or(0.0);
        let mut line = format!(
            "  {who}: {} of {} downloads in {:.1} s, {:.1} MiB/s aggregate; per download p50 {:.2} s, p99 {:.2} s",
            self.ok,
            self.ok + self.failed,
            self.secs,
            self.mib_per_sec(),
            pct(50.0),
            pct(99.0)
        );
        if let Some(e) = &self.first_error {
            line.push_str(&format!("; first failure: {e}"));
        }
        line
    }
}

/// Runs the benchmark: `--devices` downloads at once (default 1,000).
pub async fn firmware(args: &BenchArgs) -> Result<()> {
    let downloads = args.devices.unwrap_or(1_000);
    println!(
        "== firmware: {downloads} concurrent ranged HTTPS downloads of a {IMAGE_BYTES}-byte image, \
         from the hub's store and from nginx"
    );
    let hub = HubProcess::start()?;
    let dir = tempfile::tempdir()?;
    let image = dir.path().join("fw.bin");
    std::fs::write(&image, image_bytes())?;
    let upload = FirmwareUpload {
        version: "1.0.0".into(),
        models: vec!["esp32".into()],
        ..FirmwareUpload::default()
    };
    let (_, artifact) = hub.client.upload_firmware(&image, &upload).await?;
    let sha = artifact["sha256"]
        .as_str()
        .ok_or_else(|| anyhow!("the upload answered no sha256: {artifact}"))?
        .to_string();
    hub.register(PREFIX, downloads, KEY).await?;
    let urls = mint_urls(&hub, &sha, downloads).await?;
    let ca = std::fs::read(&hub.ca_file)?;

    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = hub.rss_kib();
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn(sample_peak(hub.pid(), peak.clone(), sampling.clone()));
    let cpu_before = cpu_seconds(hub.pid());
    let from_hub = download_all(&ca, urls).await?;
    let hub_cores = (cpu_seconds(hub.pid()) - cpu_before) / from_hub.secs.max(1e-9);
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    let growth_mib = peak.load(Ordering::Relaxed).saturating_sub(rss_before) as f64 / 1024.0;
    println!("{}", from_hub.describe("hub store"));
    println!(
        "  hub CPU while serving: {hub_cores:.2} cores; RSS {rss_before} KiB before, peak {} KiB: grew {growth_mib:.1} MiB",
        peak.load(Ordering::Relaxed)
    );
    figure(
        "firmware_hub_mib_per_sec",
        from_hub.mib_per_sec(),
        "MiB/s",
        "reference for the ratio",
    );
    figure("firmware_hub_rss_growth_mib", growth_mib, "MiB", "<= 64");
    if args.no_nginx {
        return Ok(());
    }
    let tls = hub
        .ca_file
        .parent()
        .context("the hub's CA file has a directory")?;
    let nginx = Nginx::start(
        &std::env::temp_dir(),
        dir.path(),
        &tls.join("server.pem"),
        &tls.join("server.key"),
    );
    match nginx {
        Ok(nginx) => {
            let url = format!("https://localhost:{}/fw.bin", nginx.port);
            let from_nginx = download_all(&ca, vec![url; downloads]).await?;
            drop(nginx);
            println!(
                "{}",
                from_nginx.describe("nginx (same file, same TLS certificate)")
            );
            let ratio = from_hub.mib_per_sec() / from_nginx.mib_per_sec().max(1e-9);
            println!("  ratio hub / nginx: {ratio:.2}");
            figure(
                "firmware_nginx_mib_per_sec",
                from_nginx.mib_per_sec(),
                "MiB/s",
                "reference",
            );
            figure("firmware_hub_vs_nginx_ratio", ratio, "ratio", ">= 0.8");
        }
        Err(e) => println!("  nginx reference skipped: {e:#}"),
    }
    Ok(())
}

/// 1 MiB of image. Nothing on the way compresses it (TLS does not, nginx serves `.bin` as is),
/// so a simple pattern does.
fn image_bytes() -> Vec<u8> {
    (0..IMAGE_BYTES)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect()
}

/// A download URL per device, minted by the hub as an operator would.
async fn mint_urls(hub: &HubProcess, sha: &str, count: usize) -> Result<Vec<String>> {
    let minted: Vec<Result<String>> = futures_util::stream::iter(0..count)
        .map(|i| async move {
            let answer = hub
                .client
                .firmware_url(sha, &format!("{PREFIX}{i}"), None)
                .await?;
            answer["url"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| anyhow!("the hub minted no url: {answer}"))
        })
        .buffered(fleethub_client::FAN_OUT)
        .collect()
        .await;
    minted.into_iter().collect()
}

/// Every URL fetched at once, each by its own task over its own connection, as a device would.
async fn download_all(ca: &[u8], urls: Vec<String>) -> Result<Batch> {
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca)?)
        .http1_only()
        .pool_max_idle_per_host(usize::MAX)
        .connect_timeout(Duration::from_secs(60))
        .build()?;
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for url in urls {
        let http = http.clone();
        tasks.spawn(async move {
            let t = Instant::now();
            let got = fleethub_sim::esp32::fetch_image(&http, &url, IMAGE_BYTES).await;
            (got, t.elapsed().as_secs_f64())
        });
    }
    let mut batch = Batch {
        ok: 0,
        failed: 0,
        first_error: None,
        bytes: 0,
        secs: 0.0,
        took: Vec::new(),
    };
    while let Some(joined) = tasks.join_next().await {
        let (got, took) = joined?;
        match got {
            Ok(bytes) => {
                batch.ok += 1;
                batch.bytes += bytes;
                batch.took.push(took);
            }
            Err(e) => {
                batch.failed += 1;
                batch.first_error.get_or_insert(e);
            }
        }
    }
    batch.secs = started.elapsed().as_secs_f64();
    batch.took.sort_by(f64::total_cmp);
    Ok(batch)
}

/// Keeps the highest resident memory of `pid` seen while `running`.
async fn sample_peak(pid: u32, peak: Arc<AtomicU64>, running: Arc<AtomicBool>) {
    while running.load(Ordering::Relaxed) {
        peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
        tokio::time::sleep(RSS_EVERY).await;
    }
}
