//! Bookkeeping that matches answers to requests: packet ids for PUBACK/SUBACK, `$rid` for twin
//! responses. Shared by every clone of a client and its connection task.

use super::ClientError;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::oneshot;

/// The hub's acknowledgement of one of our packets.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ack {
    /// PUBACK for a QoS 1 PUBLISH.
    Pub,
    /// SUBACK with one code per filter.
    Sub(Vec<u8>),
}

/// A `$iothub/twin/res/{status}/?$rid=…` publish.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TwinResponse {
    /// The HTTP-like status in the topic.
    pub status: u16,
    /// `$version` from the topic, present after a reported patch.
    pub version: Option<u64>,
    /// The response body.
    pub body: Bytes,
}

#[derive(Default)]
struct State {
    last_packet_id: u16,
    acks: HashMap<u16, oneshot::Sender<Ack>>,
    last_rid: u64,
    responses: HashMap<String, oneshot::Sender<TwinResponse>>,
    closed: Option<String>,
}

/// Waiters for acknowledgements and twin responses, failed all at once when the connection ends.
#[derive(Default)]
pub(crate) struct Correlation {
    state: Mutex<State>,
}

impl Correlation {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves only maps behind, which stay consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A free packet id (never 0, never one still awaiting its ack) and its ack's receiver.
    pub fn register_packet(&self) -> Result<(u16, oneshot::Receiver<Ack>), ClientError> {
        let mut state = self.lock();
        if let Some(reason) = &state.closed {
            return Err(ClientError::Closed(reason.clone()));
        }
        if state.acks.len() >= usize::from(u16::MAX) {
            return Err(ClientError::TooManyInFlight);
        }
        let mut id = state.last_packet_id;
        loop {
            id = id.wrapping_add(1).max(1);
            if !state.acks.contains_key(&id) {
                break;
            }
        }
        state.last_packet_id = id;
        let (tx, rx) = oneshot::channel();
        state.acks.insert(id, tx);
        Ok((id, rx))
    }

    /// A fresh `$rid` and the receiver of its twin response.
    pub fn register_request(
        &self,
    ) -> Result<(String, oneshot::Receiver<TwinResponse>), ClientError> {
        let mut state = self.lock();
        if let Some(reason) = &state.closed {
            return Err(ClientError::Closed(reason.clone()));
        }
        state.last_rid += 1;
        let rid = state.last_rid.to_string();
        let (tx, rx) = oneshot::channel();
        state.responses.insert(rid.clone(), tx);
        Ok((rid, rx))
    }

    /// Drops the waiter for `rid` (its caller gave up); a late response is then ignored.
    pub fn forget_request(&self, rid: &str) {
        self.lock().responses.remove(rid);
    }

    /// Hands `ack` to whoever waits for `packet_id`; false if nobody registered it.
    pub fn complete_ack(&self, packet_id: u16, ack: Ack) -> bool {
        let waiter = self.lock().acks.remove(&packet_id);
        match waiter {
            Some(tx) => {
                // A caller that stopped waiting dropped its receiver; the id is free again anyway.
                let _ = tx.send(ack);
                true
            }
            None => false,
        }
    }

    /// Hands `response` to whoever waits for `rid`; false if nobody does.
    pub fn complete_response(&self, rid: &str, response: TwinResponse) -> bool {
        let waiter = self.lock().responses.remove(rid);
        waiter.map(|tx| tx.send(response).is_ok()).unwrap_or(false)
    }

    /// Marks the connection closed and fails every waiter; later registrations fail too.
    pub fn close(&self, reason: &str) {
        let mut state = self.lock();
        if state.closed.is_none() {
            state.closed = Some(reason.to_string());
        }
        // Dropping the senders wakes every receiver with an error.
        state.acks.clear();
        state.responses.clear();
    }

    /// The error a waiter reports when its answer will never come.
    pub fn closed_error(&self) -> ClientError {
        let reason = self.lock().closed.clone();
        ClientError::Closed(reason.unwrap_or_else(|| "connection task ended".into()))
    }

    /// How many packets and twin requests await an answer.
    #[cfg(test)]
    pub fn in_flight(&self) -> (usize, usize) {
        let state = self.lock();
        (state.acks.len(), state.responses.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16) -> TwinResponse {
        TwinResponse {
            status,
            version: Some(7),
            body: Bytes::new(),
        }
    }

    #[test]
    fn packet_ids_skip_zero_and_ids_still_in_use() {
        let c = Correlation::default();
        c.lock().last_packet_id = u16::MAX - 1;
        let (a, _ra) = c.register_packet().unwrap();
        let (b, _rb) = c.register_packet().unwrap();
        assert_eq!((a, b), (u16::MAX, 1));
        // Wrap around again: 1 is still awaited, so the next free id is 2.
        c.lock().last_packet_id = 0;
        let (next, _rn) = c.register_packet().unwrap();
        assert_eq!(next, 2);
    }

    #[test]
    fn an_ack_reaches_only_its_own_waiter() {
        let c = Correlation::default();
        let (a, mut ra) = c.register_packet().unwrap();
        let (b, mut rb) = c.register_packet().unwrap();
        assert!(c.complete_ack(b, Ack::Sub(vec![1, 0x80])));
        assert_eq!(rb.try_recv().unwrap(), Ack::Sub(vec![1, 0x80]));
        assert!(ra.try_recv().is_err());
        assert!(!c.complete_ack(b, Ack::Pub), "an id is completed once");
        assert!(c.complete_ack(a, Ack::Pub));
        assert_eq!(ra.try_recv().unwrap(), Ack::Pub);
        assert_eq!(c.in_flight(), (0, 0));
    }

    #[test]
    fn twin_responses_are_matched_by_rid() {
        let c = Correlation::default();
        let (r1, mut rx1) = c.register_request().unwrap();
        let (r2, mut rx2) = c.register_request().unwrap();
        assert_ne!(r1, r2);
        assert!(!c.complete_response("no-such-rid", response(200)));
        assert!(c.complete_response(&r2, response(204)));
        assert_eq!(rx2.try_recv().unwrap().status, 204);
        assert!(rx1.try_recv().is_err());
        c.forget_request(&r1);
        assert!(!c.complete_response(&r1, response(200)));
        assert_eq!(c.in_flight(), (0, 0));
    }

    #[test]
    fn closing_fails_every_waiter_and_later_requests_with_the_reason() {
        let c = Correlation::default();
        let (_, mut ack) = c.register_packet().unwrap();
        let (_, mut res) = c.register_request().unwrap();
        c.close("hub went away");
        assert!(ack.try_recv().is_err());
        assert!(res.try_recv().is_err());
        assert!(matches!(c.register_packet(), Err(ClientError::Closed(r)) if r == "hub went away"));
        assert!(matches!(c.register_request(), Err(ClientError::Closed(_))));
        c.close("second reason");
        assert!(matches!(c.closed_error(), ClientError::Closed(r) if r == "hub went away"));
    }
}
