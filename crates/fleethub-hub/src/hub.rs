//! The `Hub`: configuration, the shared state every operation uses, and background upkeep.

use crate::auth::Policy;
use crate::connections::{ConnectionHandle, Connections, DeviceCommand};
use crate::firmware::{FirmwareConfig, FirmwareState};
use crate::jobs::{JobsConfig, JobsState};
use crate::messages::TelemetryEvent;
use crate::methods::PendingMethods;
use crate::metrics::Metrics;
use crate::quota::{HubQuotas, QuotaConfig};
use crate::twin_cache::TwinCache;
use fleethub_core::connection_string::ConnectionString;
use fleethub_core::{Clock, HubError, HubResult};
use fleethub_store::{Reads, Store, StoreError, WriteTx};
use parking_lot::RwLock;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// Settings of the application core.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// The host name devices and services use (`HostName=` in connection strings).
    pub host_name: String,
    /// Other names the hub answers to (the server certificate's other subject alternative names);
    /// a service token's `sr` must name `host_name` or one of these.
    pub host_aliases: Vec<String>,
    /// How long telemetry is kept.
    pub telemetry_retention: Duration,
    /// Most undelivered cloud-to-device messages per device (IoT Hub: 50).
    pub c2d_max_queue: u64,
    /// How long change-feed events are kept.
    pub event_retention: Duration,
    /// How often expired messages, old telemetry and events, and expired jobs are removed.
    pub upkeep_interval: Duration,
    /// The job engine's settings.
    pub jobs: JobsConfig,
    /// Per-device and per-hub throttling.
    pub quotas: QuotaConfig,
    /// The firmware store's files and keys; `None` runs without one (its routes answer 503).
    pub firmware: Option<FirmwareConfig>,
    /// Devices per second a changed configuration is applied to; `None`: unlimited.
    pub configuration_rate: Option<u32>,
    /// Bytes of twins (reported sections, and whole twins after a desired change) the writer
    /// keeps parsed after committing them ([`crate::twin_cache`]); 0 keeps none.
    pub reported_cache_bytes: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            host_name: "localhost".into(),
            host_aliases: Vec::new(),
            telemetry_retention: Duration::from_secs(7 * 24 * 3600),
            c2d_max_queue: 50,
            event_retention: Duration::from_secs(7 * 24 * 3600),
            upkeep_interval: Duration::from_secs(60),
            jobs: JobsConfig::default(),
            quotas: QuotaConfig::default(),
            firmware: None,
            configuration_rate: None,
            reported_cache_bytes: crate::twin_cache::DEFAULT_REPORTED_CACHE_BYTES,
        }
    }
}

pub(crate) struct HubInner {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub config: HubConfig,
    pub policies: RwLock<Vec<Policy>>,
    /// The uploaded CAs, with the generation of the write that produced this copy.
    pub ca_certificates: RwLock<(u64, Vec<StoredCertificate>)>,
    /// Bumped by each CA write, inside it (writes run one at a time in commit order).
    pub ca_generation: AtomicU64,
    pub connections: Connections,
    pub methods: PendingMethods,
    pub metrics: Metrics,
    pub telemetry_tx: broadcast::Sender<Arc<TelemetryEvent>>,
    pub jobs: Arc<JobsState>,
    pub quotas: HubQuotas,
    pub firmware: Option<Arc<FirmwareState>>,
    pub configurations: Arc<crate::configurations::apply::ConfigurationsState>,
    pub rollouts: Arc<crate::rollouts::engine::RolloutsState>,
    /// Twins as last committed, for the next report's or desired patch's merge.
    pub twins: Arc<TwinCache>,
}

/// An uploaded CA certificate that device certificates may chain to.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StoredCertificate {
    pub name: String,
    pub pem: String,
    pub der: Vec<u8>,
}

/// The application core; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    pub(crate) inner: Arc<HubInner>,
}

/// Rows removed per write while pruning.
const PRUNE_BATCH: usize = 5000;

const POLICIES_KEY: &str = "auth.policies";
const CERTIFICATES_KEY: &str = "auth.ca_certificates";

impl Hub {
    /// The hub's shared state over `store`, with the access policies loaded (or on first start
    /// created) and the query functions on every store connection; nothing running yet.
    /// [`Hub::open`] (in `startup.rs`) is this plus crash recovery, the engines and upkeep.
    pub(crate) async fn assemble(
        store: Store,
        clock: Arc<dyn Clock>,
        config: HubConfig,
    ) -> HubResult<Hub> {
        let policies = load_or_create_policies(&store).await?;
        let certs = parse_certificates(store.read(|r| r.get_setting(CERTIFICATES_KEY)).await?)?;
        let (telemetry_tx, _) = broadcast::channel(4096);
        let quotas = HubQuotas::new(&config.quotas);
        let firmware = config
            .firmware
            .clone()
            .map(FirmwareState::open)
            .transpose()?
            .map(Arc::new);
        let twins = Arc::new(TwinCache::new(config.reported_cache_bytes));
        let hub = Hub {
            inner: Arc::new(HubInner {
                store,
                clock,
                config,
                quotas,
                policies: RwLock::new(policies),
                ca_certificates: RwLock::new((0, certs)),
                ca_generation: AtomicU64::new(0),
                connections: Connections::default(),
                methods: PendingMethods::default(),
                metrics: Metrics::default(),
                telemetry_tx,
                jobs: Arc::default(),
                firmware,
                configurations: Arc::default(),
                rollouts: Arc::default(),
                twins,
            }),
        };
        // The store registers the functions compiled queries call on every connection; only
        // `connectionState` needs the hub, which the store asks through this.
        hub.store().set_presence(hub.presence());
        Ok(hub)
    }

    /// The job engine's in-memory state.
    pub(crate) fn jobs_state(&self) -> &Arc<JobsState> {
        &self.inner.jobs
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The counters behind `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The hub's settings.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// The live connections.
    pub fn connections(&self) -> &Connections {
        &self.inner.connections
    }

    /// Now, by the hub's clock.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.inner.clock.now()
    }

    pub(crate) fn now_string(&self) -> String {
        fleethub_core::time::format_timestamp(self.inner.clock.now())
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.inner.clock.now().timestamp_millis()
    }

    pub(crate) fn now_unix(&self) -> u64 {
        self.inner.clock.unix()
    }

    pub(crate) fn now_nanos(&self) -> i64 {
        self.inner
            .clock
            .now()
            .timestamp_nanos_opt()
            .unwrap_or_default()
    }

    /// A shared access policy by name.
    pub fn policy(&self, name: &str) -> Option<Policy> {
        self.inner
            .policies
            .read()
            .iter()
            .find(|p| p.key_name == name)
            .cloned()
    }

    /// The connection string of a policy, e.g. `iothubowner`, for the given public host name.
    pub fn service_connection_string(&self, policy: &str, host_name: &str) -> Option<String> {
        let p = self.policy(policy)?;
        let cs = ConnectionString {
            host_name: host_name.to_string(),
            shared_access_key_name: Some(p.key_name),
            shared_access_key: Some(p.primary_key),
            ..Default::default()
        };
        Some(cs.to_string())
    }

    /// Prometheus text for `/metrics`.
    pub fn metrics_text(&self) -> String {
        let r = self.inner.rollouts.figures();
        let gauges = [
            (
                "fleethub_connected_devices",
                "Devices with a live connection",
                self.inner.connections.count() as u64,
            ),
            (
                "fleethub_rollout_observations_total",
                "Device reports, connections and telemetry the rollout engine took in",
                r.observations,
            ),
            (
                "fleethub_rollout_unqueued_reports_total",
                "Reported patches the rollout engine did not queue: no unfinished rollout's target reads what they touched",
                r.unqueued_reports,
            ),
            (
                "fleethub_rollout_membership_reads_total",
                "Twins the rollout engine read to judge whether a device joins or leaves a target",
                r.membership_reads,
            ),
            (
                "fleethub_rollout_pass_nanoseconds_total",
                "Time spent in rollout engine passes, commits included",
                r.pass_nanos,
            ),
            (
                "fleethub_rollout_gate_decisions_total",
                "Rollout gate decisions (passed or tripped) committed",
                r.gate_decisions,
            ),
            (
                "fleethub_rollout_gate_decision_latency_max_microseconds",
                "Longest time from a deciding observation to its gate decision's commit",
                r.decision_latency_max_us,
            ),
            (
                "fleethub_rollout_gate_decision_latency_microseconds_total",
                "Summed time from deciding observations to their gate decisions' commits",
                r.decision_latency_sum_us,
            ),
            (
                "fleethub_rollout_gate_decision_queued_microseconds_total",
                "Of that, summed time from the deciding observation to the pass that took it in",
                r.decision_queued_sum_us,
            ),
            (
                "fleethub_rollout_gate_decision_pass_microseconds_total",
                "Of that, summed time from the pass taking it in to its step handed to the store",
                r.decision_pass_sum_us,
            ),
            (
                "fleethub_rollout_gate_decision_commit_microseconds_total",
                "Of that, summed time from the step handed to the store to its commit",
                r.decision_commit_sum_us,
            ),
        ];
        self.inner.metrics.render(&gauges)
    }

    /// Registers a device's new connection; commands for it arrive on `tx`. Closes any older
    /// connection of the same device.
    pub fn device_connected(
        &self,
        device_id: &str,
        tx: mpsc::UnboundedSender<DeviceCommand>,
    ) -> ConnectionHandle {
        let (conn_id, state) = self.inner.connections.register(device_id, tx);
        self.inner
            .rollouts
            .observe(fleethub_rollout::Observation::Connected {
                device: device_id.to_string(),
            });
        self.metrics()
            .connections_accepted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ConnectionHandle {
            hub: self.clone(),
            device_id: device_id.to_string(),
            conn_id,
            state,
        }
    }

    pub(crate) fn connection_closed(&self, device_id: &str, conn_id: u64) {
        let was_current = self.inner.connections.unregister(device_id, conn_id);
        // Calls sent to this connection fail now, even when a newer connection replaced it.
        // After unregistering: a call sent meanwhile sees the connection gone and fails itself.
        self.fail_pending_methods(conn_id);
        if was_current {
            self.inner.connections.notify();
        }
    }

    /// The persisted MQTT session (subscriptions) of a client id.
    pub async fn load_session(&self, client_id: &str) -> HubResult<Option<Value>> {
        let key = client_id.to_string();
        Ok(self
            .store()
            .read_point(move |r| r.get_session(&key))
            .await?)
    }

    /// Persists an MQTT session; committed before this resolves.
    pub async fn save_session(&self, client_id: &str, session: Value) -> HubResult<()> {
        let key = client_id.to_string();
        self.store()
            .write(move |tx| tx.put_session(&key, &session).map_err(HubError::from))
            .await
    }

    /// Forgets an MQTT session (clean_session=1).
    pub async fn delete_session(&self, client_id: &str) -> HubResult<()> {
        let key = client_id.to_string();
        self.store()
            .write(move |tx| tx.delete_session(&key).map_err(HubError::from))
            .await
    }

    /// Runs a bounded delete (`delete(tx, batch)` removes at most `batch` rows) one write at a
    /// time until a batch comes back short, so other writes interleave instead of queueing behind
    /// one huge delete. Returns how many rows went.
    pub(crate) async fn prune_in_batches<F>(&self, delete: F) -> HubResult<u64>
    where
        F: Fn(&mut WriteTx<'_>, usize) -> Result<u64, StoreError> + Clone + Send + 'static,
    {
        let mut pruned = 0;
        loop {
            let delete = delete.clone();
            let n = self
                .store()
                .write(move |tx| delete(tx, PRUNE_BATCH))
                .await?;
            pruned += n;
            if n < PRUNE_BATCH as u64 {
                return Ok(pruned);
            }
        }
    }

    /// Uploads a CA certificate (PEM) that `certificateAuthority` devices may chain to. The list
    /// is read, changed and written in one store write, so concurrent uploads all stay.
    pub async fn put_certificate(
        &self,
        name: &str,
        pem: &str,
    ) -> HubResult<crate::certificates::UploadedCertificate> {
        let der = crate::certificates::ca_pem_to_der(pem)?;
        let thumbprint = crate::certificates::thumbprint(&der);
        let cert = StoredCertificate {
            name: name.to_string(),
            pem: pem.to_string(),
            der,
        };
        let inner = self.inner.clone();
        let (generation, all) = self
            .store()
            .write(move |tx| {
                let mut all = parse_certificates(tx.get_setting(CERTIFICATES_KEY)?)?;
                all.retain(|c| c.name != cert.name);
                all.push(cert);
                let text =
                    serde_json::to_string(&all).map_err(|e| HubError::server(e.to_string()))?;
                tx.put_setting(CERTIFICATES_KEY, &text)?;
                // Writes run one at a time in commit order: the generation orders the copies.
                let generation = inner.ca_generation.fetch_add(1, Ordering::SeqCst) + 1;
                Ok::<_, HubError>((generation, all))
            })
            .await?;
        let mut current = self.inner.ca_certificates.write();
        if generation > current.0 {
            *current = (generation, all);
        }
        Ok(crate::certificates::UploadedCertificate {
            name: name.to_string(),
            thumbprint,
        })
    }

    /// Validates a `certificateAuthority` device's chain against the uploaded CAs at the hub's
    /// time; Ok is the leaf's notAfter.
    pub(crate) fn verify_device_chain(
        &self,
        chain: &[Vec<u8>],
        device_id: &str,
    ) -> Result<chrono::DateTime<chrono::Utc>, String> {
        let cas = self.inner.ca_certificates.read();
        crate::certificates::verify_device_chain(
            chain,
            device_id,
            cas.1.iter().map(|c| c.der.as_slice()),
            self.inner.clock.now(),
        )
    }
}

/// The uploaded CA certificates from their stored setting.
fn parse_certificates(text: Option<String>) -> HubResult<Vec<StoredCertificate>> {
    match text {
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| HubError::server(format!("stored CA certificates unreadable: {e}"))),
        None => Ok(Vec::new()),
    }
}

async fn load_or_create_policies(store: &Store) -> HubResult<Vec<Policy>> {
    if let Some(text) = store.read(|r| r.get_setting(POLICIES_KEY)).await? {
        return serde_json::from_str(&text)
            .map_err(|e| HubError::server(format!("stored policies unreadable: {e}")));
    }
    let policies = Policy::defaults();
    let text = serde_json::to_string(&policies).map_err(|e| HubError::server(e.to_string()))?;
    store
        .write(move |tx| tx.put_setting(POLICIES_KEY, &text).map_err(HubError::from))
        .await?;
    Ok(policies)
}
