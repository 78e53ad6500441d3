//! The HTTPS listener: the REST API, `/metrics`, `/healthz` and MQTT over WebSocket, served by
//! hyper over rustls. Every connection is bounded in number ([`admission`]: per source address
//! and in all, checked before TLS) and in time (the TLS handshake, the request head, idleness:
//! [`activity`]), so that HTTPS clients can never hold the file descriptors devices need. A
//! connection upgraded to MQTT over WebSocket leaves all of this and is served by the gateway
//! like any device connection.

pub mod activity;
pub mod admission;

use activity::{Activity, BusyBody, Counted, IdleTimeouts, StallLimit};
use admission::{Admission, Admitted, Caps};
use axum::extract::ConnectInfo;
use fleethub_hub::Hub;
use fleethub_mqtt::Acceptor;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// How long a client may take to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection closed for idleness may take to finish closing (an HTTP/2 GOAWAY).
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The HTTPS listener's limits.
#[derive(Debug, Clone, Copy)]
pub struct HttpsLimits {
    /// How long a client has to send a request head: from the connection opening (any protocol)
    /// and, on HTTP/1, from the previous response.
    pub header_timeout: Duration,
    /// How long a connection may have no request in flight after its first request.
    pub idle_timeout: Duration,
    /// How many connections one source may hold (0: no limit), and all sources together.
    pub caps: Caps,
}

/// What every HTTPS connection task shares.
struct Server {
    tls: TlsAcceptor,
    api: fleethub_api::Api,
    http: auto::Builder<TokioExecutor>,
    limits: HttpsLimits,
    admission: Arc<Admission>,
    hub: Hub,
}

/// Accepts HTTPS forever; drop the future to stop accepting.
pub async fn serve(
    listener: TcpListener,
    tls: TlsAcceptor,
    api: fleethub_api::Api,
    hub: Hub,
    limits: HttpsLimits,
) {
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    // Pings find a vanished peer that still has a request in flight (an idle one is closed).
    http.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.idle_timeout)
        .keep_alive_timeout(limits.header_timeout);
    let server = Arc::new(Server {
        tls,
        api,
        http,
        limits,
        admission: Admission::new(limits.caps, hub.clone()),
        hub,
    });
    let mut listener = Acceptor::new(listener, "HTTPS");
    loop {
        let (tcp, peer) = listener.accept().await;
        // Over a cap, the socket is dropped (closed) here, before any TLS work.
        let Ok(admitted) = server.admission.admit(peer.ip()) else {
            continue;
        };
        tokio::spawn(server.clone().serve_connection(tcp, peer, admitted));
    }
}

impl Server {
    async fn serve_connection(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr, _: Admitted) {
        let metrics = &self.hub.metrics().https;
        let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, self.tls.accept(tcp)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return tracing::debug!(%peer, "HTTPS handshake failed: {e}"),
            Err(_) => {
                count(&metrics.handshake_timeouts);
                return tracing::debug!(%peer, "HTTPS handshake timed out");
            }
        };
        let activity = Activity::new();
        let stream = Counted::new(stream, activity.clone());
        let service = hyper::service::service_fn({
            let (api, activity, hub) = (self.api.clone(), activity.clone(), self.hub.clone());
            let body_limit = self.limits.idle_timeout;
            move |mut request: Request<Incoming>| {
                let busy = activity.begin();
                // For the WebSocket bridge, which gives the gateway the device's address.
                request.extensions_mut().insert(ConnectInfo(peer));
                let hub = hub.clone();
                let request = request.map(|body| {
                    let stalled = move || count(&hub.metrics().https.body_timeouts);
                    axum::body::Body::new(StallLimit::new(body, body_limit, stalled))
                });
                let response = api.clone().oneshot(request);
                async move {
                    let response = response.await?;
                    Ok::<_, Infallible>(response.map(|body| BusyBody::new(body, busy)))
                }
            }
        });
        // hyper's own header timer, started once the client has sent enough to choose HTTP/1,
        // closes an HTTP/1 slowloris first and says why; this one closes what never got that far,
        // and HTTP/2.
        let idle = IdleTimeouts {
            first_request: self.limits.header_timeout + self.limits.header_timeout / 4,
            between_requests: self.limits.idle_timeout,
        };
        let connection = self
            .http
            .serve_connection_with_upgrades(TokioIo::new(stream), service);
        tokio::pin!(connection);
        // An upgrade to WebSocket ends this future: the upgraded stream lives on in the
        // gateway's task, and this connection's admission is given back.
        let ended = tokio::select! {
            ended = connection.as_mut() => ended,
            () = activity.idle_for(idle) => {
                count(&metrics.idle_timeouts);
                tracing::debug!(%peer, "HTTPS connection idle: closing it");
                connection.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(CLOSE_GRACE, connection.as_mut()).await;
                return;
            }
        };
        let Err(e) = ended else { return };
        // hyper times out an HTTP/1 connection waiting for its next request head the same way
        // whether the client sent half of one (slowloris) or nothing (an idle keep-alive).
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout)
        {
            if activity.request_begun() {
                count(&metrics.header_timeouts);
            } else {
                count(&metrics.idle_timeouts);
            }
        }
        tracing::debug!(%peer, "HTTPS connection ended: {e}");
    }
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
