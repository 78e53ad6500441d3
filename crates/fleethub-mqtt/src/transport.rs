//! Packets over a byte stream: a cancel-safe reader and a single buffered writer per connection.

use crate::codec::{self, CodecError, Packet};
use bytes::BytesMut;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How long one write may stall (a device that stops reading) before the connection is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why no packet could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The stream failed.
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    /// The bytes are not a valid packet, or it is too large.
    #[error("malformed packet: {0}")]
    Codec(#[from] CodecError),
}

/// Reads whole packets, refusing any larger than the limit before buffering it.
pub struct PacketReader<R> {
    inner: R,
    buf: BytesMut,
    max_packet_size: usize,
}

impl<R: AsyncRead + Unpin> PacketReader<R> {
    /// A reader over `inner` that accepts packets up to `max_packet_size` bytes.
    pub fn new(inner: R, max_packet_size: usize) -> Self {
        PacketReader {
            inner,
            buf: BytesMut::with_capacity(4096),
            max_packet_size,
        }
    }

    /// The next packet, or None at end of stream. Cancel-safe: no bytes are lost if dropped.
    pub async fn next(&mut self) -> Result<Option<Packet>, ReadError> {
        loop {
            if let Some(packet) = codec::decode(&mut self.buf, self.max_packet_size)? {
                return Ok(Some(packet));
            }
            self.buf.reserve(4096);
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }
}

/// Encodes packets into one buffer and writes them out together.
pub struct PacketWriter<W> {
    inner: W,
    out: BytesMut,
}

impl<W: AsyncWrite + Unpin> PacketWriter<W> {
    /// A writer over `inner`.
    pub fn new(inner: W) -> Self {
        PacketWriter {
            inner,
            out: BytesMut::with_capacity(4096),
        }
    }

    /// Adds a packet to the next [`flush`](Self::flush).
    pub fn queue(&mut self, packet: &Packet) {
        codec::encode(packet, &mut self.out);
    }

    /// Writes every queued packet, failing if the peer does not take them in time.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let write = async {
            self.inner.write_all(&self.out).await?;
            self.inner.flush().await
        };
        let result = tokio::time::timeout(WRITE_TIMEOUT, write).await;
        self.out.clear();
        result.map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "peer stopped reading"))?
    }

    /// Queues and writes one packet.
    pub async fn send(&mut self, packet: &Packet) -> io::Result<()> {
        self.queue(packet);
        self.flush().await
    }

    /// Shuts the stream down (TLS close_notify, TCP FIN), ignoring errors.
    pub async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.shutdown()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Publish;
    use bytes::Bytes;

    #[tokio::test]
    async fn reader_returns_packets_across_split_writes_then_eof() {
        let (client, server) = tokio::io::duplex(64);
        let mut reader = PacketReader::new(server, 1024);
        let mut writer = PacketWriter::new(client);
        let publish = Packet::Publish(Publish {
            dup: false,
            qos: 1,
            retain: false,
            topic: "devices/d/messages/events/".into(),
            packet_id: Some(1),
            payload: Bytes::from(vec![1u8; 300]),
        });
        writer.queue(&Packet::PingReq);
        writer.queue(&publish);
        let send = tokio::spawn(async move {
            writer.flush().await.unwrap();
            writer.shutdown().await;
        });
        assert_eq!(reader.next().await.unwrap(), Some(Packet::PingReq));
        assert_eq!(reader.next().await.unwrap(), Some(publish));
        assert_eq!(reader.next().await.unwrap(), None);
        send.await.unwrap();
    }

    #[tokio::test]
    async fn reader_refuses_an_oversized_packet_from_its_header() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut reader = PacketReader::new(server, 100);
        client.write_all(&[0x30, 0xE8, 0x07]).await.unwrap(); // announces 1000 bytes
        let err = reader.next().await.unwrap_err();
        assert!(
            matches!(
                err,
                ReadError::Codec(CodecError::TooLarge {
                    size: 1003,
                    max: 100
                })
            ),
            "{err:?}"
        );
    }
}
