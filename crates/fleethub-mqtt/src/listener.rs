//! Accept loops: each connection (and its TLS handshake) runs in its own task, so a slow or
//! hostile client never holds up the others.

use crate::{ConnectionInfo, Gateway};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// How long a client may take to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an accept loop waits after a failed accept before it tries again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The least time between two warnings about failed accepts on one listener.
const ACCEPT_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// A listener's accept step, shared by the MQTT and HTTPS loops. A failed accept (most often the
/// process is out of file descriptors) leaves the connection in the kernel's backlog: the loop
/// waits [`ACCEPT_BACKOFF`] rather than spin, and warns at most every
/// [`ACCEPT_WARNING_INTERVAL`], so neither the CPU nor the log pays for it.
pub struct Acceptor {
    listener: TcpListener,
    /// What the listener serves, for the log ("MQTT/TLS", "HTTPS").
    what: &'static str,
    failures: u64,
    quiet_until: Option<Instant>,
}

impl Acceptor {
    /// Wraps a bound listener.
    pub fn new(listener: TcpListener, what: &'static str) -> Acceptor {
        Acceptor {
            listener,
            what,
            failures: 0,
            quiet_until: None,
        }
    }

    /// The next connection, with TCP_NODELAY set; waits through accept failures.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.listener.accept().await {
                Ok((tcp, peer)) => {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(%peer, "TCP_NODELAY not set: {e}");
                    }
                    return (tcp, peer);
                }
                Err(e) => {
                    self.failed(&e);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }

    fn failed(&mut self, error: &std::io::Error) {
        self.failures += 1;
        let now = Instant::now();
        if self.quiet_until.is_some_and(|until| now < until) {
            return;
        }
        let what = self.what;
        let failures = std::mem::take(&mut self.failures);
        // EMFILE and ENFILE: the process's, or the system's, open-file limit.
        if matches!(error.raw_os_error(), Some(23 | 24)) {
            tracing::warn!(
                "{what}: out of file descriptors ({error}); new connections wait in the \
                 backlog until some close ({failures} failed accepts since the last warning)"
            );
        } else {
            tracing::warn!(
                "{what}: accept failed: {error} ({failures} failed accepts since the last warning)"
            );
        }
        self.quiet_until = Some(now + ACCEPT_WARNING_INTERVAL);
    }
}

/// Says, at most every [`ACCEPT_WARNING_INTERVAL`], that connections are being closed because
/// too many are waiting to authenticate.
#[derive(Default)]
struct PendingRefusals {
    refused: u64,
    quiet_until: Option<Instant>,
}

impl PendingRefusals {
    fn refused(&mut self, what: &str, gw: &Gateway, peer: SocketAddr) {
        gw.hub()
            .metrics()
            .connections_refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.refused += 1;
        let now = Instant::now();
        if self.quiet_until.is_some_and(|until| now < until) {
            return;
        }
        tracing::warn!(
            %peer,
            "{what}: {} connections are already waiting to authenticate \
             (max_pending_connections); closed {} new ones since the last warning",
            gw.config().max_pending_connections,
            std::mem::take(&mut self.refused)
        );
        self.quiet_until = Some(now + ACCEPT_WARNING_INTERVAL);
    }
}

impl Gateway {
    /// Accepts MQTT over TLS (port 8883) forever; drop the future to stop accepting.
    pub async fn serve_tls(&self, listener: TcpListener, acceptor: TlsAcceptor) {
        let mut listener = Acceptor::new(listener, "MQTT/TLS");
        let mut refusals = PendingRefusals::default();
        loop {
            let (tcp, peer) = listener.accept().await;
            let Some(pending) = self.admit_pending() else {
                drop(tcp);
                refusals.refused("MQTT/TLS", self, peer);
                continue;
            };
            let (gw, acceptor) = (self.clone(), acceptor.clone());
            tokio::spawn(
                async move { gw.serve_tls_connection(tcp, peer, acceptor, pending).await },
            );
        }
    }

    /// Accepts MQTT over plain TCP forever (tests, or behind a TLS-terminating proxy).
    pub async fn serve_plain(&self, listener: TcpListener) {
        let mut listener = Acceptor::new(listener, "plain MQTT");
        let mut refusals = PendingRefusals::default();
        loop {
            let (tcp, peer) = listener.accept().await;
            let Some(pending) = self.admit_pending() else {
                drop(tcp);
                refusals.refused("plain MQTT", self, peer);
                continue;
            };
            let gw = self.clone();
            let info = ConnectionInfo {
                peer: Some(peer),
                client_cert_chain: Vec::new(),
            };
            tokio::spawn(async move { gw.serve_pending(tcp, info, Some(pending)).await });
        }
    }

    async fn serve_tls_connection(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        acceptor: TlsAcceptor,
        pending: crate::gateway::Pending,
    ) {
        let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return tracing::debug!(%peer, "TLS handshake failed: {e}"),
            Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
        };
        let chain = tls.get_ref().1.peer_certificates().unwrap_or_default();
        let info = ConnectionInfo {
            peer: Some(peer),
            client_cert_chain: chain.iter().map(|c| c.as_ref().to_vec()).collect(),
        };
        self.serve_pending(tls, info, Some(pending)).await
    }
}
