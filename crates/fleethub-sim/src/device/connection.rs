//! The task that owns a device's socket: it reads packets and routes them (acks and twin
//! responses to their waiters, pushes to the event stream), and it alone writes, fed by a
//! channel, with a PINGREQ every keepalive interval.

use super::correlation::{Ack, Correlation, TwinResponse};
use super::events::DeviceEvent;
use super::hub_topics::{parse_hub_topic, HubTopic};
use bytes::Bytes;
use fleethub_mqtt::codec::{Packet, Publish};
use fleethub_mqtt::transport::{PacketReader, PacketWriter};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};

/// Packets written in one flush at most, so a busy client still lets pings through.
const MAX_BATCH: usize = 256;

/// What a client handle asks the connection task to do.
pub(crate) enum Command {
    /// Write this packet.
    Send(Packet),
    /// Send DISCONNECT, close the stream, then signal.
    Close(oneshot::Sender<()>),
}

/// The connection task's view of the client.
pub(crate) struct Connection {
    pub device_id: String,
    pub correlation: Arc<Correlation>,
    pub events: mpsc::UnboundedSender<DeviceEvent>,
    /// Weak, so that dropping every client handle closes the command channel and the connection.
    pub acks: mpsc::WeakSender<Command>,
    /// Zero disables pings and the silence check.
    pub keep_alive: Duration,
}

impl Connection {
    /// Runs until the stream ends, then fails every waiter and emits `Disconnected`.
    pub async fn run<R, W>(
        self,
        mut reader: PacketReader<R>,
        mut writer: PacketWriter<W>,
        mut commands: mpsc::Receiver<Command>,
    ) where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let (reason, done) = tokio::select! {
            reason = self.read_loop(&mut reader) => (reason, None),
            ended = write_loop(&mut writer, &mut commands, self.keep_alive) => ended,
        };
        tracing::debug!(device = %self.device_id, %reason, "device connection ended");
        self.correlation.close(&reason);
        writer.shutdown().await;
        let _ = self.events.send(DeviceEvent::Disconnected { reason });
        if let Some(done) = done {
            let _ = done.send(());
        }
    }

    async fn read_loop<R: AsyncRead + Unpin>(&self, reader: &mut PacketReader<R>) -> String {
        // The hub answers each PINGREQ, so two intervals of silence mean the link is dead.
        let silence_limit = self.keep_alive * 2;
        loop {
            let next = if self.keep_alive.is_zero() {
                reader.next().await
            } else {
                match tokio::time::timeout(silence_limit, reader.next()).await {
                    Ok(next) => next,
                    Err(_) => return format!("no packet from the hub for {silence_limit:?}"),
                }
            };
            let packet = match next {
                Ok(Some(packet)) => packet,
                Ok(None) => return "hub closed the connection".into(),
                Err(e) => return format!("reading from the hub failed: {e}"),
            };
            if let Err(reason) = self.dispatch(packet).await {
                return reason;
            }
        }
    }

    async fn dispatch(&self, packet: Packet) -> Result<(), String> {
        match packet {
            Packet::PubAck(id) => {
                self.correlation.complete_ack(id, Ack::Pub);
            }
            Packet::SubAck(suback) => {
                self.correlation
                    .complete_ack(suback.packet_id, Ack::Sub(suback.codes));
            }
            Packet::Publish(publish) => self.on_publish(publish).await,
            Packet::PubRel(id) => self.send_ack(Packet::PubComp(id)).await,
            Packet::PingResp | Packet::UnsubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) => {}
            other => return Err(format!("hub sent a client-only packet: {other:?}")),
        }
        Ok(())
    }

    async fn on_publish(&self, publish: Publish) {
        match parse_hub_topic(&publish.topic, &self.device_id) {
            HubTopic::TwinResponse {
                status,
                rid,
                version,
            } => {
                let response = TwinResponse {
                    status,
                    version,
                    body: publish.payload.clone(),
                };
                if !self.correlation.complete_response(&rid, response) {
                    tracing::debug!(device = %self.device_id, %rid, "twin response nobody waits for");
                }
            }
            HubTopic::DesiredPatch { version } => {
                let body = json_body(&publish.payload);
                let version = version
                    .or_else(|| body.get("$version").and_then(Value::as_u64))
                    .unwrap_or(0);
                self.emit(DeviceEvent::DesiredPatch { version, body });
            }
            HubTopic::MethodRequest { name, rid } => {
                let payload = json_body(&publish.payload);
                self.emit(DeviceEvent::MethodRequest { name, rid, payload });
            }
            HubTopic::C2d { properties } => self.emit(DeviceEvent::C2d {
                topic_props: properties,
                body: publish.payload.clone(),
            }),
            HubTopic::Unknown => {
                tracing::debug!(device = %self.device_id, topic = %publish.topic, "ignored publish");
            }
        }
        match (publish.qos, publish.packet_id) {
            (1, Some(id)) => self.send_ack(Packet::PubAck(id)).await,
            (2, Some(id)) => self.send_ack(Packet::PubRec(id)).await,
            _ => {}
        }
    }

    fn emit(&self, event: DeviceEvent) {
        // Nobody listening is fine: a load device ignores what the hub pushes.
        let _ = self.events.send(event);
    }

    async fn send_ack(&self, packet: Packet) {
        if let Some(commands) = self.acks.upgrade() {
            let _ = commands.send(Command::Send(packet)).await;
        }
    }
}

/// The payload as JSON: Null when blank, a string when it is not JSON.
fn json_body(payload: &Bytes) -> Value {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(payload).into_owned()))
}

/// Writes commands as they come, batching what is already queued; pings when keepalive is due.
/// Returns why it stopped and, for a client-requested close, whom to tell once closed.
async fn write_loop<W: AsyncWrite + Unpin>(
    writer: &mut PacketWriter<W>,
    commands: &mut mpsc::Receiver<Command>,
    keep_alive: Duration,
) -> (String, Option<oneshot::Sender<()>>) {
    let period = keep_alive.max(Duration::from_secs(1));
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            command = commands.recv() => {
                let Some(command) = command else {
                    writer.queue(&Packet::Disconnect);
                    let _ = writer.flush().await;
                    return ("every client handle was dropped".into(), None);
                };
                let (mut next, mut queued) = (Some(command), 0);
                while let Some(command) = next.take() {
                    match command {
                        Command::Send(packet) => writer.queue(&packet),
                        Command::Close(done) => {
                            writer.queue(&Packet::Disconnect);
                            let _ = writer.flush().await;
                            return ("disconnected by the client".into(), Some(done));
                        }
                    }
                    queued += 1;
                    if queued < MAX_BATCH {
                        next = commands.try_recv().ok();
                    }
                }
                if let Err(e) = writer.flush().await {
                    return (format!("writing to the hub failed: {e}"), None);
                }
            }
            _ = ping.tick(), if !keep_alive.is_zero() => {
                if let Err(e) = writer.send(&Packet::PingReq).await {
                    return (format!("writing to the hub failed: {e}"), None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_become_json_null_or_text() {
        assert_eq!(json_body(&Bytes::from_static(b" ")), Value::Null);
        assert_eq!(json_body(&Bytes::new()), Value::Null);
        assert_eq!(
            json_body(&Bytes::from_static(br#"{"a":1}"#)),
            serde_json::json!({"a": 1})
        );
        assert_eq!(
            json_body(&Bytes::from_static(b"plain")),
            Value::String("plain".into())
        );
    }
}
