//! Request load: every device sends reported patches (or telemetry) as fast as the hub
//! answers, or at a fixed total rate, and each request's round trip is measured.

use super::connect::ConnectTemplate;
use super::devices::{LoadDevices, LoadKind};
use super::stats::{LoadReport, Reservoir};
use crate::device::{ClientError, DeviceClient};
use bytes::Bytes;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// A request unanswered this long counts as an error (the hub should never leave one).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Latency samples kept per run at most, shared among the workers.
const MAX_LATENCY_SAMPLES: usize = 1_000_000;

/// How hard and how long the load devices are driven.
#[derive(Debug, Clone)]
pub struct LoadShape {
    /// Total requests per second over all devices; `None` = as fast as the hub answers.
    pub rate_per_sec: Option<u64>,
    /// How long requests are started for; answers in flight at the end are still awaited.
    pub duration: Duration,
    /// Requests each device keeps outstanding at once (at least 1).
    pub in_flight_per_device: usize,
}

/// What [`run_report_load`] does.
#[derive(Debug, Clone)]
pub struct ReportLoad {
    /// The devices, as (id, base64 key); they must exist in the hub.
    pub devices: Vec<(String, String)>,
    /// Where they connect.
    pub connect: ConnectTemplate,
    /// Total patches per second over all devices; `None` = as fast as the hub answers.
    pub rate_per_sec: Option<u64>,
    /// How long requests are started for; answers in flight at the end are still awaited.
    pub duration: Duration,
    /// Requests each device keeps outstanding at once (at least 1).
    pub in_flight_per_device: usize,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
    errors: AtomicU64,
    seq: AtomicU64,
}

/// Hands out evenly spaced send times for a fixed total rate.
struct Pacer {
    start: Instant,
    interval: Duration,
    issued: AtomicU64,
}

impl Pacer {
    fn new(start: Instant, rate_per_sec: u64) -> Self {
        Pacer {
            start,
            interval: Duration::from_secs(1)
                / u32::try_from(rate_per_sec.max(1)).unwrap_or(u32::MAX),
            issued: AtomicU64::new(0),
        }
    }

    /// Claims the next send slot: its offset from the start of the run.
    fn claim(&self) -> Duration {
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        self.interval.mul_f64(n as f64)
    }

    /// Sleeps until the next free slot; false if that slot is past `deadline`.
    async fn wait_turn(&self, deadline: Instant) -> bool {
        let at = self.start + self.claim();
        if at >= deadline {
            return false;
        }
        tokio::time::sleep_until(at).await;
        true
    }
}

/// Connects the devices, runs reported-patch load for `duration`, disconnects, and reports.
/// Fails only if no device could connect; individual failures are counted in the report.
pub async fn run_report_load(cfg: ReportLoad) -> Result<LoadReport, ClientError> {
    let load = LoadDevices::connect(&cfg.connect, &cfg.devices, LoadKind::Reported).await;
    if load.is_empty() && load.failed_connects() > 0 {
        let (_, first) = load.into_failures().swap_remove(0);
        return Err(first);
    }
    let shape = LoadShape {
        rate_per_sec: cfg.rate_per_sec,
        duration: cfg.duration,
        in_flight_per_device: cfg.in_flight_per_device,
    };
    let report = load.run(shape).await;
    load.disconnect().await;
    Ok(report)
}

/// Runs `in_flight_per_device` workers per client until the deadline and gathers their results.
pub(crate) async fn drive(
    clients: &[DeviceClient],
    kind: LoadKind,
    shape: &LoadShape,
) -> LoadReport {
    let counters = Arc::new(Counters::default());
    let start = Instant::now();
    let deadline = start + shape.duration;
    let pacer = shape
        .rate_per_sec
        .map(|rate| Arc::new(Pacer::new(start, rate)));
    let per_device = shape.in_flight_per_device.max(1);
    let workers = clients.len() * per_device;
    let samples_per_worker = (MAX_LATENCY_SAMPLES / workers.max(1)).max(64);
    let mut running = JoinSet::new();
    for (index, client) in clients.iter().enumerate() {
        for lane in 0..per_device {
            let worker = Worker {
                client: client.clone(),
                kind,
                counters: counters.clone(),
                pacer: pacer.clone(),
                deadline,
                latencies: Reservoir::new(samples_per_worker, (index * per_device + lane) as u64),
            };
            running.spawn(worker.run());
        }
    }
    let mut latencies_us = Vec::new();
    while let Some(done) = running.join_next().await {
        match done {
            Ok(samples) => latencies_us.extend(samples),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    let elapsed = start.elapsed();
    latencies_us.sort_unstable();
    LoadReport {
        sent: counters.sent.load(Ordering::Relaxed),
        acked: counters.acked.load(Ordering::Relaxed),
        errors: counters.errors.load(Ordering::Relaxed),
        failed_connects: 0,
        elapsed,
        latencies_us,
    }
}

/// One outstanding-request lane of one device.
struct Worker {
    client: DeviceClient,
    kind: LoadKind,
    counters: Arc<Counters>,
    pacer: Option<Arc<Pacer>>,
    deadline: Instant,
    latencies: Reservoir,
}

impl Worker {
    async fn run(mut self) -> Vec<u64> {
        loop {
            if let Some(pacer) = &self.pacer {
                if !pacer.wait_turn(self.deadline).await {
                    break;
                }
            }
            if Instant::now() >= self.deadline {
                break;
            }
            let seq = self.counters.seq.fetch_add(1, Ordering::Relaxed);
            self.counters.sent.fetch_add(1, Ordering::Relaxed);
            let sent_at = Instant::now();
            match tokio::time::timeout(REQUEST_TIMEOUT, self.request(seq)).await {
                Ok(Ok(())) => {
                    self.counters.acked.fetch_add(1, Ordering::Relaxed);
                    let micros = u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX);
                    self.latencies.offer(micros);
                }
                Ok(Err(ClientError::Closed(reason))) => {
                    // The connection is gone; retrying would only spin.
                    tracing::warn!(device = %self.client.device_id(), %reason, "load device lost its connection");
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(Err(_)) | Err(_) => {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.latencies.into_samples()
    }

    /// One request of this load's kind, numbered `seq` across the run.
    async fn request(&self, seq: u64) -> Result<(), ClientError> {
        match self.kind {
            LoadKind::Telemetry => {
                let body = Bytes::from(json!({"seq": seq, "temp": 21.5}).to_string());
                let props = [
                    ("$.ct".to_string(), "application/json".to_string()),
                    ("$.ce".to_string(), "utf-8".to_string()),
                ];
                self.client
                    .send_telemetry(&seq.to_string(), &props, body)
                    .await
            }
            LoadKind::Reported | LoadKind::Hold => {
                let patch = json!({"telemetry": {"seq": seq, "temp": 21.5}});
                self.client.report(&patch).await.map(drop)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_spaces_slots_evenly_across_all_workers() {
        let pacer = Pacer::new(Instant::now(), 4);
        let slots: Vec<Duration> = (0..5).map(|_| pacer.claim()).collect();
        assert_eq!(slots, [0, 250, 500, 750, 1000].map(Duration::from_millis));
        // A rate of zero is treated as one per second rather than dividing by zero.
        assert_eq!(
            Pacer::new(Instant::now(), 0).interval,
            Duration::from_secs(1)
        );
    }
}
