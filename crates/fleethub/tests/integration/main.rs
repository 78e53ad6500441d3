//! End-to-end tests: each starts a real hub (temporary directory, ephemeral ports) and talks to it
//! over real TLS, MQTT and HTTPS. One test binary, a module per area, to keep link time low.
#![allow(clippy::unwrap_used)] // a panic here fails a test or a probe; it never reaches the hub

mod harness;

mod bad_input;
mod cli;
mod configurations;
mod crash;
mod esp32;
mod firmware;
mod https_limits;
mod jobs;
mod messages;
mod methods;
mod query_cli;
mod query_limits;
mod registry;
mod registry_files;
mod rollout_cli;
mod rollouts;
mod sessions;
mod simulate;
mod store_full;
mod tls;
mod twins;
mod x509;
