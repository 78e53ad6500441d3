//! Virtual ESP32 devices for the fleet simulator: firmware that behaves like ESP-IDF's
//! `esp_https_ota` with app rollback, over real MQTT/TLS and HTTPS.
//!
//! - `clock`: [`SimClock`], simulated time.
//! - `flash`: the flash as plain data (slots, boot record, partial download, NVS).
//! - `model`: the pure state machine — bootloader, OTA steps, self-test, rollback, faults;
//!   `methods` and `telemetry` extend it.
//! - `download`: Range requests over HTTPS; `driver`: the per-device task; `stats`.
//!
//! The device's side of the protocol is written down in `docs/device-protocol.md`.

mod clock;
mod download;
mod driver;
mod faults;
mod flash;
mod methods;
mod model;
mod stats;
mod telemetry;

#[cfg(test)]
mod model_tests;

pub use clock::SimClock;
pub use download::{fetch_image, http_client};
pub use faults::device_seed;
pub use methods::METHODS;
pub use stats::{in_version_order, SimulationStats, StatsSnapshot};

use crate::load::ConnectTemplate;
use crate::FirmwareKey;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How a group of devices behaves, and which faults it suffers. All durations are simulated
/// seconds. Deserialized from a scenario file's `[group.behavior]` table (all fields optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Behavior {
    /// Seconds between telemetry messages (0 = no telemetry).
    pub telemetry_interval_s: f64,
    /// Telemetry messages kept while offline, replayed on reconnect (oldest dropped first).
    pub telemetry_buffer: usize,
    /// Seconds from power-on to the first CONNECT.
    pub boot_delay_s: f64,
    pub faults: Faults,
}

/// Faults, each deterministic under the device's seed. Probabilities are in 0..=1.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Mean seconds between random link drops (exponential); `None` = the link never drops.
    pub link_drop_mean_s: Option<f64>,
    /// Seconds a dropped link stays down before the device reconnects.
    pub link_down_s: f64,
    /// Links drop only during the first this many simulated seconds of the run (a storm that
    /// passes); `None` = for the whole run.
    pub link_drops_until_s: Option<f64>,
    /// Battery devices: awake for `awake_s`, then asleep (disconnected) for `asleep_s`.
    pub sleep: Option<SleepCycle>,
    /// Download bandwidth cap in bytes per simulated second.
    pub bandwidth_bytes_per_s: Option<u64>,
    /// Probability of losing power at each OTA step (downloading, verifying, switching).
    pub power_loss: f64,
    /// Power is lost once, the first time a download has written this many bytes of the
    /// image into the inactive slot: a deterministic cut, to rehearse (or test) the resume.
    pub power_loss_at_byte: Option<u64>,
    /// Probability that a finished download is corrupt (hash mismatch).
    pub corrupt_download: f64,
    /// Probability that an update's signature does not verify (as if the image was signed by
    /// another key or `desired.firmware` was altered): the device refuses it before erasing
    /// anything and gives up on that target until desired changes or it restarts.
    pub bad_signature: f64,
    /// Firmware versions that misbehave on this group's devices.
    pub bad_firmware: Vec<BadFirmware>,
    /// Probability that a device rebooting into a new image never comes back: it dies on that
    /// boot (a brick, a dead battery) and is silent for the rest of the run.
    pub never_back: f64,
    /// Probability that a telemetry message is published twice (QoS 1 redelivery).
    pub duplicate_rate: f64,
    /// The device clock's offset from true time, in seconds (reported timestamps use it).
    pub clock_skew_s: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SleepCycle {
    pub awake_s: f64,
    pub asleep_s: f64,
}

/// A firmware version that fails on these devices, and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BadFirmware {
    pub version: String,
    pub failure: FirmwareFailure,
    /// Failed boots before the bootloader rolls back (ESP-IDF app rollback), default 3.
    #[serde(default = "default_failed_boots")]
    pub failed_boots: u32,
    /// For `health_check_fails`: seconds after boot when the health check fails.
    #[serde(default)]
    pub after_s: f64,
}

fn default_failed_boots() -> u32 {
    3
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FirmwareFailure {
    /// Wi-Fi breaks on the new image: it never reconnects; rolled back after `failed_boots`.
    WifiBreaks,
    /// The image crashes on boot: a boot loop, then rollback.
    BootLoop,
    /// Boots and connects, then fails its health check after `after_s`: rollback.
    HealthCheckFails,
}

/// One virtual device.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub device_id: String,
    /// The device's symmetric key (base64), for SAS.
    pub key: String,
    /// Its group's name (for stats).
    pub group: String,
    /// The factory image's version, flashed in slot A at first boot.
    pub factory_version: String,
    pub behavior: Arc<Behavior>,
    /// Seed for this device's faults; derive it from the run seed and the device index.
    pub seed: u64,
    /// Index in the fleet (spreads source addresses over 127.0.0.0/8).
    pub index: usize,
    /// The hub's firmware signing key, pinned as firmware would be: with it the device refuses
    /// an update whose `desired.firmware.signature` does not verify (or is missing); without
    /// it the device checks only the SHA-256.
    pub firmware_key: Option<Arc<FirmwareKey>>,
}

/// Starts one device: boots, connects over MQTT/TLS with its own SAS key, follows its twin,
/// and runs until `stop` turns true (then disconnects cleanly). Firmware is downloaded with an
/// HTTP client trusting what `connect.tls` trusts, shared by every device with the same
/// `Arc`'d TLS configuration; use [`spawn_device_with_http`] to trust something else.
pub fn spawn_device(
    spec: DeviceSpec,
    connect: Arc<ConnectTemplate>,
    clock: SimClock,
    stats: Arc<SimulationStats>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let http = download::shared_client(connect.tls.as_ref());
    spawn(spec, connect, http, clock, stats, stop)
}

/// [`spawn_device`] with the HTTP client firmware downloads use (build one with
/// [`http_client`], or `reqwest`'s builder, and share it across the fleet).
pub fn spawn_device_with_http(
    spec: DeviceSpec,
    connect: Arc<ConnectTemplate>,
    http: reqwest::Client,
    clock: SimClock,
    stats: Arc<SimulationStats>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    spawn(spec, connect, Some(http), clock, stats, stop)
}

fn spawn(
    spec: DeviceSpec,
    connect: Arc<ConnectTemplate>,
    http: Option<reqwest::Client>,
    clock: SimClock,
    stats: Arc<SimulationStats>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let stats = stats::StatsHandle::new(stats, &spec.group);
    let driver = driver::Driver::new(spec, connect, http, clock, stats, stop);
    tokio::spawn(driver.run())
}
