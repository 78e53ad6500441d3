//! Wiring: opens the store, the hub, and the MQTT and HTTPS listeners.

use crate::config::ServeConfig;
use crate::tls;
use anyhow::{Context, Result};
use fleethub_api::ApiState;
use fleethub_hub::{Hub, HubConfig, JobsConfig};
use fleethub_mqtt::{Gateway, GatewayConfig};
use fleethub_store::{Store, StoreConfig};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
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
        })
    }
}

async fn bind(cfg: &ServeConfig, port: u16, what: &str) -> Result<TcpListener> {
    let addr = SocketAddr::new(cfg.bind, port);
    TcpListener::bind(addr).await.with_context(|| {
        format!("binding {what} on {addr} (is another hub running? choose another port)")
    })
}

/// Starts everything; returns once every listener is bound.
pub async fn start(cfg: ServeConfig) -> Result<RunningHub> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    let data_dir = cfg.data_dir.canonicalize()?;
    let supplied = cfg.tls_cert.clone().zip(cfg.tls_key.clone());
    let certs = tls::ensure_certificates(&data_dir, &cfg.host_name, supplied)?;

    let store_config = StoreConfig {
        max_size_bytes: cfg.store_max_mb.map(|mb| mb.saturating_mul(1024 * 1024)),
        ..StoreConfig::new(data_dir.join("fleethub.db"))
    };
    let store = Store::open(store_config).context("opening the store")?;
    let hub_config = HubConfig {
        host_name: cfg.host_name.clone(),
        telemetry_retention: Duration::from_secs(cfg.telemetry_retention_days * 24 * 3600),
        event_retention: Duration::from_secs(cfg.event_retention_days.saturating_mul(24 * 3600)),
        quotas: cfg.quotas.to_config(),
        jobs: JobsConfig {
            retention: Duration::from_secs(cfg.job_retention_days.saturating_mul(24 * 3600)),
            max_concurrent: usize::try_from(cfg.max_concurrent_jobs).unwrap_or(usize::MAX),
            method_concurrency: usize::try_from(cfg.job_method_concurrency).unwrap_or(usize::MAX),
            ..JobsConfig::default()
        },
        ..HubConfig::default()
    };
    let hub = Hub::open(
        store.clone(),
        Arc::new(fleethub_core::SystemClock),
        hub_config,
    )
    .await?;
    let gateway = Gateway::new(hub.clone(), GatewayConfig::default());

    let mqtt = bind(&cfg, cfg.mqtt_port, "MQTT/TLS").await?;
    let https = bind(&cfg, cfg.https_port, "HTTPS").await?;
    let plain = match cfg.plain_mqtt_port {
        Some(p) => Some(bind(&cfg, p, "plain MQTT").await?),
        None => None,
    };
    let (mqtt_addr, https_addr) = (mqtt.local_addr()?, https.local_addr()?);
    let plain_mqtt_addr = plain.as_ref().map(|l| l.local_addr()).transpose()?;

    let mut tasks = Vec::new();
    let mqtt_tls = TlsAcceptor::from(tls::mqtt_server_config(&certs)?);
    let g = gateway.clone();
    tasks.push(tokio::spawn(
        async move { g.serve_tls(mqtt, mqtt_tls).await },
    ));
    if let Some(plain) = plain {
        let g = gateway.clone();
        tasks.push(tokio::spawn(async move { g.serve_plain(plain).await }));
    }
    let router = fleethub_api::router(ApiState {
        hub: hub.clone(),
        gateway,
    });
    let https_tls = TlsAcceptor::from(tls::https_server_config(&certs)?);
    tasks.push(tokio::spawn(serve_https(https, https_tls, router)));

    let public_host = match https_addr.port() {
        443 => cfg.host_name.clone(),
        p => format!("{}:{p}", cfg.host_name),
    };
    let owner_connection_string = hub
        .service_connection_string("iothubowner", &public_host)
        .context("the iothubowner policy is missing from the store")?;
    let running = RunningHub {
        hub,
        store,
        mqtt_addr,
        https_addr,
        plain_mqtt_addr,
        ca_file: certs.ca,
        owner_connection_string,
        host_name: cfg.host_name.clone(),
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

async fn serve_https(listener: TcpListener, tls: TlsAcceptor, router: axum::Router) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("HTTPS accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (tls, router) = (tls.clone(), router.clone());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(Duration::from_secs(10), tls.accept(tcp)).await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::debug!(%peer, "HTTPS handshake failed: {e}"),
                Err(_) => return tracing::debug!(%peer, "HTTPS handshake timed out"),
            };
            let service = TowerToHyperService::new(router);
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, "HTTPS connection ended: {e}");
            }
        });
    }
}
