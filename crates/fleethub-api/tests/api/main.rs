//! The REST API against a real hub over a temporary SQLite store, one module per area.
#![allow(clippy::unwrap_used)] // a panic here fails a test or a probe; it never reaches the hub

mod auth;
mod dashboard;
mod devices;
mod errors;
mod events;
mod jobs;
mod node_sdk;
mod openapi;
mod query;
mod snapshots;
mod support;
mod system;
mod twins;
mod websocket;
