//! What the hub sends a device: desired patches, method requests, cloud-to-device messages, at
//! the QoS its subscription granted, with retransmission of unacknowledged QoS 1 publishes.

use super::{Close, Session, Step};
use crate::codec::{Packet, Publish};
use crate::topics::{self, Feed};
use bytes::Bytes;
use fleethub_hub::DeviceCommand;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Delivers one hub command if the device subscribed to its feed.
    pub(super) async fn on_command(&mut self, cmd: DeviceCommand) -> Step {
        match cmd {
            DeviceCommand::DesiredPatch { version, body } => {
                self.deliver(Feed::Desired, topics::desired_patch(version), body)
                    .await
            }
            DeviceCommand::MethodRequest { name, rid, payload } => {
                self.deliver(Feed::Methods, topics::method_request(&name, &rid), payload)
                    .await
            }
            DeviceCommand::C2d {
                message_id,
                properties,
                body,
            } => {
                let topic = topics::c2d(&self.device_id, &properties);
                self.deliver_c2d(message_id, topic, body).await
            }
            DeviceCommand::Disconnect { reason } => {
                Err(Close(format!("hub asked to disconnect: {reason}")))
            }
        }
    }

    async fn deliver(&mut self, feed: Feed, topic: String, payload: Bytes) -> Step {
        let Some(qos) = self.subs.qos(feed) else {
            // The subscription went away after the hub decided to send; the twin GET or the
            // method timeout covers it.
            tracing::debug!(device = %self.device_id, ?feed, "dropped: not subscribed");
            return Ok(());
        };
        self.queue_publish(qos, topic, payload, None)?;
        Ok(self.writer.flush().await?)
    }

    /// Sends a cloud-to-device message once; it completes on PUBACK (or on write at QoS 0).
    async fn deliver_c2d(&mut self, message_id: String, topic: String, body: Bytes) -> Step {
        let Some(qos) = self.subs.qos(Feed::C2d) else {
            return Ok(()); // stays queued in the hub until the device subscribes
        };
        if self.inflight.has_c2d(&message_id) {
            return Ok(()); // the hub's flush repeats pending messages already on their way
        }
        self.queue_publish(qos, topic, body, Some(message_id.clone()))?;
        self.writer.flush().await?;
        if qos == 0 {
            self.c2d_done(message_id).await;
        }
        Ok(())
    }

    /// Queues a publish to the device; QoS 1 gets a packet id and is tracked until PUBACK.
    pub(super) fn queue_publish(
        &mut self,
        qos: u8,
        topic: String,
        payload: Bytes,
        c2d: Option<String>,
    ) -> Step {
        let publish = Publish {
            dup: false,
            qos: 0,
            retain: false,
            topic,
            packet_id: None,
            payload,
        };
        if qos == 0 {
            self.writer.queue(&Packet::Publish(publish));
            return Ok(());
        }
        let publish = self
            .inflight
            .start(publish, c2d, Instant::now())
            .ok_or_else(|| {
                Close("too many unacknowledged publishes; the device is not reading".into())
            })?;
        self.writer.queue(&Packet::Publish(publish));
        Ok(())
    }

    /// A PUBACK from the device: completes the cloud-to-device message it carried, if any.
    pub(super) async fn on_puback(&mut self, packet_id: u16) -> Step {
        if let Some(message_id) = self.inflight.ack(packet_id) {
            self.c2d_done(message_id).await;
        }
        Ok(())
    }

    async fn c2d_done(&mut self, message_id: String) {
        match self.hub.c2d_delivered(&self.device_id, &message_id).await {
            Ok(()) => self.inflight.completed_c2d(message_id),
            // Left pending in the store: delivered again later, never lost.
            Err(e) => {
                tracing::warn!(device = %self.device_id, message_id, "c2d completion not saved: {e}")
            }
        }
    }

    /// Sends again, with DUP=1, every QoS 1 publish unacknowledged for too long.
    pub(super) async fn retransmit(&mut self) -> Step {
        for publish in self.inflight.due(Instant::now()) {
            self.writer.queue(&Packet::Publish(publish));
        }
        Ok(self.writer.flush().await?)
    }
}
