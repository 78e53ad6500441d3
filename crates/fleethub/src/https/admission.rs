//! Admission at accept: a cap on HTTPS connections per source address and one on all of them, so
//! that no client (and no crowd of clients) can hold more than HTTPS's share of the process's
//! file descriptors. A connection over a cap is closed before its TLS handshake costs anything.

use fleethub_hub::Hub;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The least time between two log lines about refused connections.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Where a connection comes from, as the per-address cap counts it: an IPv4 address (IPv4-mapped
/// IPv6 included), or an IPv6 /64, the block one host or one customer is usually given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    V4(Ipv4Addr),
    /// The address with its last 64 bits zeroed.
    V6Net(Ipv6Addr),
}

impl Source {
    /// The source an address counts against.
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4),
                None => Source::V6Net(Ipv6Addr::from(v6.to_bits() & !u128::from(u64::MAX))),
            },
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::V4(v4) => write!(f, "{v4}"),
            Source::V6Net(net) => write!(f, "{net}/64"),
        }
    }
}

/// The caps. 0 for `per_address` means none.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub per_address: u32,
    pub total: u64,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    AddressCap { source: Source, cap: u32 },
    ConnectionCap { cap: u64 },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::AddressCap { source, cap } => write!(
                f,
                "{source} already holds {cap} HTTPS connections (--https-connections-per-address)"
            ),
            Refusal::ConnectionCap { cap } => write!(
                f,
                "the hub already holds {cap} HTTPS connections, HTTPS's share of file \
                 descriptors (--https-max-connections)"
            ),
        }
    }
}

/// Counts open HTTPS connections by source and in all.
pub struct Admission {
    caps: Caps,
    hub: Hub,
    held: Mutex<Held>,
    log: Mutex<RefusalLog>,
}

#[derive(Default)]
struct Held {
    total: u64,
    by_source: HashMap<Source, u32>,
}

#[derive(Default)]
struct RefusalLog {
    quiet_until: Option<Instant>,
    unlogged: u64,
}

/// One admitted connection; dropping it gives its place back.
pub struct Admitted {
    admission: Arc<Admission>,
    source: Source,
}

impl Admission {
    /// Counts against `caps`, reporting to the hub's metrics.
    pub fn new(caps: Caps, hub: Hub) -> Arc<Admission> {
        Arc::new(Admission {
            caps,
            hub,
            held: Mutex::default(),
            log: Mutex::default(),
        })
    }

    /// Admits a connection from `ip`, or says why not (and logs it, at most every 10 s).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refusal> {
        let source = Source::of(ip);
        let refusal = {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            let from_source = held.by_source.get(&source).copied().unwrap_or(0);
            if held.total >= self.caps.total {
                Refusal::ConnectionCap {
                    cap: self.caps.total,
                }
            } else if self.caps.per_address != 0 && from_source >= self.caps.per_address {
                Refusal::AddressCap {
                    source,
                    cap: self.caps.per_address,
                }
            } else {
                held.total += 1;
                held.by_source.insert(source, from_source + 1);
                self.metrics().open.fetch_add(1, Ordering::Relaxed);
                return Ok(Admitted {
                    admission: self.clone(),
                    source,
                });
            }
        };
        self.refused(refusal);
        Err(refusal)
    }

    fn metrics(&self) -> &fleethub_hub::metrics::HttpsMetrics {
        &self.hub.metrics().https
    }

    fn refused(&self, refusal: Refusal) {
        let counter = match refusal {
            Refusal::AddressCap { .. } => &self.metrics().refused_address_cap,
            Refusal::ConnectionCap { .. } => &self.metrics().refused_connection_cap,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if log.quiet_until.is_some_and(|until| now < until) {
            log.unlogged += 1;
            return;
        }
        let earlier = std::mem::take(&mut log.unlogged);
        log.quiet_until = Some(now + REFUSAL_LOG_INTERVAL);
        tracing::warn!(
            "HTTPS connection refused before TLS: {refusal} ({earlier} more refused since the \
             last such message; see fleethub_https_connections_closed_total)"
        );
    }

    fn release(&self, source: Source) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.total -= 1;
        if let Some(n) = held.by_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                held.by_source.remove(&source);
            }
        }
        self.metrics().open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.release(self.source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_host_cannot_escape_the_cap_by_changing_its_interface_id() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(a), Source::of(b));
        assert_ne!(Source::of(a), Source::of(other));
        assert_eq!(Source::of(a).to_string(), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(Source::of(mapped), Source::of("192.0.2.7".parse().unwrap()));
        assert_eq!(Source::of(mapped).to_string(), "192.0.2.7");
    }
}
