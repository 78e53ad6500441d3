//! `fleethub bench`: benchmarks that run a real hub (a child `fleethub serve`) and a load of
//! virtual devices in several worker processes on this machine, and print figures. Each ends with
//! one JSON line: `{"bench":…,"value":…,"unit":…,"target":…}`.

mod fleet_scale;
mod hub_process;
mod mosquitto;
mod scenarios;
mod worker;

pub use scenarios::{run, BenchArgs};
pub use worker::{run_worker, WorkerArgs};
