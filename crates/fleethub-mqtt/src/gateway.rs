//! The gateway: its settings, and serving one device connection over any byte stream.

use fleethub_hub::Hub;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

/// Limits of the device gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest packet a device may send: IoT Hub's 256 KiB message plus 1 KiB for topic and header.
    pub max_packet_size: usize,
    /// Longest keepalive honoured, in seconds (IoT Hub: 1740); 0 or longer requests get this.
    pub max_keep_alive: u16,
    /// The most MQTT connections (TLS and plain) that may be open at once before their CONNECT
    /// is authenticated. A connection over it is closed at accept, before its TLS handshake: a
    /// client that keeps opening connections and never authenticates can hold at most this many
    /// file descriptors, and devices that authenticate never count against it.
    pub max_pending_connections: usize,
}

/// [`GatewayConfig::max_pending_connections`] by default: an honest device authenticates in
/// milliseconds, so 1,024 at once admits reconnect storms of tens of thousands of devices.
pub const DEFAULT_MAX_PENDING_CONNECTIONS: usize = 1024;

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_packet_size: 256 * 1024 + 1024,
            max_keep_alive: 1740,
            max_pending_connections: DEFAULT_MAX_PENDING_CONNECTIONS,
        }
    }
}

/// What the transport knows about a connection before CONNECT.
#[derive(Debug, Clone, Default)]
pub struct ConnectionInfo {
    /// The remote address, when the transport has one.
    pub peer: Option<SocketAddr>,
    /// The client's TLS certificate chain as DER, leaf first; empty without client auth.
    pub client_cert_chain: Vec<Vec<u8>>,
}

/// The MQTT device gateway in front of a hub; cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    hub: Hub,
    config: GatewayConfig,
    /// One permit per connection accepted and not yet authenticated.
    pending: Arc<Semaphore>,
}

/// A place among the connections waiting to authenticate; given back when dropped, which is
/// when the connection's CONNECT is decided (or the connection ends).
pub struct Pending {
    _permit: OwnedSemaphorePermit,
}

impl Gateway {
    /// A gateway that admits devices into `hub`.
    pub fn new(hub: Hub, cfg: GatewayConfig) -> Gateway {
        let pending = Arc::new(Semaphore::new(cfg.max_pending_connections.max(1)));
        Gateway {
            hub,
            config: cfg,
            pending,
        }
    }

    /// The hub devices are admitted into.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The gateway's limits.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// A place for a newly accepted connection among those waiting to authenticate, or `None`
    /// when [`GatewayConfig::max_pending_connections`] are already waiting (close it then).
    pub fn admit_pending(&self) -> Option<Pending> {
        Arc::clone(&self.pending)
            .try_acquire_owned()
            .ok()
            .map(|permit| Pending { _permit: permit })
    }

    /// Serves one device connection over any byte stream (TLS, plain TCP, WebSocket bridge).
    ///
    /// The connection runs in its own task, so even a panic below it stays with this connection;
    /// dropping the returned future ends the connection.
    pub async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
        &self,
        stream: S,
        info: ConnectionInfo,
    ) {
        self.serve_pending(stream, info, None).await
    }

    /// [`Gateway::serve_connection`] for a connection holding a place among those waiting to
    /// authenticate: the place is given back once its CONNECT is decided.
    pub async fn serve_pending<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
        &self,
        stream: S,
        info: ConnectionInfo,
        pending: Option<Pending>,
    ) {
        let (gw, peer) = (self.clone(), info.peer);
        let session = async move { crate::session::serve(&gw, stream, info, pending).await };
        let mut task = AbortOnDrop(tokio::spawn(session));
        if let Err(e) = (&mut task.0).await {
            if e.is_panic() {
                tracing::error!(?peer, "connection task panicked: {e}");
            }
        }
    }
}

/// Ends a connection's task when whoever serves it stops waiting.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
