//! The REST API against a real hub over a temporary SQLite store, one module per area.

mod auth;
mod devices;
mod errors;
mod events;
mod jobs;
mod node_sdk;
mod query;
mod support;
mod system;
mod twins;
mod websocket;
