//! `fleethub bench`: benchmarks that run a real hub (a child `fleethub serve`) and a load of
//! virtual devices in several worker processes on this machine, and print figures. Each ends with
//! one JSON line: `{"bench":…,"value":…,"unit":…,"target":…}`.
//!
//! It runs inside the `fleethub` binary: the hub and the load workers are that same executable
//! started again (`fleethub serve`, `fleethub bench-worker`), so the binary wires `run` and
//! `run_worker` to those two commands. The worker's flags are this crate's own protocol between
//! the coordinator that writes them and the worker that parses them, so `WorkerArgs` (and
//! `BenchArgs`, for the same `clap` vocabulary) are declared here.

mod browser;
mod dashboard;
mod firmware;
mod hub_process;
mod million_devices;
mod mosquitto;
mod nginx;
mod ports;
mod postgres;
mod rollout;
mod scenarios;
mod worker;

pub use scenarios::{run, BenchArgs};
pub use worker::{run_worker, WorkerArgs};
