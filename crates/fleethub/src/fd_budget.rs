//! The file-descriptor budget. Every connection costs one descriptor, and a process that runs
//! out can accept nothing: about a thousand idle HTTPS connections once stopped every device from
//! connecting. So the hub raises its open-file limit as far as the system lets it, and gives
//! HTTPS (REST clients, dashboards, WebSocket devices until they upgrade) a bounded share; the
//! rest is kept for device connections.

use std::fmt;

/// Descriptors kept for what is not a connection: the store's database, WAL and shared-memory
/// files (writer, checkpointer, each read connection), the listeners, standard streams and files
/// a request opens while it is served.
pub const RESERVED: u64 = 128;

/// HTTPS gets one descriptor in this many (after the reserve) unless the operator says otherwise.
const HTTPS_SHARE_DIVISOR: u64 = 10;

/// The default HTTPS share never goes below this, so the REST API stays usable under a tiny limit.
const HTTPS_DEFAULT_MIN: u64 = 16;

/// Nor above this: service clients hold few connections, and a large limit is for devices.
const HTTPS_DEFAULT_MAX: u64 = 4_096;

/// How the process's descriptors are shared out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// The open-file limit (RLIMIT_NOFILE's soft limit) the hub runs with.
    pub limit: u64,
    /// The soft limit before the hub raised it, when it did.
    pub raised_from: Option<u64>,
    /// HTTPS connections open at once; those upgraded to WebSocket are device connections.
    pub https_connections: u64,
    /// What is left for device connections after the reserve and the HTTPS share.
    pub devices: u64,
}

impl FdBudget {
    /// Shares out `limit` descriptors; `https_connections` is the operator's choice, if any.
    pub fn plan(limit: u64, raised_from: Option<u64>, https_connections: Option<u64>) -> FdBudget {
        let usable = limit.saturating_sub(RESERVED);
        let https = https_connections.unwrap_or_else(|| {
            (usable / HTTPS_SHARE_DIVISOR).clamp(HTTPS_DEFAULT_MIN, HTTPS_DEFAULT_MAX)
        });
        FdBudget {
            limit,
            raised_from,
            https_connections: https,
            devices: usable.saturating_sub(https),
        }
    }

    /// Raises the open-file limit to what the system allows and shares it out.
    pub fn raise_and_plan(https_connections: Option<u64>) -> FdBudget {
        let (limit, raised_from) = raise_open_file_limit();
        FdBudget::plan(limit, raised_from, https_connections)
    }
}

impl fmt::Display for FdBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "open-file limit {}", self.limit)?;
        if let Some(before) = self.raised_from {
            write!(f, " (raised from {before})")?;
        }
        write!(
            f,
            ": HTTPS may hold {} connections, {} reserved for the store and listeners, about {} \
             left for device connections",
            self.https_connections, RESERVED, self.devices
        )
    }
}

/// Sets the soft open-file limit to the hard limit. Returns the limit in force and, when it
/// changed, the one before. `u64::MAX` stands for no limit.
#[cfg(unix)]
fn raise_open_file_limit() -> (u64, Option<u64>) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let before = getrlimit(Resource::Nofile);
    let current = before.current.unwrap_or(u64::MAX);
    // An unlimited hard limit cannot be the soft limit for open files (Linux caps it at
    // fs.nr_open): keep what we have.
    let Some(hard) = before.maximum else {
        return (current, None);
    };
    if hard <= current {
        return (current, None);
    }
    let raised = Rlimit {
        current: Some(hard),
        maximum: Some(hard),
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => (hard, Some(current)),
        Err(e) => {
            tracing::warn!("could not raise the open-file limit from {current} to {hard}: {e}");
            (current, None)
        }
    }
}

#[cfg(not(unix))]
fn raise_open_file_limit() -> (u64, Option<u64>) {
    (u64::MAX, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_gets_a_tenth_of_this_machine_s_20000_descriptors_and_devices_the_rest() {
        let budget = FdBudget::plan(20_000, Some(1_024), None);
        assert_eq!(budget.https_connections, 1_987);
        assert_eq!(budget.devices, 20_000 - RESERVED - 1_987);
        assert_eq!(
            budget.to_string(),
            "open-file limit 20000 (raised from 1024): HTTPS may hold 1987 connections, 128 \
             reserved for the store and listeners, about 17885 left for device connections"
        );
    }

    #[test]
    fn a_huge_limit_still_caps_https_at_a_few_thousand() {
        let budget = FdBudget::plan(1_048_576, None, None);
        assert_eq!(budget.https_connections, HTTPS_DEFAULT_MAX);
        assert_eq!(budget.devices, 1_048_576 - RESERVED - HTTPS_DEFAULT_MAX);
        let unlimited = FdBudget::plan(u64::MAX, None, None);
        assert_eq!(unlimited.https_connections, HTTPS_DEFAULT_MAX);
    }

    #[test]
    fn a_tiny_limit_keeps_the_rest_api_usable_and_never_underflows() {
        let budget = FdBudget::plan(256, None, None);
        assert_eq!(budget.https_connections, HTTPS_DEFAULT_MIN);
        assert_eq!(budget.devices, 256 - RESERVED - HTTPS_DEFAULT_MIN);
        let below_reserve = FdBudget::plan(64, None, None);
        assert_eq!(below_reserve.https_connections, HTTPS_DEFAULT_MIN);
        assert_eq!(below_reserve.devices, 0);
    }

    #[test]
    fn the_operator_s_https_share_is_used_as_given() {
        let budget = FdBudget::plan(20_000, None, Some(100));
        assert_eq!(budget.https_connections, 100);
        assert_eq!(budget.devices, 20_000 - RESERVED - 100);
        let greedy = FdBudget::plan(1_000, None, Some(5_000));
        assert_eq!(greedy.https_connections, 5_000);
        assert_eq!(greedy.devices, 0);
    }

    #[test]
    fn raising_the_limit_never_lowers_it() {
        let (limit, raised_from) = raise_open_file_limit();
        if let Some(before) = raised_from {
            assert!(limit > before);
        }
        assert_eq!(
            raise_open_file_limit(),
            (limit, None),
            "a second raise is a no-op"
        );
    }
}
