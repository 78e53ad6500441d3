//! Certificates and TLS configurations, written once for every part of FleetHub that needs them:
//! the hub's CA and server certificate (generated on first start, or supplied), the rustls
//! configurations of its MQTT and HTTPS listeners, the short-lived CAs of the benchmarks'
//! reference broker and the simulator's firmware server, and client trust from a CA PEM.

mod config;
mod error;
mod files;
mod issue;
pub mod tickets;

pub use config::{client_config_trusting, https_server_config, mqtt_server_config, server_config};
pub use error::TlsError;
pub use files::{ensure_certificates, load_server_certificate, CertificatePaths};
pub use issue::{LocalCa, ServerCertificate};
