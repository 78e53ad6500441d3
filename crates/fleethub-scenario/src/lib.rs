//! The fleet simulator's scenario runner, under `fleethub simulate`: scenario files checked up
//! front ([`scenario`], [`duration`]), the roster of device ids, keys and seeds derived from the
//! run's seed ([`roster`]), generated firmware uploaded to the hub's firmware store and handed
//! to each device with a URL of its own ([`firmware`]), where the devices run — this process or `simulate-worker` children
//! ([`processes`]), the operator's timeline and expectations judged against twins as the hub
//! serves them ([`timeline`], [`expect`]), and the report ([`report`]).
//!
//! The hub is reached only through `fleethub-client` and the public device protocols; which hub
//! (an external one, or one the binary starts) is the binary's business.

pub mod duration;
pub mod expect;
pub mod firmware;
pub mod processes;
pub mod report;
pub mod roster;
pub mod scenario;
pub mod timeline;
