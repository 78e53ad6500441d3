//! The hub under test, as a child process with its own data directory and ephemeral ports.

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `fleethub serve` child.
pub struct HubProcess {
    child: Child,
    pub mqtt_port: u16,
    pub https_port: u16,
    pub ca_file: PathBuf,
    pub owner_connection_string: String,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl HubProcess {
    /// Starts the hub on loopback in a fresh data directory and waits until it listens.
    pub fn start() -> Result<HubProcess> {
        let dir = tempfile::tempdir()?;
        let ready = dir.path().join("ready.json");
        let child = Command::new(std::env::current_exe()?)
            .args([
                "serve",
                "--bind",
                "127.0.0.1",
                "--mqtt-port",
                "0",
                "--https-port",
                "0",
                // The load generators are one trusted address with up to 128 requests in flight;
                // the per-address cap is for strangers.
                "--https-connections-per-address",
                "0",
            ])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--ready-file")
            .arg(&ready)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting the hub")?;
        let info = wait_for_file(&ready, Duration::from_secs(60))?;
        let ca_file = PathBuf::from(
            info["caFile"]
                .as_str()
                .ok_or_else(|| anyhow!("no caFile"))?,
        );
        let ca = std::fs::read(&ca_file)?;
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
            .pool_max_idle_per_host(256)
            .timeout(Duration::from_secs(120))
            .build()?;
        Ok(HubProcess {
            child,
            mqtt_port: info["mqttPort"].as_u64().unwrap_or_default() as u16,
            https_port: info["httpsPort"].as_u64().unwrap_or_default() as u16,
            ca_file,
            owner_connection_string: info["ownerConnectionString"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            http,
            _dir: dir,
        })
    }

    /// The hub's process id, for reading its memory.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A fresh owner SAS token.
    pub fn token(&self) -> Result<String> {
        let cs = fleethub_core::connection_string::ConnectionString::parse(
            &self.owner_connection_string,
        )?;
        let key = cs
            .shared_access_key
            .ok_or_else(|| anyhow!("no key in the owner connection string"))?;
        let expiry = fleethub_core::Clock::unix(&fleethub_core::SystemClock) + 6 * 3600;
        Ok(fleethub_core::sas::generate_token(
            &cs.host_name,
            &key,
            Some("iothubowner"),
            expiry,
        )?)
    }

    pub fn base(&self) -> String {
        format!("https://localhost:{}", self.https_port)
    }

    /// Registers `count` devices named `{prefix}{n}`, all with `key`, 100 per bulk call.
    pub async fn register(&self, prefix: &str, count: usize, key: &str) -> Result<()> {
        self.register_with(count, 8, |i| {
            json!({"id": format!("{prefix}{i}"), "importMode": "create",
                "authentication": {"type": "sas", "symmetricKey": {"primaryKey": key, "secondaryKey": key}}})
        })
        .await?;
        Ok(())
    }

    /// Registers devices `0..count` through bulk import, `entry(i)` being device i's entry, 100
    /// per call with `concurrency` calls in flight; returns the elapsed seconds.
    pub async fn register_with(
        &self,
        count: usize,
        concurrency: usize,
        entry: impl Fn(usize) -> Value,
    ) -> Result<f64> {
        let token = self.token()?;
        let url = format!("{}/devices", self.base());
        let started = Instant::now();
        let mut calls = futures_util::stream::iter((0..count).step_by(100))
            .map(|first| {
                let body: Vec<Value> = (first..(first + 100).min(count)).map(&entry).collect();
                let req = self
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

    /// Resident memory of the hub process in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) a process has used so far (0 when unreadable).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

/// VmRSS of a process in KiB (0 when unreadable).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn wait_for_file(path: &Path, limit: Duration) -> Result<Value> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return Ok(serde_json::from_str(&text)?);
        }
        if Instant::now() > deadline {
            bail!("the hub did not become ready within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
