//! What a device sends: PUBLISH routed into the hub, SUBSCRIBE and UNSUBSCRIBE persisted.

use super::{Close, Session, Step};
use crate::codec::{Packet, Publish, SubAck, Subscribe, Unsubscribe};
use crate::router;
use crate::topics::{self, Feed, Inbound};
use tokio::io::{AsyncRead, AsyncWrite};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Routes one PUBLISH; QoS 1 is acknowledged only after the hub call completed.
    ///
    /// Quotas: telemetry over its rate waits here before it is stored, and nothing more is read
    /// from the device meanwhile (back-pressure, nothing dropped); a reported patch over its rate
    /// is answered 429 on the twin response topic.
    pub(super) async fn on_publish(&mut self, p: Publish) -> Step {
        if p.qos > 1 {
            return Err(Close(
                "QoS 2 is not supported; publish at QoS 0 or 1".into(),
            ));
        }
        let route = topics::parse_inbound(&p.topic, &self.device_id)
            .map_err(|e| Close(format!("PUBLISH to '{}' refused: {e}", p.topic)))?;
        let (hub, id) = (&self.hub, self.device_id.as_str());
        let reply = match route {
            Inbound::Telemetry { properties } => {
                let delay = hub.telemetry_delay(&mut self.quota);
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                router::telemetry(hub, id, properties, p.payload).await.map_err(|e| {
                    tracing::warn!(device = %id, "telemetry not stored, closing so the device retries: {e}");
                    Close(format!("telemetry not stored: {e}"))
                })?;
                None
            }
            Inbound::TwinGet { rid } => Some(router::twin_get(hub, id, &rid).await),
            Inbound::TwinReport { rid } => Some(match hub.admit_report(&mut self.quota) {
                Ok(()) => router::twin_report(hub, id, &rid, &p.payload).await,
                Err(e) => router::error_reply(id, &rid, &e, hub.now()),
            }),
            Inbound::MethodResponse { status, rid } => {
                hub.method_response(id, &rid, status, &p.payload);
                None
            }
        };
        if let Some(packet_id) = p.packet_id {
            self.writer.queue(&Packet::PubAck(packet_id));
        }
        if let Some(reply) = reply {
            // Answered even without a $iothub/twin/res/# subscription: the SDK GETs first.
            let qos = self.subs.qos(Feed::TwinResponses).unwrap_or(0);
            self.queue_publish(qos, reply.topic, reply.payload, None)?;
        }
        Ok(self.writer.flush().await?)
    }

    /// Grants the allowed filters, persists the session, then answers SUBACK.
    pub(super) async fn on_subscribe(&mut self, s: Subscribe) -> Step {
        let codes = self.subs.subscribe(&self.device_id, &s.filters);
        self.persist().await?;
        self.sync_hub();
        Ok(self
            .writer
            .send(&Packet::SubAck(SubAck {
                packet_id: s.packet_id,
                codes,
            }))
            .await?)
    }

    /// Removes filters, persists the session, then answers UNSUBACK.
    pub(super) async fn on_unsubscribe(&mut self, u: Unsubscribe) -> Step {
        self.subs.unsubscribe(&self.device_id, &u.filters);
        self.persist().await?;
        self.sync_hub();
        Ok(self.writer.send(&Packet::UnsubAck(u.packet_id)).await?)
    }

    /// Commits the subscriptions of a clean_session=0 client before they are acknowledged,
    /// unless the store holds them already (read at CONNECT or written since by this connection:
    /// only the device's newest connection stays open, so none other writes them meanwhile).
    /// (`&mut self` keeps the future `Send` without requiring the stream to be `Sync`.)
    async fn persist(&mut self) -> Step {
        if !self.persistent {
            return Ok(());
        }
        let session = self.subs.to_json(&self.device_id);
        if self.stored_session.as_ref() == Some(&session) {
            return Ok(());
        }
        self.hub
            .save_session(&self.client_id, session.clone())
            .await
            .map_err(|e| {
                tracing::warn!(device = %self.device_id, "session not saved, closing: {e}");
                Close(format!("session not saved: {e}"))
            })?;
        self.stored_session = Some(session);
        Ok(())
    }
}
