//! One device connection, CONNECT to close: the state machine that reads packets, calls the hub,
//! and delivers the hub's commands, with a single writer.

use crate::codec::{CodecError, ConnAck, Connect, Packet};
use crate::connect::{self, CONNACK_BAD_PROTOCOL, CONNACK_UNAVAILABLE};
use crate::inflight::Inflight;
use crate::subscriptions::Subscriptions;
use crate::transport::{PacketReader, PacketWriter, ReadError};
use crate::{ConnectionInfo, Gateway};
use chrono::{DateTime, Utc};
use fleethub_hub::{ConnectionHandle, DeviceCommand, DeviceQuota, Hub};
use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::sync::mpsc::{self, UnboundedReceiver};
use tokio::time::{sleep_until, Instant};

/// How long a new connection may take to send CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection ended; logged, never sent.
#[derive(Debug)]
pub struct Close(String);

impl fmt::Display for Close {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<std::io::Error> for Close {
    fn from(e: std::io::Error) -> Self {
        Close(format!("write failed: {e}"))
    }
}

type Step = Result<(), Close>;

/// Serves one connection from its first byte to its close.
pub async fn serve<S>(
    gw: &Gateway,
    stream: S,
    info: ConnectionInfo,
    pending: Option<crate::gateway::Pending>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (r, w) = tokio::io::split(stream);
    let mut reader = PacketReader::new(r, gw.config().max_packet_size);
    let mut writer = PacketWriter::new(w);
    let connect = match read_connect(&mut reader, &info).await {
        Ok(connect) => connect,
        Err(code) => return refuse(gw.hub(), &mut writer, code).await,
    };
    // Before authentication, which is what a connection storm costs.
    if let Err(e) = gw.hub().admit_connection() {
        tracing::debug!(peer = ?info.peer, "CONNECT refused: {e}");
        return refuse(gw.hub(), &mut writer, Some(CONNACK_UNAVAILABLE)).await;
    }
    let admitted = match connect::admit(gw.hub(), &connect, &info).await {
        Ok(admitted) => admitted,
        Err(code) => return refuse(gw.hub(), &mut writer, Some(code)).await,
    };
    // Authenticated: the connection is a device now, no longer one waiting to be.
    drop(pending);
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = gw.hub().device_connected(&admitted.device_id, tx);
    let ack = ConnAck {
        session_present: admitted.session_present,
        code: 0,
    };
    tracing::debug!(device = %admitted.device_id, peer = ?info.peer, clean = !admitted.persistent, "device connected");
    let mut session = Session {
        hub: gw.hub().clone(),
        client_id: connect.client_id.clone(),
        device_id: admitted.device_id,
        persistent: admitted.persistent,
        subs: admitted.subscriptions,
        stored_session: admitted.stored_session,
        handle,
        quota: gw.hub().device_quota(),
        expires_at: admitted.expires_at,
        inflight: Inflight::default(),
        writer,
    };
    if session.writer.send(&Packet::ConnAck(ack)).await.is_err() {
        return;
    }
    session.sync_hub();
    let keep_alive = keep_alive_timeout(connect.keep_alive, gw.config().max_keep_alive);
    let close = session.run(reader, rx, keep_alive).await;
    tracing::debug!(device = %session.device_id, "connection closed: {close}");
    session.writer.shutdown().await;
}

/// Answers a refused CONNECT (when there is a code to send) and closes.
async fn refuse<W: AsyncWrite + Unpin>(hub: &Hub, writer: &mut PacketWriter<W>, code: Option<u8>) {
    if let Some(code) = code {
        hub.metrics()
            .connections_refused
            .fetch_add(1, Ordering::Relaxed);
        let _ = writer
            .send(&Packet::ConnAck(ConnAck {
                session_present: false,
                code,
            }))
            .await;
    }
    writer.shutdown().await;
}

/// Waits for CONNECT. Err carries the CONNACK code to answer with, if any: 1 for an
/// unsupported protocol level, none for anything else (the connection just closes).
async fn read_connect<R: AsyncRead + Unpin>(
    reader: &mut PacketReader<R>,
    info: &ConnectionInfo,
) -> Result<Connect, Option<u8>> {
    match tokio::time::timeout(CONNECT_TIMEOUT, reader.next()).await {
        Ok(Ok(Some(Packet::Connect(c)))) => Ok(c),
        Ok(Err(ReadError::Codec(CodecError::UnsupportedProtocolLevel(level)))) => {
            tracing::warn!(peer = ?info.peer, level, "CONNECT refused: unsupported protocol level");
            Err(Some(CONNACK_BAD_PROTOCOL))
        }
        Ok(other) => {
            tracing::debug!(peer = ?info.peer, "first packet was not a valid CONNECT: {other:?}");
            Err(None)
        }
        Err(_) => {
            tracing::debug!(peer = ?info.peer, "no CONNECT within {CONNECT_TIMEOUT:?}");
            Err(None)
        }
    }
}

/// 1.5 × the client's keepalive; 0 or more than the maximum means the maximum.
pub fn keep_alive_timeout(requested: u16, max: u16) -> Duration {
    let secs = if requested == 0 || requested > max {
        max
    } else {
        requested
    };
    Duration::from_millis(u64::from(secs) * 1500)
}

/// The state of one admitted connection.
struct Session<S> {
    hub: Hub,
    client_id: String,
    device_id: String,
    persistent: bool,
    subs: Subscriptions,
    /// The session as this connection last read or wrote it in the store: a SUBSCRIBE that
    /// changes nothing (every reconnect of a device that subscribes again) writes nothing.
    stored_session: Option<serde_json::Value>,
    handle: ConnectionHandle,
    /// This connection's per-device rate buckets.
    quota: DeviceQuota,
    /// When the credential the device connected with expires (hub's clock).
    expires_at: Option<DateTime<Utc>>,
    inflight: Inflight,
    writer: PacketWriter<WriteHalf<S>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    async fn run(
        &mut self,
        mut reader: PacketReader<ReadHalf<S>>,
        mut commands: UnboundedReceiver<DeviceCommand>,
        keep_alive: Duration,
    ) -> Close {
        // One timer per reason for the whole session, re-armed lazily: a packet moves the
        // keepalive deadline without touching its timer, which, when it fires early, sleeps on
        // to the deadline. Registering and clearing fresh timers for every packet and command
        // was a measurable share of a direct method's CPU.
        let mut deadline = Instant::now() + keep_alive;
        let keepalive = sleep_until(deadline);
        let resend = sleep_until(deadline);
        let expiry = sleep_until(self.expiry_instant().unwrap_or(deadline));
        tokio::pin!(keepalive, resend, expiry);
        let expires = self.expires_at.is_some();
        loop {
            let resend_at = self.inflight.next_due();
            if let Some(at) = resend_at {
                // A later due time lets the timer fire early, and the retransmit finds nothing due.
                if resend.is_elapsed() || at < resend.deadline() {
                    resend.as_mut().reset(at);
                }
            }
            let step = tokio::select! {
                read = reader.next() => match read {
                    Ok(Some(packet)) => {
                        // The clock may have passed the expiry without the timer seeing it
                        // (a manual clock, or a suspended host).
                        let step = match self.check_expiry() {
                            Ok(()) => self.on_packet(packet).await,
                            Err(close) => Err(close),
                        };
                        // After handling: a throttled publish may wait before it is stored.
                        deadline = Instant::now() + keep_alive;
                        step
                    }
                    Ok(None) => Err(Close("the device closed the stream".into())),
                    Err(e) => Err(Close(e.to_string())),
                },
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd).await,
                    None => Err(Close("the hub released the connection".into())),
                },
                () = &mut keepalive => {
                    if Instant::now() < deadline {
                        keepalive.as_mut().reset(deadline);
                        Ok(())
                    } else {
                        Err(Close(format!("nothing received for {keep_alive:?} (keepalive)")))
                    }
                }
                () = &mut resend, if resend_at.is_some() => self.retransmit().await,
                () = &mut expiry, if expires => {
                    let step = self.check_expiry();
                    // Early by the hub's clock (a manual clock set back): wait again.
                    if let Some(at) = self.expiry_instant() {
                        expiry.as_mut().reset(at);
                    }
                    step
                }
            };
            if let Err(close) = step {
                return close;
            }
        }
    }

    async fn on_packet(&mut self, packet: Packet) -> Step {
        match packet {
            Packet::Publish(p) => self.on_publish(p).await,
            Packet::PubAck(id) => self.on_puback(id).await,
            Packet::Subscribe(s) => self.on_subscribe(s).await,
            Packet::Unsubscribe(u) => self.on_unsubscribe(u).await,
            Packet::PingReq => Ok(self.writer.send(&Packet::PingResp).await?),
            Packet::Disconnect => Err(Close("DISCONNECT".into())),
            other => Err(Close(format!("unexpected packet from a device: {other:?}"))),
        }
    }

    /// When, in monotonic time, the credential's expiry is due by the hub's clock now.
    fn expiry_instant(&self) -> Option<Instant> {
        let left = self.expires_at? - self.hub.now();
        Some(Instant::now() + left.to_std().unwrap_or_default())
    }

    /// Closes the session once the hub's clock reaches the credential's expiry, as IoT Hub does.
    fn check_expiry(&self) -> Step {
        match self.expires_at {
            Some(at) if self.hub.now() >= at => Err(Close(format!(
                "the device's credential expired at {}",
                fleethub_core::time::format_timestamp(at)
            ))),
            _ => Ok(()),
        }
    }

    /// Tells the hub what this connection can receive.
    fn sync_hub(&self) {
        let (methods, desired, c2d) = self.subs.hub_flags();
        self.handle.set_subscriptions(methods, desired, c2d);
    }
}

mod inbound;
mod outbound;

#[cfg(test)]
mod tests {
    use super::keep_alive_timeout;
    use std::time::Duration;

    #[test]
    fn keepalive_is_one_and_a_half_times_the_request_capped_at_the_maximum() {
        assert_eq!(keep_alive_timeout(60, 1740), Duration::from_secs(90));
        assert_eq!(keep_alive_timeout(0, 1740), Duration::from_secs(2610));
        assert_eq!(
            keep_alive_timeout(u16::MAX, 1740),
            Duration::from_secs(2610)
        );
        assert_eq!(keep_alive_timeout(1, 1740), Duration::from_millis(1500));
    }
}
