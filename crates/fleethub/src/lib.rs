//! The FleetHub binary's library half: configuration and wiring, so integration
//! tests and benchmarks start exactly the hub that `fleethub serve` starts.

pub mod cli;
pub mod config;
pub mod demo;
pub mod fd_budget;
pub mod https;
pub mod rollout_cli;
pub mod server;
pub mod simulate;
pub mod stop_signal;

pub use config::ServeConfig;
pub use server::{start, RunningHub};
