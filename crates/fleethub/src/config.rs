//! `fleethub serve` settings: every one has a default, so the hub starts with no configuration.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

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
    #[arg(long, env = "FLEETHUB_HTTPS_PORT", default_value_t = 8443)]
    pub https_port: u16,
    /// Plain (unencrypted) MQTT, off unless a port is given.
    #[arg(long, env = "FLEETHUB_PLAIN_MQTT_PORT")]
    pub plain_mqtt_port: Option<u16>,
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
    /// Write a JSON file with the connection string, CA path and ports once listening.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

impl ServeConfig {
    /// The defaults with the data directory and every port chosen by the OS: for tests.
    pub fn ephemeral(data_dir: impl Into<PathBuf>) -> ServeConfig {
        ServeConfig {
            data_dir: data_dir.into(),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            mqtt_port: 0,
            https_port: 0,
            plain_mqtt_port: Some(0),
            host_name: "localhost".into(),
            tls_cert: None,
            tls_key: None,
            telemetry_retention_days: 7,
            job_retention_days: 30,
            max_concurrent_jobs: 100,
            job_method_concurrency: 100,
            ready_file: None,
        }
    }
}
