//! MQTT over WebSocket (`GET /$iothub/websocket`, subprotocol `mqtt`): the upgrade, and a bridge
//! that turns the WebSocket's binary messages into the byte stream the device gateway serves.
//! Devices authenticate in MQTT CONNECT, so the upgrade itself needs no token.

use crate::{ApiError, ApiState};
use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::Extensions;
use axum::response::{IntoResponse, Response};
use fleethub_core::{ErrorCode, HubError};
use fleethub_mqtt::ConnectionInfo;
use futures_util::{Sink, Stream};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The only WebSocket subprotocol served: MQTT 3.1.1, as the device SDKs ask for it.
const MQTT_SUBPROTOCOL: &str = "mqtt";

/// How many largest-possible MQTT packets one WebSocket message may carry before it is refused.
const PACKETS_PER_MESSAGE: usize = 4;

/// `GET /$iothub/websocket`: upgrades and hands the connection to the gateway.
pub async fn upgrade(
    State(state): State<ApiState>,
    extensions: Extensions,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            let message = format!(
                "/$iothub/websocket needs a WebSocket upgrade with subprotocol 'mqtt': {}",
                rejection.body_text()
            );
            return ApiError(HubError::invalid(message)).into_response();
        }
    };
    if !upgrade.requested_protocols().any(|p| p == MQTT_SUBPROTOCOL) {
        let offered: Vec<&str> = upgrade
            .requested_protocols()
            .filter_map(|p| p.to_str().ok())
            .collect();
        let message = format!(
            "/$iothub/websocket carries MQTT only: offer the WebSocket subprotocol 'mqtt' \
             (offered: {})",
            if offered.is_empty() {
                "none".to_string()
            } else {
                offered.join(", ")
            }
        );
        return ApiError(HubError::invalid(message)).into_response();
    }
    // Present when the server adds connect info, as the binary's HTTPS listener does.
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    let limit = state.gateway.config().max_packet_size * PACKETS_PER_MESSAGE;
    upgrade
        .protocols([MQTT_SUBPROTOCOL])
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| async move {
            let info = ConnectionInfo {
                peer,
                client_cert_chain: vec![],
            };
            state
                .gateway
                .serve_connection(WsByteStream::new(socket), info)
                .await;
        })
}

/// `GET /$servicebus/websocket` (AMQP over WebSocket, subprotocol `AMQPWSB10`): refused with 501
/// until the hub speaks AMQP, so a client fails at once with a reason instead of being upgraded
/// and dropped.
pub async fn amqp_not_supported() -> Response {
    ApiError(HubError::new(
        ErrorCode::NotImplemented,
        "AMQP (and AMQP over WebSocket, /$servicebus/websocket) is not supported by this hub; \
         connect devices with MQTT (port 8883) or MQTT over WebSocket (/$iothub/websocket, \
         subprotocol 'mqtt'), and use the REST API for service calls",
    ))
    .into_response()
}

/// A WebSocket seen as a byte stream: each write is sent as one binary message; reads return the
/// bytes of incoming binary messages in order, however the peer split them into messages.
/// A close frame (or the end of the socket) reads as end of stream.
pub struct WsByteStream<S> {
    socket: S,
    /// What is left of the last message received.
    pending: Bytes,
    closed: bool,
}

impl<S> WsByteStream<S> {
    /// Wraps a socket (axum's `WebSocket`, or anything that is a `Stream` and `Sink` of messages).
    pub fn new(socket: S) -> Self {
        WsByteStream {
            socket,
            pending: Bytes::new(),
            closed: false,
        }
    }
}

impl<S, E> AsyncRead for WsByteStream<S>
where
    S: Stream<Item = Result<Message, E>> + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.pending.is_empty() {
            if this.closed {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.socket).poll_next(cx)) {
                Some(Ok(Message::Binary(bytes))) => this.pending = bytes,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "MQTT over WebSocket must use binary messages, not text",
                    )))
                }
                Some(Ok(Message::Close(_))) | None => this.closed = true,
                // The WebSocket layer answers pings itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
            }
        }
        let n = buf.remaining().min(this.pending.len());
        buf.put_slice(&this.pending.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl<S, E> AsyncWrite for WsByteStream<S>
where
    S: Sink<Message, Error = E> + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let socket = &mut self.get_mut().socket;
        ready!(Pin::new(&mut *socket).poll_ready(cx)).map_err(io::Error::other)?;
        let message = Message::Binary(Bytes::copy_from_slice(buf));
        Pin::new(socket)
            .start_send(message)
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket)
            .poll_flush(cx)
            .map_err(io::Error::other)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket)
            .poll_close(cx)
            .map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A socket whose incoming messages are scripted and whose outgoing ones are recorded.
    #[derive(Default)]
    struct ScriptedSocket {
        incoming: VecDeque<Result<Message, io::Error>>,
        sent: Vec<Message>,
        flushed: usize,
        closed: bool,
    }

    impl Stream for ScriptedSocket {
        type Item = Result<Message, io::Error>;
        fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Ready(self.get_mut().incoming.pop_front())
        }
    }

    impl Sink<Message> for ScriptedSocket {
        type Error = io::Error;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(self: Pin<&mut Self>, item: Message) -> io::Result<()> {
            self.get_mut().sent.push(item);
            Ok(())
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().flushed += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().closed = true;
            Poll::Ready(Ok(()))
        }
    }

    fn binary(bytes: &'static [u8]) -> Result<Message, io::Error> {
        Ok(Message::Binary(Bytes::from_static(bytes)))
    }

    #[tokio::test]
    async fn reads_join_messages_and_split_them_across_small_buffers() {
        let mut socket = ScriptedSocket::default();
        socket.incoming.extend([
            binary(b"\x10\x0c"),
            Ok(Message::Ping(Bytes::new())),
            binary(b"abcde"),
        ]);
        let mut stream = WsByteStream::new(socket);

        let mut small = [0u8; 3];
        let n = stream.read(&mut small).await.unwrap();
        assert_eq!(
            &small[..n],
            b"\x10\x0c",
            "a read never spans two messages but returns what one holds"
        );
        let n = stream.read(&mut small).await.unwrap();
        assert_eq!(&small[..n], b"abc");
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        assert_eq!(
            rest, b"de",
            "the rest of a message survives a short read, then the socket ends"
        );
    }

    #[tokio::test]
    async fn close_frame_reads_as_end_of_stream_and_text_is_refused() {
        let mut socket = ScriptedSocket::default();
        socket.incoming.extend([
            binary(b"x"),
            Ok(Message::Close(None)),
            binary(b"after close"),
        ]);
        let mut stream = WsByteStream::new(socket);
        let mut all = Vec::new();
        stream.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"x");

        let mut socket = ScriptedSocket::default();
        socket.incoming.push_back(Ok(Message::Text("hello".into())));
        let err = WsByteStream::new(socket)
            .read(&mut [0u8; 8])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn each_write_is_one_binary_message_and_flush_and_shutdown_pass_through() {
        let mut stream = WsByteStream::new(ScriptedSocket::default());
        stream.write_all(b"\x20\x02\x00\x00").await.unwrap();
        stream.write_all(b"\xd0\x00").await.unwrap();
        stream.flush().await.unwrap();
        stream.shutdown().await.unwrap();

        let socket = stream.socket;
        let sent: Vec<Bytes> = socket.sent.into_iter().map(Message::into_data).collect();
        assert_eq!(
            sent,
            [
                Bytes::from_static(b"\x20\x02\x00\x00"),
                Bytes::from_static(b"\xd0\x00")
            ]
        );
        assert!(socket.flushed >= 1);
        assert!(socket.closed);
    }
}
