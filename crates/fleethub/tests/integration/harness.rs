//! A real hub per test, plus a REST client and device clients that speak to it.

use fleethub::{RunningHub, ServeConfig};
use fleethub_client::{Credentials, HubClient};
use fleethub_sim::{ConnectOptions, DeviceAuth, DeviceClient, DeviceEvent, DeviceEvents};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How long any single condition may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(15);

pub struct TestHub {
    pub running: RunningHub,
    /// Raw HTTP, for requests the client would not send (malformed bodies).
    pub http: reqwest::Client,
    /// The REST API as iothubowner.
    pub client: HubClient,
    pub base: String,
    pub tls: Arc<rustls::ClientConfig>,
    _dir: tempfile::TempDir,
}

/// A REST answer: status, headers and JSON body (Null when empty).
pub use fleethub_client::Reply;

impl TestHub {
    pub async fn start() -> TestHub {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir).await
    }

    pub async fn start_in(dir: tempfile::TempDir) -> TestHub {
        let cfg = ServeConfig::ephemeral(dir.path());
        Self::start_configured(dir, cfg).await
    }

    /// A hub with settings of the test's choosing (start from `ServeConfig::ephemeral`).
    pub async fn start_with(configure: impl FnOnce(&mut ServeConfig)) -> TestHub {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ServeConfig::ephemeral(dir.path());
        configure(&mut cfg);
        Self::start_configured(dir, cfg).await
    }

    async fn start_configured(dir: tempfile::TempDir, cfg: ServeConfig) -> TestHub {
        let running = fleethub::start(cfg).await.expect("hub starts");
        let ca = std::fs::read(running.ca_file.as_ref().unwrap()).unwrap();
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let base = format!("https://localhost:{}", running.https_addr.port());
        let tls = fleethub_sim::tls_config_trusting(&ca).unwrap();
        let credentials = Credentials {
            host_name: format!("localhost:{}", running.https_addr.port()),
            key_name: "iothubowner".into(),
            key: running.hub.policy("iothubowner").unwrap().primary_key,
        };
        let client = HubClient::new(http.clone(), base.clone(), credentials);
        TestHub {
            running,
            http,
            client,
            base,
            tls,
            _dir: dir,
        }
    }

    /// Stops the hub and hands back its data directory, to start it again with `start_in`.
    pub fn stop(self) -> tempfile::TempDir {
        self.running.shutdown();
        self._dir
    }

    pub fn token(&self, policy: &str) -> String {
        let key = self.running.hub.policy(policy).unwrap().primary_key;
        let host = format!("localhost:{}", self.running.https_addr.port());
        fleethub_core::sas::generate_token(&host, &key, Some(policy), unix_now() + 3600).unwrap()
    }

    /// A REST call as iothubowner.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.call_as(method, path, body, &[], Some(&self.token("iothubowner")))
            .await
    }

    pub async fn call_as(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
        token: Option<&str>,
    ) -> Reply {
        self.client
            .call_as(method, path, body.as_ref(), headers, token)
            .await
            .expect("request sent")
    }

    /// Registers a SAS device and returns its primary key.
    pub async fn create_device(&self, id: &str) -> String {
        let r = self
            .call(
                Method::PUT,
                &format!("/devices/{id}"),
                Some(json!({"deviceId": id})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["authentication"]["symmetricKey"]["primaryKey"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub fn connect_options(&self, id: &str, key: &str) -> ConnectOptions {
        ConnectOptions {
            host: "127.0.0.1".into(),
            port: self.running.mqtt_addr.port(),
            hub_host_name: "localhost".into(),
            device_id: id.into(),
            auth: DeviceAuth::SasKey(key.into()),
            tls: Some(self.tls.clone()),
            clean_session: false,
            keep_alive_secs: 60,
            local_addr: None,
            sas_lifetime_secs: fleethub_sim::TOKEN_LIFETIME_SECS,
        }
    }

    /// Connects a device over MQTT/TLS.
    pub async fn device(&self, id: &str, key: &str) -> (DeviceClient, DeviceEvents) {
        DeviceClient::connect(self.connect_options(id, key))
            .await
            .expect("device connects")
    }

    /// A registered and connected device subscribed to everything.
    pub async fn online_device(&self, id: &str) -> (DeviceClient, DeviceEvents, String) {
        let key = self.create_device(id).await;
        let (client, events) = self.device(id, &key).await;
        let topics = [
            "$iothub/twin/res/#",
            "$iothub/twin/PATCH/properties/desired/#",
            "$iothub/methods/POST/#",
            &format!("devices/{id}/messages/devicebound/#"),
        ];
        let codes = client.subscribe(&topics).await.unwrap();
        assert!(
            codes.iter().all(|c| *c <= 1),
            "subscribe refused: {codes:?}"
        );
        (client, events, key)
    }
}

/// A clean-session MQTT CONNECT for device `id` with a 10-minute SAS token signed by `key`, for
/// tests that speak MQTT over their own stream.
pub fn sas_connect_packet(id: &str, key: &str) -> fleethub_mqtt::codec::Packet {
    let token = fleethub_core::sas::generate_token(
        &format!("localhost/devices/{id}"),
        key,
        None,
        unix_now() + 600,
    )
    .unwrap();
    fleethub_mqtt::codec::Packet::Connect(fleethub_mqtt::codec::Connect {
        protocol_level: 4,
        clean_session: true,
        keep_alive: 60,
        client_id: id.into(),
        username: Some(format!("localhost/{id}/?api-version=2021-04-12")),
        password: Some(token.into_bytes().into()),
        will: None,
    })
}

/// The CONNACK code the hub refused `opts` with; fails the test if it accepted.
pub async fn refusal(opts: fleethub_sim::ConnectOptions) -> u8 {
    match DeviceClient::connect(opts).await {
        Ok(_) => panic!("the hub accepted a connection it should refuse"),
        Err(fleethub_sim::ClientError::Refused(code)) => code,
        Err(e) => panic!("expected a CONNACK refusal, got {e}"),
    }
}

/// Runs the `fleethub` binary as an operator would, pointed at `hub`:
/// `fleethub <before…> --hub <its connection string> --ca <its CA> <after…>`, so a test puts the
/// hub's flags where it means to (before a verb, or last). Returns whether it succeeded, its
/// stdout and its stderr.
pub async fn run_cli(hub: &TestHub, before: &[&str], after: &[&str]) -> (bool, String, String) {
    let ca = hub.running.ca_file.clone().unwrap();
    let mut cmd = cli_command();
    cmd.args(before)
        .arg("--hub")
        .arg(&hub.running.owner_connection_string)
        .arg("--ca")
        .arg(ca)
        .args(after);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `fleethub` binary with no hub from the environment: no connection string, and a profile
/// path that does not exist (so an operator's own `fleethub login` never leaks into a test).
pub fn cli_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fleethub"));
    cmd.env_remove("FLEETHUB_CONNECTION_STRING")
        .env_remove("RUST_BACKTRACE")
        .env(
            "FLEETHUB_PROFILE",
            "/nonexistent/fleethub-test-profile.json",
        );
    cmd
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Polls `check` until it returns Some, failing the test after DEADLINE.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next event matching `pick`, failing after DEADLINE.
pub async fn next_event<T>(
    events: &mut DeviceEvents,
    what: &str,
    mut pick: impl FnMut(DeviceEvent) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .unwrap_or_else(|| panic!("event stream closed while waiting for {what}"));
        if let Some(v) = pick(ev) {
            return v;
        }
    }
}

/// A `fleethub serve` child process; dropping it kills and reaps it.
pub struct Proc {
    pub child: std::process::Child,
    /// The ready file the hub wrote.
    pub ready: Value,
}

impl Proc {
    /// The hub's REST API as iothubowner, as its ready file describes it; each call makes a
    /// client with a fresh connection pool.
    pub fn client(&self) -> HubClient {
        let ca = std::fs::read(self.ready["caFile"].as_str().unwrap()).unwrap();
        let owner = self.ready["ownerConnectionString"].as_str().unwrap();
        let cs = fleethub_core::connection_string::ConnectionString::parse(owner).unwrap();
        let base = format!("https://localhost:{}", self.ready["httpsPort"]);
        HubClient::from_connection_string(&cs, base, Some(&ca)).unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the hub binary over `dir` (port 0 = ephemeral) and waits for its ready file.
pub fn spawn_hub(dir: &std::path::Path, https_port: u16, mqtt_port: u16) -> Proc {
    let (https, mqtt) = (https_port.to_string(), mqtt_port.to_string());
    spawn_hub_with(dir, &["--https-port", &https, "--mqtt-port", &mqtt], None)
}

/// Starts the hub binary over `dir` with more `serve` arguments and, when given, the open-file
/// limit (soft, hard) a shell's `ulimit` would set; waits for its ready file. Its log goes to
/// `dir/hub.log`.
pub fn spawn_hub_with(
    dir: &std::path::Path,
    args: &[&str],
    open_files: Option<(u64, u64)>,
) -> Proc {
    let ready_file = dir.join("ready.json");
    let _ = std::fs::remove_file(&ready_file);
    let hub = env!("CARGO_BIN_EXE_fleethub");
    let mut command = match open_files {
        None => std::process::Command::new(hub),
        Some((soft, hard)) => {
            let mut sh = std::process::Command::new("sh");
            sh.arg("-c")
                .arg(format!(
                    "ulimit -Sn {soft} && ulimit -Hn {hard} && exec \"$0\" \"$@\""
                ))
                .arg(hub);
            sh
        }
    };
    let child = command
        .args(["serve", "--bind", "127.0.0.1"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(args)
        .arg("--ready-file")
        .arg(&ready_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("hub.log")).unwrap())
        .spawn()
        .expect("hub binary starts");
    let mut proc = Proc {
        child,
        ready: Value::Null,
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&ready_file) {
            // The file may be caught half-written: try again until it parses.
            if let Ok(ready) = serde_json::from_str(&text) {
                proc.ready = ready;
                return proc;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "hub did not become ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
