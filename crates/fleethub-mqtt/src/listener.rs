//! Accept loops: each connection (and its TLS handshake) runs in its own task, so a slow or
//! hostile client never holds up the others.

use crate::{ConnectionInfo, Gateway};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// How long a client may take to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Gateway {
    /// Accepts MQTT over TLS (port 8883) forever; drop the future to stop accepting.
    pub async fn serve_tls(&self, listener: TcpListener, acceptor: TlsAcceptor) {
        loop {
            let Some((tcp, peer)) = accept(&listener).await else {
                continue;
            };
            let (gw, acceptor) = (self.clone(), acceptor.clone());
            tokio::spawn(async move { gw.serve_tls_connection(tcp, peer, acceptor).await });
        }
    }

    /// Accepts MQTT over plain TCP forever (tests, or behind a TLS-terminating proxy).
    pub async fn serve_plain(&self, listener: TcpListener) {
        loop {
            let Some((tcp, peer)) = accept(&listener).await else {
                continue;
            };
            let gw = self.clone();
            let info = ConnectionInfo {
                peer: Some(peer),
                client_cert_chain: Vec::new(),
            };
            tokio::spawn(async move { gw.serve_connection(tcp, info).await });
        }
    }

    async fn serve_tls_connection(&self, tcp: TcpStream, peer: SocketAddr, acceptor: TlsAcceptor) {
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
        self.serve_connection(tls, info).await
    }
}

/// Accepts one TCP connection with TCP_NODELAY; on error (e.g. out of file descriptors) waits
/// briefly so the loop does not spin.
async fn accept(listener: &TcpListener) -> Option<(TcpStream, SocketAddr)> {
    match listener.accept().await {
        Ok((tcp, peer)) => {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(%peer, "TCP_NODELAY not set: {e}");
            }
            Some((tcp, peer))
        }
        Err(e) => {
            tracing::warn!("accept failed: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}
