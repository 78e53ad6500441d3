//! [`DeviceClient`]: connect as a device, then send telemetry, read and report the twin, and
//! answer methods. Every request waits for the hub's answer; any number may be in flight from
//! any number of tasks at once.

use super::connection::{Command, Connection};
use super::correlation::{Ack, Correlation, TwinResponse};
use super::events::DeviceEvents;
use super::options::ConnectOptions;
use super::ClientError;
use bytes::Bytes;
use fleethub_mqtt::codec::{Connect, Packet, Publish, Subscribe};
use fleethub_mqtt::properties::{encode_component, encode_properties};
use fleethub_mqtt::transport::{PacketReader, PacketWriter};
use serde_json::Value;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// TCP connect, TLS handshake and CONNACK together must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest packet accepted from the hub: a full twin document fits with room to spare.
const MAX_PACKET_SIZE: usize = 1024 * 1024;

/// Packets queued for the connection task before senders wait.
const COMMAND_QUEUE: usize = 1024;

/// A connected IoT Hub device. Cheap to clone; all clones share one connection, which closes
/// on [`disconnect`](Self::disconnect) or when the last clone is dropped.
#[derive(Clone)]
pub struct DeviceClient {
    device_id: Arc<str>,
    commands: mpsc::Sender<Command>,
    correlation: Arc<Correlation>,
    /// Whether the TLS handshake resumed an earlier session (false over plain TCP).
    tls_resumed: bool,
}

impl std::fmt::Debug for DeviceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceClient")
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

impl DeviceClient {
    /// Dials the hub, authenticates, and starts the connection task. A CONNACK code other than
    /// 0 is [`ClientError::Refused`].
    pub async fn connect(
        opts: ConnectOptions,
    ) -> Result<(DeviceClient, DeviceEvents), ClientError> {
        tokio::time::timeout(CONNECT_TIMEOUT, connect_within_deadline(opts))
            .await
            .map_err(|_| ClientError::Timeout(CONNECT_TIMEOUT, "TCP, TLS and CONNACK"))?
    }

    /// The device id this client is connected as.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// Whether this connection's TLS handshake resumed an earlier session (a ticket or session
    /// id from the same [`ConnectOptions::tls`] configuration) instead of a full handshake.
    pub fn tls_resumed(&self) -> bool {
        self.tls_resumed
    }

    /// Subscribes to `filters` at QoS 1; returns the SUBACK code of each (0x80 = refused).
    pub async fn subscribe(&self, filters: &[&str]) -> Result<Vec<u8>, ClientError> {
        if filters.is_empty() {
            return Ok(Vec::new());
        }
        let (packet_id, ack) = self.correlation.register_packet()?;
        let filters = filters.iter().map(|f| (f.to_string(), 1)).collect();
        self.send(Packet::Subscribe(Subscribe { packet_id, filters }))
            .await?;
        match self.wait(ack).await? {
            Ack::Sub(codes) => Ok(codes),
            Ack::Pub => Err(ClientError::Protocol(format!(
                "PUBACK {packet_id} answered a SUBSCRIBE"
            ))),
        }
    }

    /// Subscribes to all four IoT Hub feeds: C2D, methods, desired patches, twin responses.
    pub async fn subscribe_all(&self) -> Result<Vec<u8>, ClientError> {
        let filters = super::all_filters(&self.device_id);
        let filters: Vec<&str> = filters.iter().map(String::as_str).collect();
        self.subscribe(&filters).await
    }

    /// Sends one telemetry message; `$.mid` goes first in the topic's property bag.
    pub async fn send_telemetry(
        &self,
        message_id: &str,
        props: &[(String, String)],
        body: Bytes,
    ) -> Result<(), ClientError> {
        let mut bag = Vec::with_capacity(props.len() + 1);
        if !message_id.is_empty() {
            bag.push(("$.mid".to_string(), message_id.to_string()));
        }
        bag.extend(props.iter().filter(|(k, _)| k != "$.mid").cloned());
        let topic = format!(
            "devices/{}/messages/events/{}",
            self.device_id,
            encode_properties(&bag)
        );
        self.publish(topic, body).await
    }

    /// Fetches the device's twin (`{"desired":{…},"reported":{…}}`).
    pub async fn get_twin(&self) -> Result<Value, ClientError> {
        let response = self
            .twin_request("$iothub/twin/GET/", Bytes::from_static(b" "))
            .await?;
        serde_json::from_slice(&response.body).map_err(|e| {
            ClientError::Protocol(format!(
                "twin GET answered with a body that is not JSON: {e}"
            ))
        })
    }

    /// Patches the reported properties; returns the reported `$version` the hub assigned.
    pub async fn report(&self, patch: &Value) -> Result<u64, ClientError> {
        let body = Bytes::from(patch.to_string());
        let response = self
            .twin_request("$iothub/twin/PATCH/properties/reported/", body)
            .await?;
        response.version.ok_or_else(|| {
            ClientError::Protocol(format!(
                "reported patch answered {} without $version in the topic",
                response.status
            ))
        })
    }

    /// Answers the method request `rid` with `status` and a JSON payload.
    pub async fn method_response(
        &self,
        rid: &str,
        status: i32,
        payload: &Value,
    ) -> Result<(), ClientError> {
        let topic = format!(
            "$iothub/methods/res/{status}/?$rid={}",
            encode_component(rid)
        );
        self.publish(topic, Bytes::from(payload.to_string())).await
    }

    /// Sends DISCONNECT and waits until the connection is closed; waiting requests fail.
    pub async fn disconnect(self) {
        let (done, closed) = oneshot::channel();
        if self.commands.send(Command::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }

    /// Publishes at QoS 1 and waits for the PUBACK.
    /// Publishes at QoS 1 on any topic and waits for PUBACK: for tests of what a hub refuses.
    pub async fn publish_raw(&self, topic: &str, payload: Bytes) -> Result<(), ClientError> {
        self.publish(topic.to_string(), payload).await
    }

    async fn publish(&self, topic: String, payload: Bytes) -> Result<(), ClientError> {
        let (packet_id, ack) = self.correlation.register_packet()?;
        let publish = Publish {
            dup: false,
            qos: 1,
            retain: false,
            topic,
            packet_id: Some(packet_id),
            payload,
        };
        self.send(Packet::Publish(publish)).await?;
        self.wait(ack).await.map(drop)
    }

    /// Publishes `{topic_path}?$rid=N` and waits for `$iothub/twin/res/{status}/?$rid=N`;
    /// a status outside 2xx is [`ClientError::Status`].
    async fn twin_request(
        &self,
        topic_path: &str,
        body: Bytes,
    ) -> Result<TwinResponse, ClientError> {
        let (rid, response) = self.correlation.register_request()?;
        let _forget = ForgetOnDrop {
            correlation: &self.correlation,
            rid: &rid,
        };
        self.publish(format!("{topic_path}?$rid={rid}"), body)
            .await?;
        let response = response
            .await
            .map_err(|_| self.correlation.closed_error())?;
        if !(200..300).contains(&response.status) {
            return Err(ClientError::Status {
                status: response.status,
                body: String::from_utf8_lossy(&response.body).into_owned(),
            });
        }
        Ok(response)
    }

    async fn send(&self, packet: Packet) -> Result<(), ClientError> {
        self.commands
            .send(Command::Send(packet))
            .await
            .map_err(|_| self.correlation.closed_error())
    }

    async fn wait<T>(&self, answer: oneshot::Receiver<T>) -> Result<T, ClientError> {
        answer.await.map_err(|_| self.correlation.closed_error())
    }
}

/// Removes a twin request's waiter when its caller stops waiting (timeout, cancellation).
struct ForgetOnDrop<'a> {
    correlation: &'a Correlation,
    rid: &'a str,
}

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        self.correlation.forget_request(self.rid);
    }
}

async fn connect_within_deadline(
    opts: ConnectOptions,
) -> Result<(DeviceClient, DeviceEvents), ClientError> {
    let tcp = dial(&opts).await?;
    let Some(tls) = opts.tls.clone() else {
        return handshake(tcp, &opts).await;
    };
    let name = rustls::pki_types::ServerName::try_from(opts.host.clone()).map_err(|e| {
        ClientError::Tls(format!(
            "'{}' is not a valid TLS server name: {e}",
            opts.host
        ))
    })?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| {
            ClientError::Tls(format!(
                "handshake with {}:{} failed: {e}",
                opts.host, opts.port
            ))
        })?;
    let resumed = stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let (mut client, events) = handshake(stream, &opts).await?;
    client.tls_resumed = resumed;
    Ok((client, events))
}

/// Opens the TCP connection, from `local_addr` when one is given.
async fn dial(opts: &ConnectOptions) -> Result<TcpStream, ClientError> {
    let failed = |source: io::Error| ClientError::Connect {
        addr: format!("{}:{}", opts.host, opts.port),
        source,
    };
    let target = (opts.host.as_str(), opts.port);
    let stream = match opts.local_addr {
        None => TcpStream::connect(target).await.map_err(failed)?,
        Some(local) => {
            let remote = tokio::net::lookup_host(target)
                .await
                .map_err(failed)?
                .find(|addr| addr.is_ipv4() == local.is_ipv4())
                .ok_or_else(|| {
                    failed(io::Error::new(
                        io::ErrorKind::AddrNotAvailable,
                        format!("host has no address of the same family as {local}"),
                    ))
                })?;
            let socket = if local.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }
            .map_err(failed)?;
            socket.bind(SocketAddr::new(local, 0)).map_err(failed)?;
            socket.connect(remote).await.map_err(failed)?
        }
    };
    // Requests are small and latency is what the benchmarks measure.
    stream.set_nodelay(true).map_err(failed)?;
    Ok(stream)
}

/// Sends CONNECT, waits for CONNACK, then hands the stream to the connection task.
async fn handshake<S>(
    stream: S,
    opts: &ConnectOptions,
) -> Result<(DeviceClient, DeviceEvents), ClientError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (read_half, write_half) = tokio::io::split(stream);
    let mut reader = PacketReader::new(read_half, MAX_PACKET_SIZE);
    let mut writer = PacketWriter::new(write_half);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let connect = Connect {
        protocol_level: 4,
        clean_session: opts.clean_session,
        keep_alive: opts.keep_alive_secs,
        client_id: opts.device_id.clone(),
        username: Some(opts.username()),
        password: Some(Bytes::from(
            opts.password(now.saturating_add(opts.sas_lifetime_secs))?,
        )),
        will: None,
    };
    writer
        .send(&Packet::Connect(connect))
        .await
        .map_err(|source| ClientError::Connect {
            addr: format!("{}:{}", opts.host, opts.port),
            source,
        })?;
    match reader.next().await {
        Ok(Some(Packet::ConnAck(ack))) if ack.code == 0 => {}
        Ok(Some(Packet::ConnAck(ack))) => return Err(ClientError::Refused(ack.code)),
        Ok(Some(other)) => {
            return Err(ClientError::Protocol(format!(
                "expected CONNACK, got {other:?}"
            )))
        }
        Ok(None) => {
            return Err(ClientError::Closed(
                "hub closed the connection before CONNACK".into(),
            ))
        }
        Err(e) => return Err(ClientError::Closed(format!("reading CONNACK failed: {e}"))),
    }
    Ok(start(reader, writer, opts))
}

/// Spawns the connection task over an authenticated stream.
fn start<R, W>(
    reader: PacketReader<R>,
    writer: PacketWriter<W>,
    opts: &ConnectOptions,
) -> (DeviceClient, DeviceEvents)
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
    let (events, event_rx) = mpsc::unbounded_channel();
    let correlation = Arc::new(Correlation::default());
    let connection = Connection {
        device_id: opts.device_id.clone(),
        correlation: correlation.clone(),
        events,
        acks: commands.downgrade(),
        keep_alive: Duration::from_secs(opts.keep_alive_secs.into()),
    };
    tokio::spawn(connection.run(reader, writer, command_rx));
    let client = DeviceClient {
        device_id: opts.device_id.as_str().into(),
        commands,
        correlation,
        tls_resumed: false,
    };
    (client, DeviceEvents::new(event_rx))
}
