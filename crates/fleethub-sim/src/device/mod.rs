//! One virtual device: an async IoT Hub MQTT client speaking exactly what the Azure IoT device
//! SDK speaks (see shared/iothub-wire.md).

mod client;
mod connection;
mod correlation;
mod error;
mod events;
mod hub_topics;
mod options;
mod tls;

pub use client::DeviceClient;
pub use error::ClientError;
pub use events::{DeviceEvent, DeviceEvents};
pub use options::{ConnectOptions, DeviceAuth, TOKEN_LIFETIME_SECS};
pub use tls::tls_config_trusting;

/// The four subscriptions an IoT Hub device may hold, for `device_id`.
pub fn all_filters(device_id: &str) -> [String; 4] {
    fleethub_mqtt::topics::Feed::ALL.map(|feed| feed.filter(device_id))
}
