//! Connecting many devices: bounded concurrency, source addresses spread over 127.0.0.0/8.

use crate::device::{ClientError, ConnectOptions, DeviceAuth, DeviceClient, DeviceEvents};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use tokio::task::JoinSet;

/// How many connects (TCP + TLS + CONNECT) run at once; more only queue in the listen backlog.
pub const CONNECT_CONCURRENCY: usize = 200;

/// Where and how every load device connects; each adds its own id and key.
#[derive(Debug, Clone)]
pub struct ConnectTemplate {
    /// TCP host to dial, e.g. "127.0.0.1".
    pub host: String,
    /// MQTT port.
    pub port: u16,
    /// The hub's HostName for user names and tokens, e.g. "localhost".
    pub hub_host_name: String,
    /// TLS settings; `None` for plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// How long each connect's SAS token is valid [default: an hour, as the SDKs sign]. A run
    /// against a hub whose clock is compressed (`fleethub demo`) needs tokens that outlive its
    /// simulated nights.
    pub sas_lifetime_secs: Option<u64>,
}

impl ConnectTemplate {
    /// Options for the `index`-th device of a load run, with a spread source address on loopback.
    pub fn options(&self, index: usize, device_id: &str, key: &str) -> ConnectOptions {
        let mut opts = ConnectOptions::new(
            self.host.clone(),
            self.port,
            self.hub_host_name.clone(),
            device_id,
            DeviceAuth::SasKey(key.to_string()),
        );
        opts.tls = self.tls.clone();
        if let Some(secs) = self.sas_lifetime_secs {
            opts.sas_lifetime_secs = secs;
        }
        opts.local_addr = spread_local_addr(&self.host, index);
        opts
    }
}

/// One TLS client configuration per device, each with a session store of its own that outlives
/// the device's connections, as a real device keeps its session ticket between connects: a
/// device's first connect is a full handshake and each reconnect through the same
/// `DeviceSessions` resumes. Devices sharing one configuration would share its store, and one
/// device's ticket would resume another's first connect.
#[derive(Debug, Clone)]
pub struct DeviceSessions {
    configs: Vec<Arc<rustls::ClientConfig>>,
}

impl DeviceSessions {
    /// Fresh, empty session stores for `devices` devices, otherwise configured as `base`.
    pub fn new(base: &rustls::ClientConfig, devices: usize) -> DeviceSessions {
        let configs = (0..devices)
            .map(|_| {
                let mut config = base.clone();
                // A clone shares `base`'s store; each device needs its own. Eight tickets for
                // one server is the least rustls keeps.
                config.resumption = rustls::client::Resumption::in_memory_sessions(8);
                Arc::new(config)
            })
            .collect();
        DeviceSessions { configs }
    }

    /// How many devices this holds sessions for.
    pub fn len(&self) -> usize {
        self.configs.len()
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.configs.is_empty()
    }
}

/// 127.0.0.1..=127.0.0.254 round-robin by `index` when `host` is IPv4 loopback or "localhost",
/// so that tens of thousands of connections do not exhaust one source address's ports.
pub fn spread_local_addr(host: &str, index: usize) -> Option<IpAddr> {
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return None;
    }
    let last = u8::try_from(index % 254 + 1).unwrap_or(1);
    Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
}

/// What each device subscribes to right after connecting.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Subscriptions {
    /// Nothing (telemetry needs no subscription, and works against a bare broker).
    None,
    /// `$iothub/twin/res/#` only: enough to report.
    TwinResponses,
    /// The four feeds an SDK device holds.
    All,
}

/// One device's connect (and subscribe) outcome.
pub(crate) type Connected = Result<(DeviceClient, DeviceEvents), (String, ClientError)>;

/// Connects and subscribes every device, at most [`CONNECT_CONCURRENCY`] at a time, the `i`-th
/// with the `i`-th of `sessions` when given (over TLS); results come back in the order of
/// `devices`.
pub(crate) async fn connect_all(
    template: &ConnectTemplate,
    devices: &[(String, String)],
    subscriptions: Subscriptions,
    sessions: Option<&DeviceSessions>,
) -> Vec<Connected> {
    let mut results: Vec<Option<Connected>> = (0..devices.len()).map(|_| None).collect();
    let mut running = JoinSet::new();
    let mut pending = devices.iter().enumerate();
    loop {
        while running.len() < CONNECT_CONCURRENCY {
            let Some((index, (id, key))) = pending.next() else {
                break;
            };
            let mut opts = template.options(index, id, key);
            if let (Some(sessions), Some(_)) = (sessions, &opts.tls) {
                opts.tls = sessions.configs.get(index).cloned();
            }
            running.spawn(async move { (index, connect_one(opts, subscriptions).await) });
        }
        match running.join_next().await {
            Some(Ok((index, outcome))) => results[index] = Some(outcome),
            Some(Err(e)) => std::panic::resume_unwind(e.into_panic()),
            None => break,
        }
    }
    results.into_iter().flatten().collect()
}

async fn connect_one(opts: ConnectOptions, subscriptions: Subscriptions) -> Connected {
    let device_id = opts.device_id.clone();
    let subscribe = async {
        let (client, events) = DeviceClient::connect(opts).await?;
        let codes = match subscriptions {
            Subscriptions::None => Vec::new(),
            Subscriptions::TwinResponses => client.subscribe(&["$iothub/twin/res/#"]).await?,
            Subscriptions::All => client.subscribe_all().await?,
        };
        if codes.contains(&0x80) {
            return Err(ClientError::Protocol(format!(
                "hub refused a subscription (SUBACK codes {codes:?})"
            )));
        }
        Ok((client, events))
    };
    subscribe.await.map_err(|e| (device_id, e))
}

/// Disconnects clients concurrently.
pub(crate) async fn disconnect_all(clients: Vec<DeviceClient>) {
    let mut running = JoinSet::new();
    for client in clients {
        running.spawn(client.disconnect());
    }
    while running.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_connections_spread_over_254_source_addresses() {
        let at = |host, i| spread_local_addr(host, i).map(|ip| ip.to_string());
        assert_eq!(at("127.0.0.1", 0).as_deref(), Some("127.0.0.1"));
        assert_eq!(at("127.0.0.1", 253).as_deref(), Some("127.0.0.254"));
        assert_eq!(at("localhost", 254).as_deref(), Some("127.0.0.1"));
        assert_eq!(at("127.1.2.3", 5).as_deref(), Some("127.0.0.6"));
        assert_eq!(at("10.0.0.5", 5), None);
        assert_eq!(at("hub.example.com", 5), None);
        assert_eq!(at("::1", 5), None);
    }

    #[test]
    fn template_fills_in_each_device() {
        let template = ConnectTemplate {
            host: "127.0.0.1".into(),
            port: 8883,
            hub_host_name: "localhost".into(),
            tls: None,
            sas_lifetime_secs: None,
        };
        let opts = template.options(2, "dev-2", "a2V5");
        assert_eq!(opts.device_id, "dev-2");
        assert_eq!(opts.username(), "localhost/dev-2/?api-version=2021-04-12");
        assert_eq!(
            opts.local_addr,
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)))
        );
    }
}
