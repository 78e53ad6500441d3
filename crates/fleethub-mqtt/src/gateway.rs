//! The gateway: its settings, and serving one device connection over any byte stream.

use fleethub_hub::Hub;
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;

/// Limits of the device gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest packet a device may send: IoT Hub's 256 KiB message plus 1 KiB for topic and header.
    pub max_packet_size: usize,
    /// Longest keepalive honoured, in seconds (IoT Hub: 1740); 0 or longer requests get this.
    pub max_keep_alive: u16,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_packet_size: 256 * 1024 + 1024,
            max_keep_alive: 1740,
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
}

impl Gateway {
    /// A gateway that admits devices into `hub`.
    pub fn new(hub: Hub, cfg: GatewayConfig) -> Gateway {
        Gateway { hub, config: cfg }
    }

    /// The hub devices are admitted into.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The gateway's limits.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
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
        let (gw, peer) = (self.clone(), info.peer);
        let session = async move { crate::session::serve(&gw, stream, info).await };
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
