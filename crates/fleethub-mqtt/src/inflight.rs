//! QoS 1 publishes sent to a device and not yet acknowledged: packet ids, retransmission with
//! DUP after a timeout, and which cloud-to-device message each one carries.

use crate::codec::Publish;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use tokio::time::Instant;

/// How long a QoS 1 publish waits for its PUBACK before it is sent again with DUP=1.
pub const RETRANSMIT_AFTER: Duration = Duration::from_secs(10);

/// Most unacknowledged publishes one connection may have; a device beyond it is not reading.
pub const MAX_INFLIGHT: usize = 1024;

/// How many recently completed cloud-to-device message ids are remembered to drop repeats.
const RECENT_C2D: usize = 128;

/// One unacknowledged publish.
#[derive(Debug, Clone)]
struct Outgoing {
    publish: Publish,
    sent_at: Instant,
    c2d_message_id: Option<String>,
}

/// The unacknowledged QoS 1 publishes of one connection.
#[derive(Debug, Default)]
pub struct Inflight {
    pending: BTreeMap<u16, Outgoing>,
    last_id: u16,
    recent_c2d: VecDeque<String>,
}

impl Inflight {
    /// Assigns a free packet id to `publish` (QoS 1) and records it as sent now.
    /// None when [`MAX_INFLIGHT`] publishes are already waiting.
    pub fn start(
        &mut self,
        mut publish: Publish,
        c2d_message_id: Option<String>,
        now: Instant,
    ) -> Option<Publish> {
        if self.pending.len() >= MAX_INFLIGHT {
            return None;
        }
        let id = self.free_id();
        publish.packet_id = Some(id);
        publish.qos = 1;
        let entry = Outgoing {
            publish: publish.clone(),
            sent_at: now,
            c2d_message_id,
        };
        self.pending.insert(id, entry);
        Some(publish)
    }

    fn free_id(&mut self) -> u16 {
        loop {
            self.last_id = self.last_id.checked_add(1).unwrap_or(1);
            if !self.pending.contains_key(&self.last_id) {
                return self.last_id;
            }
        }
    }

    /// Handles a PUBACK; returns the cloud-to-device message id it completes, if any.
    pub fn ack(&mut self, packet_id: u16) -> Option<String> {
        self.pending.remove(&packet_id)?.c2d_message_id
    }

    /// When the oldest publish is due for retransmission, if any is waiting.
    pub fn next_due(&self) -> Option<Instant> {
        self.pending
            .values()
            .map(|o| o.sent_at + RETRANSMIT_AFTER)
            .min()
    }

    /// The publishes due at `now`, marked DUP and stamped as sent again.
    pub fn due(&mut self, now: Instant) -> Vec<Publish> {
        let mut out = Vec::new();
        for o in self
            .pending
            .values_mut()
            .filter(|o| o.sent_at + RETRANSMIT_AFTER <= now)
        {
            o.publish.dup = true;
            o.sent_at = now;
            out.push(o.publish.clone());
        }
        out
    }

    /// Whether this cloud-to-device message is in flight or was just completed here.
    pub fn has_c2d(&self, message_id: &str) -> bool {
        self.recent_c2d.iter().any(|m| m == message_id)
            || self
                .pending
                .values()
                .any(|o| o.c2d_message_id.as_deref() == Some(message_id))
    }

    /// Remembers a completed cloud-to-device message, so a stale repeat from the hub is dropped.
    pub fn completed_c2d(&mut self, message_id: String) {
        if self.recent_c2d.len() == RECENT_C2D {
            self.recent_c2d.pop_front();
        }
        self.recent_c2d.push_back(message_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn publish(topic: &str) -> Publish {
        Publish {
            dup: false,
            qos: 1,
            retain: false,
            topic: topic.into(),
            packet_id: None,
            payload: Bytes::new(),
        }
    }

    #[test]
    fn ids_are_unique_and_acks_release_them() {
        let now = Instant::now();
        let mut f = Inflight::default();
        let a = f.start(publish("a"), Some("m1".into()), now).unwrap();
        let b = f.start(publish("b"), None, now).unwrap();
        assert_ne!(a.packet_id, b.packet_id);
        assert!(f.has_c2d("m1"));
        assert_eq!(f.ack(a.packet_id.unwrap()), Some("m1".into()));
        assert_eq!(
            f.ack(a.packet_id.unwrap()),
            None,
            "a second PUBACK completes nothing"
        );
        assert!(!f.has_c2d("m1"));
        f.completed_c2d("m1".into());
        assert!(f.has_c2d("m1"));
    }

    #[test]
    fn ids_wrap_around_and_skip_ids_in_use() {
        let now = Instant::now();
        let mut f = Inflight {
            last_id: u16::MAX - 1,
            ..Default::default()
        };
        let first = f.start(publish("a"), None, now).unwrap().packet_id.unwrap();
        assert_eq!(first, u16::MAX);
        assert_eq!(f.start(publish("b"), None, now).unwrap().packet_id, Some(1));
        f.last_id = u16::MAX - 1;
        assert_eq!(
            f.start(publish("c"), None, now).unwrap().packet_id,
            Some(2),
            "skips MAX and 1"
        );
    }

    #[test]
    fn unacked_publishes_are_resent_with_dup_after_the_timeout() {
        let t0 = Instant::now();
        let mut f = Inflight::default();
        f.start(publish("a"), None, t0).unwrap();
        assert_eq!(f.next_due(), Some(t0 + RETRANSMIT_AFTER));
        assert!(f
            .due(t0 + RETRANSMIT_AFTER - Duration::from_millis(1))
            .is_empty());
        let resent = f.due(t0 + RETRANSMIT_AFTER);
        assert_eq!(resent.len(), 1);
        assert!(resent[0].dup);
        assert_eq!(f.next_due(), Some(t0 + 2 * RETRANSMIT_AFTER));
    }

    #[test]
    fn a_device_that_never_acks_hits_the_limit() {
        let now = Instant::now();
        let mut f = Inflight::default();
        for _ in 0..MAX_INFLIGHT {
            assert!(f.start(publish("a"), None, now).is_some());
        }
        assert!(f.start(publish("a"), None, now).is_none());
    }
}
