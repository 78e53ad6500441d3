//! The hub under test, as a child process with its own data directory and ephemeral ports, and
//! a REST client for it.

use anyhow::{anyhow, bail, Context, Result};
use fleethub_client::{Credentials, HubClient, BULK_LIMIT};
use fleethub_core::connection_string::ConnectionString;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `fleethub serve` child.
pub struct HubProcess {
    child: Child,
    pub mqtt_port: u16,
    pub ca_file: PathBuf,
    /// Raw HTTP for load generators, which pre-sign one token and must not queue behind the
    /// client's concurrency limit.
    pub http: reqwest::Client,
    /// The hub's REST API as `iothubowner`.
    pub client: HubClient,
    /// The `iothubowner` policy's key, for signing in to the dashboard.
    pub owner_key: String,
    _dir: tempfile::TempDir,
}

impl HubProcess {
    /// Starts the hub on loopback in a fresh data directory and waits until it listens.
    ///
    /// `FLEETHUB_BENCH_HUB` names another hub binary to measure (an older build, say) while this
    /// binary's load generators drive it, so that two hubs are compared with the same clients;
    /// `FLEETHUB_BENCH_HUB_WRAP` is a command that runs the hub (split on spaces, e.g.
    /// `valgrind --tool=callgrind --callgrind-out-file=/tmp/hub.cg`).
    pub fn start() -> Result<HubProcess> {
        let dir = tempfile::tempdir()?;
        let ready = dir.path().join("ready.json");
        let hub = match std::env::var_os("FLEETHUB_BENCH_HUB") {
            Some(path) => PathBuf::from(path),
            None => std::env::current_exe()?,
        };
        let wrap = std::env::var("FLEETHUB_BENCH_HUB_WRAP").unwrap_or_default();
        let mut wrap = wrap.split_whitespace();
        let mut command = match wrap.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(wrap).arg(&hub);
                c
            }
            None => Command::new(&hub),
        };
        command.args([
            "serve",
            "--bind",
            "127.0.0.1",
            "--mqtt-port",
            "0",
            "--https-port",
            "0",
        ]);
        // The load generators are one trusted address with up to 128 requests in flight; the
        // per-address cap is for strangers. (Builds from before the cap have no such flag.)
        if knows_flag(&hub, "--https-connections-per-address") {
            command.args(["--https-connections-per-address", "0"]);
        }
        let child = command
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--ready-file")
            .arg(&ready)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting the hub {}", hub.display()))?;
        // Under valgrind a start takes minutes.
        let info = wait_for_file(&ready, Duration::from_secs(600))?;
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
        let owner = info["ownerConnectionString"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let credentials = Credentials::from_connection_string(&ConnectionString::parse(&owner)?)?;
        let https_port = info["httpsPort"].as_u64().unwrap_or_default() as u16;
        let owner_key = credentials.key.clone();
        let client = HubClient::new(
            http.clone(),
            format!("https://localhost:{https_port}"),
            credentials,
        );
        Ok(HubProcess {
            child,
            mqtt_port: info["mqttPort"].as_u64().unwrap_or_default() as u16,
            ca_file,
            http,
            client,
            owner_key,
            _dir: dir,
        })
    }

    /// The hub's process id, for reading its memory.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A fresh owner SAS token.
    pub fn token(&self) -> Result<String> {
        Ok(self.client.token()?)
    }

    pub fn base(&self) -> String {
        self.client.base().to_string()
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

    /// Registers devices `0..count` through bulk import, `entry(i)` being device i's entry,
    /// [`BULK_LIMIT`] per call with `concurrency` calls in flight; returns the elapsed seconds.
    pub async fn register_with(
        &self,
        count: usize,
        concurrency: usize,
        entry: impl Fn(usize) -> Value,
    ) -> Result<f64> {
        let started = Instant::now();
        let chunks = (0..count).step_by(BULK_LIMIT).map(|first| {
            (first..(first + BULK_LIMIT).min(count))
                .map(&entry)
                .collect()
        });
        self.client.bulk_each(chunks, concurrency).await?;
        Ok(started.elapsed().as_secs_f64())
    }

    /// Runs `FLEETHUB_BENCH_MARK`, when set, as `<command> <phase> <hub pid>` and waits for it:
    /// a hook at the edges of the measured phase (`start`, `end`), e.g. a script that zeroes and
    /// dumps callgrind's counters (`callgrind_control -z` / `-d`) so that a profile holds the
    /// load alone.
    pub fn mark(&self, phase: &str) {
        let Some(command) = std::env::var_os("FLEETHUB_BENCH_MARK") else {
            return;
        };
        let status = Command::new(&command)
            .arg(phase)
            .arg(self.child.id().to_string())
            .status();
        if !status.as_ref().is_ok_and(|s| s.success()) {
            eprintln!("FLEETHUB_BENCH_MARK {phase}: {status:?}");
        }
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

/// Whether `hub serve --help` lists `flag`.
fn knows_flag(hub: &Path, flag: &str) -> bool {
    Command::new(hub)
        .args(["serve", "--help"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(flag))
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
