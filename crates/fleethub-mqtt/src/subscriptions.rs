//! What one client id is subscribed to, and its persisted form.
//!
//! The device SDKs connect with clean_session=0 and never subscribe again after a reconnect, so
//! the subscriptions of a client id are stored by the hub as
//! `{"subscriptions":[["$iothub/methods/POST/#",1],…]}` and restored at CONNECT.

use crate::topics::Feed;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// SUBACK return code for a refused filter.
pub const SUBACK_FAILURE: u8 = 0x80;

/// The feeds a session is subscribed to, with the QoS granted for each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscriptions {
    granted: BTreeMap<Feed, u8>,
}

impl Subscriptions {
    /// Applies a SUBSCRIBE; returns the SUBACK codes (granted QoS ≤ 1, or 0x80 per refused filter).
    pub fn subscribe(&mut self, device_id: &str, filters: &[(String, u8)]) -> Vec<u8> {
        filters
            .iter()
            .map(
                |(filter, requested)| match Feed::from_filter(filter, device_id) {
                    Some(feed) => {
                        let qos = (*requested).min(1);
                        self.granted.insert(feed, qos);
                        qos
                    }
                    None => SUBACK_FAILURE,
                },
            )
            .collect()
    }

    /// Applies an UNSUBSCRIBE; filters that were never subscribed are ignored.
    pub fn unsubscribe(&mut self, device_id: &str, filters: &[String]) {
        for filter in filters {
            if let Some(feed) = Feed::from_filter(filter, device_id) {
                self.granted.remove(&feed);
            }
        }
    }

    /// The QoS granted for `feed`, or None when not subscribed.
    pub fn qos(&self, feed: Feed) -> Option<u8> {
        self.granted.get(&feed).copied()
    }

    /// `(methods, desired, c2d)` as [`fleethub_hub::ConnectionHandle::set_subscriptions`] takes them.
    pub fn hub_flags(&self) -> (bool, bool, bool) {
        let has = |f| self.granted.contains_key(&f);
        (has(Feed::Methods), has(Feed::Desired), has(Feed::C2d))
    }

    /// The persisted form: `{"subscriptions":[[filter, qos], …]}`.
    pub fn to_json(&self, device_id: &str) -> Value {
        let list: Vec<Value> = self
            .granted
            .iter()
            .map(|(f, q)| json!([f.filter(device_id), q]))
            .collect();
        json!({ "subscriptions": list })
    }

    /// Restores a persisted session, keeping only entries still valid for `device_id`.
    pub fn from_json(value: &Value, device_id: &str) -> Subscriptions {
        let mut subs = Subscriptions::default();
        let entries = value.get("subscriptions").and_then(Value::as_array);
        for entry in entries.into_iter().flatten() {
            let filter = entry.get(0).and_then(Value::as_str);
            let qos = entry.get(1).and_then(Value::as_u64);
            if let (Some(filter), Some(qos)) = (filter, qos) {
                if let Some(feed) = Feed::from_filter(filter, device_id) {
                    subs.granted.insert(feed, qos.min(1) as u8);
                }
            }
        }
        subs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(list: &[(&str, u8)]) -> Vec<(String, u8)> {
        list.iter().map(|(f, q)| (f.to_string(), *q)).collect()
    }

    #[test]
    fn sdk_subscriptions_are_granted_at_most_qos_1() {
        let mut subs = Subscriptions::default();
        let codes = subs.subscribe(
            "dev1",
            &filters(&[
                ("devices/dev1/messages/devicebound/#", 1),
                ("$iothub/methods/POST/#", 2),
                ("$iothub/twin/PATCH/properties/desired/#", 0),
                ("$iothub/twin/res/#", 1),
            ]),
        );
        assert_eq!(codes, vec![1, 1, 0, 1]);
        assert_eq!(subs.hub_flags(), (true, true, true));
        assert_eq!(subs.qos(Feed::Desired), Some(0));
    }

    #[test]
    fn other_filters_are_refused_with_0x80() {
        let mut subs = Subscriptions::default();
        let codes = subs.subscribe(
            "dev1",
            &filters(&[
                ("#", 1),
                ("devices/dev2/messages/devicebound/#", 1),
                ("$iothub/twin/res/#", 1),
            ]),
        );
        assert_eq!(codes, vec![SUBACK_FAILURE, SUBACK_FAILURE, 1]);
        assert_eq!(subs.hub_flags(), (false, false, false));
    }

    #[test]
    fn unsubscribe_removes_only_named_feeds() {
        let mut subs = Subscriptions::default();
        subs.subscribe(
            "d",
            &filters(&[("$iothub/methods/POST/#", 1), ("$iothub/twin/res/#", 1)]),
        );
        subs.unsubscribe(
            "d",
            &["$iothub/methods/POST/#".to_string(), "nonsense".to_string()],
        );
        assert_eq!(subs.qos(Feed::Methods), None);
        assert_eq!(subs.qos(Feed::TwinResponses), Some(1));
    }

    #[test]
    fn session_json_round_trips() {
        let mut subs = Subscriptions::default();
        subs.subscribe(
            "dev1",
            &filters(&[
                ("devices/dev1/messages/devicebound/#", 1),
                ("$iothub/methods/POST/#", 0),
            ]),
        );
        let stored = subs.to_json("dev1");
        assert_eq!(
            stored,
            json!({"subscriptions": [["devices/dev1/messages/devicebound/#", 1], ["$iothub/methods/POST/#", 0]]})
        );
        assert_eq!(Subscriptions::from_json(&stored, "dev1"), subs);
    }

    #[test]
    fn corrupt_or_foreign_session_entries_are_dropped() {
        let stored = json!({"subscriptions": [
            ["devices/other/messages/devicebound/#", 1], ["$iothub/twin/res/#", 7], "junk", [1, 2]
        ]});
        let subs = Subscriptions::from_json(&stored, "dev1");
        assert_eq!(subs.qos(Feed::C2d), None);
        assert_eq!(subs.qos(Feed::TwinResponses), Some(1));
        assert_eq!(
            Subscriptions::from_json(&json!("garbage"), "dev1"),
            Subscriptions::default()
        );
    }
}
