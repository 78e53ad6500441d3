//! The device gateway: MQTT 3.1.1 over TLS (or any byte stream), CONNECT authentication,
//! persistent sessions, and the router from IoT Hub topics into the hub. It knows nothing of SQL.
//!
//! [`codec`], [`properties`], [`topics`] and [`transport`] need no hub: with
//! `default-features = false` they are all this crate builds, which is what a device client
//! (fleethub-sim) needs.

pub mod codec;
pub mod properties;
pub mod topics;
pub mod transport;

#[cfg(feature = "gateway")]
pub mod connect;
#[cfg(feature = "gateway")]
mod gateway;
#[cfg(feature = "gateway")]
pub mod inflight;
#[cfg(feature = "gateway")]
mod listener;
#[cfg(feature = "gateway")]
pub mod router;
#[cfg(feature = "gateway")]
mod session;
#[cfg(feature = "gateway")]
pub mod subscriptions;

#[cfg(feature = "gateway")]
pub use gateway::{
    ConnectionInfo, Gateway, GatewayConfig, Pending, DEFAULT_MAX_PENDING_CONNECTIONS,
};
#[cfg(feature = "gateway")]
pub use listener::Acceptor;
