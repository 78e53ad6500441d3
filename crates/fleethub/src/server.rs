//! Wiring: opens the store, the hub, and the MQTT and HTTPS listeners.

use crate::config::ServeConfig;
use crate::fd_budget::FdBudget;
use crate::https::admission::Caps;
use crate::https::HttpsLimits;
use anyhow::{Context, Result};
use fleethub_api::ApiState;
use fleethub_hub::{FirmwareConfig, Hub, HubConfig, JobsConfig};
use fleethub_mqtt::{Gateway, GatewayConfig};
use fleethub_store::{Store, StoreConfig};
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// A hub that is up and listening.
pub struct RunningHub {
    pub hub: Hub,
    pub store: Store,
    pub mqtt_addr: SocketAddr,
    pub https_addr: SocketAddr,
    pub plain_mqtt_addr: Option<SocketAddr>,
    /// The CA clients must trust, when the hub generated its own certificate.
    pub ca_file: Option<PathBuf>,
    /// `HostName=…;SharedAccessKeyName=iothubowner;SharedAccessKey=…` for the REST API.
    pub owner_connection_string: String,
    pub host_name: String,
    /// Why HTTPS is not on 443 when the port was left to the hub (shown to the operator).
    pub https_note: Option<String>,
    /// How the open-file limit is shared between HTTPS and devices.
    pub fd_budget: FdBudget,
    /// The web dashboard's address.
    pub dashboard_url: String,
    /// A link that signs its first visitor in to the dashboard as `iothubowner` (one use,
    /// 15 minutes, this process only).
    pub sign_in_link: String,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningHub {
    /// Stops the listeners and closes the store after queued writes.
    pub fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.store.close();
    }

    /// What `--ready-file` receives.
    pub fn ready_json(&self, data_dir: &std::path::Path) -> serde_json::Value {
        json!({
            "ownerConnectionString": self.owner_connection_string,
            "caFile": self.ca_file,
            "mqttPort": self.mqtt_addr.port(),
            "httpsPort": self.https_addr.port(),
            "plainMqttPort": self.plain_mqtt_addr.map(|a| a.port()),
            "hostName": self.host_name,
            "dataDir": data_dir,
            "dashboardUrl": self.dashboard_url,
            "signInLink": self.sign_in_link,
        })
    }
}

async fn bind(cfg: &ServeConfig, port: u16, what: &str) -> Result<TcpListener> {
    let addr = SocketAddr::new(cfg.bind, port);
    TcpListener::bind(addr).await.with_context(|| {
        format!("binding {what} on {addr} (is another hub running? choose another port)")
    })
}

/// Where HTTPS goes when `--https-port` is not given: the port every official SDK can reach,
/// else one an unprivileged process may bind.
#[derive(Debug, Clone, Copy)]
struct HttpsPorts {
    preferred: u16,
    fallback: u16,
}

/// 443, which the Node.js service SDK and every SDK's MQTT over WebSocket hard-code; 8443 when
/// this process may not bind 443 (not root, no CAP_NET_BIND_SERVICE) or something holds it.
const HTTPS_DEFAULT_PORTS: HttpsPorts = HttpsPorts {
    preferred: 443,
    fallback: 8443,
};

/// Binds HTTPS on `--https-port`, or on the preferred port with the fallback; the note says why
/// the fallback was taken and what that costs.
async fn bind_https(cfg: &ServeConfig, ports: HttpsPorts) -> Result<(TcpListener, Option<String>)> {
    if let Some(port) = cfg.https_port {
        return Ok((bind(cfg, port, "HTTPS").await?, None));
    }
    let error = match TcpListener::bind(SocketAddr::new(cfg.bind, ports.preferred)).await {
        Ok(listener) => return Ok((listener, None)),
        Err(e) => e,
    };
    let why = match error.kind() {
        std::io::ErrorKind::PermissionDenied => {
            "this process may not bind it (it is not root and lacks CAP_NET_BIND_SERVICE)".into()
        }
        std::io::ErrorKind::AddrInUse => "another program listens there".into(),
        _ => error.to_string(),
    };
    let note = format!(
        "HTTPS is on {fallback}, not {preferred}: {why}. The Python SDKs and the fleethub CLI \
         work with the port in the connection string; the Node.js service SDK and MQTT over \
         WebSocket (every device SDK) only use {preferred}. To serve them, let the binary bind \
         {preferred} (`sudo setcap cap_net_bind_service=+ep $(command -v fleethub)`) or pass \
         --https-port; see docs/operations.md",
        fallback = ports.fallback,
        preferred = ports.preferred,
    );
    tracing::warn!("{note}");
    Ok((bind(cfg, ports.fallback, "HTTPS").await?, Some(note)))
}

/// The host name service clients are given: no port on 443, since IoT Hub's connection strings
/// carry none (the Node.js service SDK refuses one).
fn public_host(host_name: &str, https_port: u16) -> String {
    match https_port {
        443 => host_name.to_string(),
        port => format!("{host_name}:{port}"),
    }
}

/// The HTTPS listener's limits from the settings and the descriptor budget.
fn https_limits(cfg: &ServeConfig, budget: &FdBudget) -> HttpsLimits {
    let args = &cfg.https_limits;
    HttpsLimits {
        header_timeout: args.header_timeout,
        idle_timeout: args.idle_timeout,
        caps: Caps {
            per_address: args.per_address,
            total: budget.https_connections,
        },
    }
}

/// Every name the server certificate is valid for (its subject alternative names): the names
/// clients can reach the hub by, so the names service tokens may carry.
fn server_names(paths: &fleethub_tls::CertificatePaths) -> Result<Vec<String>> {
    let (certs, _) = fleethub_tls::load_server_certificate(paths)?;
    Ok(certs
        .first()
        .map(|c| fleethub_hub::certificates::subject_alt_names(c))
        .unwrap_or_default())
}

/// The firmware store in `<data>/firmware`, signed with the operator's key or the hub's own
/// (generated beside the CA, or in `<data>/firmware` when the operator supplied the certificate).
fn firmware_config(cfg: &ServeConfig, data_dir: &std::path::Path) -> FirmwareConfig {
    let mut firmware = FirmwareConfig::in_data_dir(data_dir);
    if cfg.tls_cert.is_some() {
        // No generated CA to sit beside: the data directory keeps no tls/ of its own then.
        firmware.signing_key = firmware.dir.join("signing.key");
    }
    if let Some(key) = &cfg.firmware_signing_key {
        firmware.signing_key = key.clone();
        firmware.generate_key = false;
    }
    firmware.base_url = cfg.firmware_base_url.clone();
    firmware.cache_bytes = cfg.firmware_cache_mb.saturating_mul(1024 * 1024);
    firmware
}

/// Starts everything; returns once every listener is bound.
pub async fn start(cfg: ServeConfig) -> Result<RunningHub> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    let data_dir = cfg.data_dir.canonicalize()?;
    let supplied = cfg.tls_cert.clone().zip(cfg.tls_key.clone());
    let certs = fleethub_tls::ensure_certificates(&data_dir, &cfg.host_name, supplied)?;

    let store_config = StoreConfig {
        max_size_bytes: cfg.store_max_mb.map(|mb| mb.saturating_mul(1024 * 1024)),
        ..StoreConfig::new(data_dir.join("fleethub.db"))
    };
    let store = Store::open(store_config).context("opening the store")?;
    let hub_config = HubConfig {
        host_name: cfg.host_name.clone(),
        host_aliases: server_names(&certs)?,
        telemetry_retention: Duration::from_secs(cfg.telemetry_retention_days * 24 * 3600),
        event_retention: Duration::from_secs(cfg.event_retention_days.saturating_mul(24 * 3600)),
        quotas: cfg.quotas.to_config(),
        jobs: JobsConfig {
            retention: Duration::from_secs(cfg.job_retention_days.saturating_mul(24 * 3600)),
            max_concurrent: usize::try_from(cfg.max_concurrent_jobs).unwrap_or(usize::MAX),
            method_concurrency: usize::try_from(cfg.job_method_concurrency).unwrap_or(usize::MAX),
            ..JobsConfig::default()
        },
        firmware: Some(firmware_config(&cfg, &data_dir)),
        configuration_rate: cfg.configuration_rate,
        reported_cache_bytes: usize::try_from(cfg.reported_cache_mb.saturating_mul(1024 * 1024))
            .unwrap_or(usize::MAX),
        ..HubConfig::default()
    };
    let hub = Hub::open(store.clone(), cfg.clock.0.clone(), hub_config).await?;
    let gateway = Gateway::new(
        hub.clone(),
        GatewayConfig {
            max_pending_connections: cfg.mqtt_max_pending as usize,
            ..GatewayConfig::default()
        },
    );
    let fd_budget = FdBudget::raise_and_plan(cfg.https_limits.max_connections);
    tracing::info!("{fd_budget}");
    if fd_budget.devices < fd_budget.https_connections {
        tracing::warn!(
            "HTTPS may hold more connections ({}) than are left for devices ({}): lower \
             --https-max-connections or raise the open-file limit (ulimit -n, LimitNOFILE=)",
            fd_budget.https_connections,
            fd_budget.devices
        );
    }

    let mqtt = bind(&cfg, cfg.mqtt_port, "MQTT/TLS").await?;
    let (https, https_note) = bind_https(&cfg, HTTPS_DEFAULT_PORTS).await?;
    let plain = match cfg.plain_mqtt_port {
        Some(p) => Some(bind(&cfg, p, "plain MQTT").await?),
        None => None,
    };
    let (mqtt_addr, https_addr) = (mqtt.local_addr()?, https.local_addr()?);
    let plain_mqtt_addr = plain.as_ref().map(|l| l.local_addr()).transpose()?;
    hub.set_firmware_base_url(&format!(
        "https://{}",
        public_host(&cfg.host_name, https_addr.port())
    ));

    let mut tasks = Vec::new();
    let mqtt_tls = TlsAcceptor::from(fleethub_tls::mqtt_server_config(&certs)?);
    let g = gateway.clone();
    tasks.push(tokio::spawn(
        async move { g.serve_tls(mqtt, mqtt_tls).await },
    ));
    if let Some(plain) = plain {
        let g = gateway.clone();
        tasks.push(tokio::spawn(async move { g.serve_plain(plain).await }));
    }
    let dashboard = std::sync::Arc::new(fleethub_api::dashboard::Dashboard::default());
    let api = fleethub_api::service(ApiState {
        hub: hub.clone(),
        gateway,
        dashboard: dashboard.clone(),
    });
    let https_tls = TlsAcceptor::from(fleethub_tls::https_server_config(&certs)?);
    let limits = https_limits(&cfg, &fd_budget);
    tasks.push(tokio::spawn(crate::https::serve(
        https,
        https_tls,
        api,
        hub.clone(),
        limits,
    )));

    let owner_connection_string = hub
        .service_connection_string(
            "iothubowner",
            &public_host(&cfg.host_name, https_addr.port()),
        )
        .context("the iothubowner policy is missing from the store")?;
    let dashboard_url = format!(
        "https://{}/",
        public_host(&cfg.host_name, https_addr.port())
    );
    let sign_in_link = format!(
        "{dashboard_url}#signin={}",
        dashboard.sign_in_token("iothubowner")
    );
    let running = RunningHub {
        hub,
        store,
        mqtt_addr,
        https_addr,
        plain_mqtt_addr,
        ca_file: certs.ca,
        owner_connection_string,
        host_name: cfg.host_name.clone(),
        https_note,
        fd_budget,
        dashboard_url,
        sign_in_link,
        tasks,
    };
    if let Some(path) = &cfg.ready_file {
        let text = serde_json::to_string_pretty(&running.ready_json(&data_dir))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)?;
    }
    Ok(running)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_string_host_has_no_port_on_443() {
        assert_eq!(public_host("hub.example.com", 443), "hub.example.com");
        assert_eq!(public_host("localhost", 8443), "localhost:8443");
    }

    /// When the preferred port cannot be had, HTTPS takes the fallback and says why; a port the
    /// operator chose is used as given.
    #[tokio::test]
    async fn https_falls_back_with_a_note_when_the_preferred_port_is_taken() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ports = HttpsPorts {
            preferred: taken.local_addr().unwrap().port(),
            fallback: 0,
        };
        let mut cfg = ServeConfig::ephemeral("unused");
        cfg.https_port = None;
        let (listener, note) = bind_https(&cfg, ports).await.unwrap();
        assert_ne!(listener.local_addr().unwrap().port(), ports.preferred);
        let note = note.expect("the fallback is explained");
        assert!(note.contains("another program listens there"), "{note}");
        assert!(note.contains("Node.js"), "{note}");

        cfg.https_port = Some(0);
        let (_, note) = bind_https(&cfg, ports).await.unwrap();
        assert_eq!(note, None);
    }
}
