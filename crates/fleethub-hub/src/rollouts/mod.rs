//! Rollouts in the hub (docs/rollouts.md). The state machine is `fleethub-rollout`'s, pure;
//! here it meets the store: `durable.rs` writes each step (state, changed device records,
//! journalled pushes, audit events) in one transaction and rebuilds a rollout from its rows.

pub mod durable;
