//! `fleethub serve` settings: every one has a default, so the hub starts with no configuration.

use fleethub_hub::{QuotaConfig, Rate};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

/// How to run the hub.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// Where the store, certificates and keys live.
    #[arg(long, env = "FLEETHUB_DATA_DIR", default_value = "./fleethub-data")]
    pub data_dir: PathBuf,
    /// Address every listener binds.
    #[arg(long, env = "FLEETHUB_BIND", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub bind: IpAddr,
    /// MQTT over TLS (the device SDKs hard-code 8883). 0 picks a free port.
    #[arg(long, env = "FLEETHUB_MQTT_PORT", default_value_t = 8883)]
    pub mqtt_port: u16,
    /// HTTPS: REST API, MQTT over WebSocket, /metrics, /healthz. 0 picks a free port.
    /// [default: 443, which the Node.js service SDK and every WebSocket transport hard-code,
    /// when this process may bind it; else 8443, with a note saying why]
    #[arg(long, env = "FLEETHUB_HTTPS_PORT")]
    pub https_port: Option<u16>,
    /// Plain (unencrypted) MQTT, off unless a port is given.
    #[arg(long, env = "FLEETHUB_PLAIN_MQTT_PORT")]
    pub plain_mqtt_port: Option<u16>,
    /// MQTT connections that may wait at once for their CONNECT to be authenticated (TLS
    /// handshake and CONNECT included); over it, a new one is closed at accept. Authenticated
    /// devices never count, so a client that keeps opening connections and never authenticates
    /// holds at most this many file descriptors.
    #[arg(long = "mqtt-max-pending-connections", env = "FLEETHUB_MQTT_MAX_PENDING_CONNECTIONS",
          default_value_t = fleethub_mqtt::DEFAULT_MAX_PENDING_CONNECTIONS as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub mqtt_max_pending: u32,
    /// The host name clients use; it goes into the server certificate and connection strings.
    #[arg(long, env = "FLEETHUB_HOST_NAME", default_value = "localhost")]
    pub host_name: String,
    /// A server certificate chain (PEM) to use instead of the generated one.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Days telemetry is kept.
    #[arg(long, default_value_t = 7)]
    pub telemetry_retention_days: u64,
    /// Days a finished job and its per-device results are kept (IoT Hub keeps 30).
    #[arg(long, env = "FLEETHUB_JOB_RETENTION_DAYS", default_value_t = 30)]
    pub job_retention_days: u64,
    /// The most jobs running at once; more wait as `queued`.
    #[arg(long, env = "FLEETHUB_MAX_CONCURRENT_JOBS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_concurrent_jobs: u64,
    /// Direct-method calls one method job keeps in flight at once.
    #[arg(long, env = "FLEETHUB_JOB_METHOD_CONCURRENCY", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub job_method_concurrency: u64,
    /// Devices per second a configuration is applied to after it changes (unlimited when not
    /// given: as fast as the store writes).
    #[arg(long, env = "FLEETHUB_CONFIGURATION_RATE",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub configuration_rate: Option<u32>,
    /// Write a JSON file with the connection string, CA path and ports once listening.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// Days change-feed events (`GET /v1/events`) are kept.
    #[arg(long, env = "FLEETHUB_EVENT_RETENTION_DAYS", default_value_t = 7)]
    pub event_retention_days: u64,
    /// The most megabytes the database may grow to; a write beyond it answers 503 "store is
    /// full", as on a full disk. Unset: the disk is the limit.
    #[arg(long, env = "FLEETHUB_STORE_MAX_MB")]
    pub store_max_mb: Option<u64>,
    /// The firmware signing key (PKCS#8 PEM, ECDSA P-256) to use instead of the one the hub
    /// generates on first start in <data-dir>/tls/firmware-signing.key.
    #[arg(long, env = "FLEETHUB_FIRMWARE_SIGNING_KEY")]
    pub firmware_signing_key: Option<PathBuf>,
    /// The start of firmware download URLs (e.g. https://fw.example.com behind a proxy).
    /// [default: https://<host-name>:<https port>]
    #[arg(long, env = "FLEETHUB_FIRMWARE_BASE_URL")]
    pub firmware_base_url: Option<String>,
    /// Megabytes of firmware images held in memory for downloads, shared by every download of
    /// an image; an image over a quarter of this streams from disk for each download (0: all do).
    #[arg(long, env = "FLEETHUB_FIRMWARE_CACHE_MB", default_value_t = 256)]
    pub firmware_cache_mb: u64,
    /// Megabytes of devices' twins (reported sections, whole twins after a service change) the
    /// writer keeps parsed after committing them, so that a device's next report or desired-only
    /// change is merged without reading its twin back (0: none kept).
    #[arg(long, env = "FLEETHUB_REPORTED_CACHE_MB", default_value_t = 64)]
    pub reported_cache_mb: u64,
    /// Quotas (IoT Hub's throttling as the model): rates per second, 0 for no limit.
    #[command(flatten)]
    pub quotas: QuotaArgs,
    /// How long HTTPS clients may idle and how many connections they may hold.
    #[command(flatten)]
    pub https_limits: HttpsLimitArgs,
    /// The hub's clock: the wall clock unless a caller in this process supplies another
    /// (`fleethub demo` compresses a night into minutes).
    #[arg(skip)]
    pub clock: HubClock,
}

/// The clock a hub started in this process runs on; the wall clock by default.
#[derive(Clone)]
pub struct HubClock(pub std::sync::Arc<dyn fleethub_core::Clock>);

impl Default for HubClock {
    fn default() -> Self {
        HubClock(std::sync::Arc::new(fleethub_core::SystemClock))
    }
}

impl std::fmt::Debug for HubClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HubClock({})", self.0.now())
    }
}

/// Limits on HTTPS connections, so that idle, slow or hostile HTTPS clients can never take the
/// file descriptors device connections need. A connection upgraded to MQTT over WebSocket is a
/// device connection: none of these apply to it once it is upgraded.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpsLimitArgs {
    /// Seconds a client has to send a complete request head, counted from the connection
    /// opening (whatever the protocol) and, on HTTP/1, from the previous response.
    #[arg(long = "https-header-timeout-seconds", env = "FLEETHUB_HTTPS_HEADER_TIMEOUT_SECONDS",
          default_value = "20", value_parser = parse_seconds)]
    pub header_timeout: Duration,
    /// Seconds an HTTPS connection may stay open with no request in flight after its first
    /// request (HTTP/1 connections between requests are held to the header timeout too), and a
    /// request body may send nothing while the hub waits for it.
    #[arg(long = "https-idle-timeout-seconds", env = "FLEETHUB_HTTPS_IDLE_TIMEOUT_SECONDS",
          default_value = "60", value_parser = parse_seconds)]
    pub idle_timeout: Duration,
    /// HTTPS connections one source address (an IPv6 /64) may hold at once; over it, a new one
    /// is closed before TLS. 0 for no limit (behind a reverse proxy, all clients are one address).
    #[arg(
        long = "https-connections-per-address",
        env = "FLEETHUB_HTTPS_CONNECTIONS_PER_ADDRESS",
        default_value_t = 64
    )]
    pub per_address: u32,
    /// HTTPS connections open at once, WebSocket devices not counted; over it, a new one is
    /// closed before TLS. [default: a tenth of the open-file limit, between 16 and 4,096, so that
    /// most file descriptors stay for devices]
    #[arg(long = "https-max-connections", env = "FLEETHUB_HTTPS_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
}

impl Default for HttpsLimitArgs {
    fn default() -> Self {
        HttpsLimitArgs {
            header_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            per_address: 64,
            max_connections: None,
        }
    }
}

/// A positive number of seconds, fractions allowed ("0.5").
fn parse_seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() => Duration::try_from_secs_f64(secs)
            .map_err(|e| format!("{text} seconds is out of range: {e}")),
        _ => Err(format!(
            "expected a positive number of seconds, got '{text}'"
        )),
    }
}

/// Per-device and per-hub rates. Telemetry over its rate is slowed (the gateway stops reading
/// the device's socket), a reported patch over its rate gets 429, a connection over the hub's
/// rate gets CONNACK 3.
#[derive(Debug, Clone, clap::Args)]
pub struct QuotaArgs {
    /// Telemetry messages per second from one device.
    #[arg(long, env = "FLEETHUB_DEVICE_TELEMETRY_RATE", default_value_t = 100.0)]
    pub device_telemetry_rate: f64,
    /// Reported-property updates per second from one device.
    #[arg(long, env = "FLEETHUB_DEVICE_REPORTED_RATE", default_value_t = 100.0)]
    pub device_reported_rate: f64,
    /// Telemetry messages per second from all devices together.
    #[arg(long, env = "FLEETHUB_HUB_TELEMETRY_RATE", default_value_t = 0.0)]
    pub hub_telemetry_rate: f64,
    /// Reported-property updates per second from all devices together.
    #[arg(long, env = "FLEETHUB_HUB_REPORTED_RATE", default_value_t = 0.0)]
    pub hub_reported_rate: f64,
    /// New device connections per second.
    #[arg(long, env = "FLEETHUB_HUB_CONNECTION_RATE", default_value_t = 0.0)]
    pub hub_connection_rate: f64,
    /// Each limit's burst, in seconds' worth of its rate (at least one operation).
    #[arg(long, env = "FLEETHUB_QUOTA_BURST_SECONDS", default_value_t = 2.0)]
    pub quota_burst_seconds: f64,
}

impl Default for QuotaArgs {
    fn default() -> Self {
        QuotaArgs {
            device_telemetry_rate: 100.0,
            device_reported_rate: 100.0,
            hub_telemetry_rate: 0.0,
            hub_reported_rate: 0.0,
            hub_connection_rate: 0.0,
            quota_burst_seconds: 2.0,
        }
    }
}

impl QuotaArgs {
    /// The hub's quota settings.
    pub fn to_config(&self) -> QuotaConfig {
        let rate = |per_second| Rate::with_burst_seconds(per_second, self.quota_burst_seconds);
        QuotaConfig {
            device_telemetry: rate(self.device_telemetry_rate),
            device_reported: rate(self.device_reported_rate),
            hub_telemetry: rate(self.hub_telemetry_rate),
            hub_reported: rate(self.hub_reported_rate),
            hub_connections: rate(self.hub_connection_rate),
        }
    }
}

impl ServeConfig {
    /// The defaults with the data directory and every port chosen by the OS: for tests.
    pub fn ephemeral(data_dir: impl Into<PathBuf>) -> ServeConfig {
        ServeConfig {
            data_dir: data_dir.into(),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            mqtt_port: 0,
            https_port: Some(0),
            plain_mqtt_port: Some(0),
            mqtt_max_pending: fleethub_mqtt::DEFAULT_MAX_PENDING_CONNECTIONS as u32,
            host_name: "localhost".into(),
            tls_cert: None,
            tls_key: None,
            telemetry_retention_days: 7,
            job_retention_days: 30,
            max_concurrent_jobs: 100,
            job_method_concurrency: 100,
            configuration_rate: None,
            ready_file: None,
            event_retention_days: 7,
            store_max_mb: None,
            firmware_signing_key: None,
            firmware_base_url: None,
            firmware_cache_mb: 256,
            reported_cache_mb: 64,
            quotas: QuotaArgs::default(),
            https_limits: HttpsLimitArgs::default(),
            clock: HubClock::default(),
        }
    }
}
