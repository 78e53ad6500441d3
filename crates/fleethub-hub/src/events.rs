//! The change feed: every committed change writes one compact event (what changed, which device,
//! the new version) in the same transaction as the change, so a reader that pages by cursor sees
//! every change in commit order. Events older than the retention are pruned in bounded batches.
//!
//! What a change records is a typed [`Change`] (`fleethub_core::events`, where its kinds and
//! bodies are listed); the feed hands back each event's kind and body as stored, and
//! `fleethub-api` writes the page.

use crate::Hub;
use fleethub_core::events::Change;
use fleethub_core::{ErrorCode, HubError, HubResult};
use fleethub_store::{EventRow, Reads, WriteTx};
use serde_json::Value;

/// Most events one page returns.
pub const MAX_EVENTS_PAGE: usize = 1000;

/// One change, as the feed shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    /// Position in the feed; strictly increasing in commit order, never reused.
    pub seq: i64,
    /// When it was committed (IoT Hub's timestamp format).
    pub time: String,
    /// The device it concerns, if any.
    pub device_id: Option<String>,
    /// What happened, e.g. `twin.reported` (a [`Change`]'s kind, as stored).
    pub kind: String,
    /// The details (ids, versions, status; a [`Change`]'s body, as stored); never a whole twin.
    pub body: Value,
}

/// A page of the feed and the cursor to read on from.
#[derive(Debug, Clone, PartialEq)]
pub struct EventsPage {
    pub events: Vec<ChangeEvent>,
    /// Pass as `after` to read the events that follow (the same cursor when the page is empty).
    pub next: String,
}

impl ChangeEvent {
    fn from_row(row: EventRow) -> ChangeEvent {
        let time = chrono::DateTime::from_timestamp_millis(row.time_ms).unwrap_or_default();
        ChangeEvent {
            seq: row.seq,
            time: fleethub_core::time::format_timestamp(time),
            device_id: row.device_id,
            kind: row.kind,
            body: row.body,
        }
    }
}

/// Records `change` (about `device_id`, if it concerns one) in `tx`: it commits with the change.
pub(crate) fn append_change(
    tx: &mut WriteTx<'_>,
    device_id: Option<&str>,
    change: &Change,
    time_ms: i64,
) -> HubResult<()> {
    let (kind, body) = change.to_stored_parts();
    tx.append_event_text(device_id, &kind, &body, time_ms)?;
    Ok(())
}

/// Parses a feed cursor (empty or absent: from the start).
pub fn parse_cursor(cursor: Option<&str>) -> HubResult<i64> {
    match cursor.map(str::trim) {
        None | Some("") => Ok(0),
        Some(text) => text.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            HubError::new(
                ErrorCode::ArgumentInvalid,
                format!(
                    "event cursor '{text}' is not valid: pass the `next` value of an earlier page, \
                     or omit `after` to read from the oldest event kept"
                ),
            )
        }),
    }
}

impl Hub {
    /// Up to `limit` (1..=1000) events after the cursor `after`, oldest first.
    pub async fn events_after(&self, after: i64, limit: usize) -> HubResult<EventsPage> {
        if !(1..=MAX_EVENTS_PAGE).contains(&limit) {
            return Err(HubError::invalid(format!(
                "limit {limit} is out of range: pass 1 to {MAX_EVENTS_PAGE} events per page"
            )));
        }
        let rows = self
            .store()
            .read(move |r| r.events_after(after, limit))
            .await?;
        let next = rows.last().map_or(after, |r| r.seq).to_string();
        let events = rows.into_iter().map(ChangeEvent::from_row).collect();
        Ok(EventsPage { events, next })
    }

    /// The newest event's position (0 for an empty feed): `events_after` from it reads only
    /// what is committed next.
    pub async fn last_event_seq(&self) -> HubResult<i64> {
        Ok(self.store().read(|r| r.last_event_seq()).await?)
    }

    /// The newest `limit` (1..=1000) events, oldest first, and the cursor to read on from.
    pub async fn latest_events(&self, limit: usize) -> HubResult<EventsPage> {
        let last = self.last_event_seq().await?;
        let after = last.saturating_sub(limit as i64).max(0);
        let mut page = self.events_after(after, limit).await?;
        if page.events.is_empty() {
            page.next = last.to_string();
        }
        Ok(page)
    }

    /// Removes events older than the retention, a batch per write; returns how many went.
    pub async fn prune_events(&self) -> HubResult<u64> {
        let retention = self.inner.config.event_retention.as_millis() as i64;
        let cutoff = self.now_ms().saturating_sub(retention);
        self.prune_in_batches(move |tx, batch| tx.prune_events(cutoff, batch))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HubConfig;
    use fleethub_core::ManualClock;
    use fleethub_store::{Store, StoreConfig};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn upkeep_prunes_only_events_past_their_retention() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path().join("hub.db"))).unwrap();
        let clock = ManualClock::new(chrono::Utc::now());
        let config = HubConfig {
            event_retention: Duration::from_secs(7 * 24 * 3600),
            ..HubConfig::default()
        };
        let hub = Hub::open(store, Arc::new(clock.clone()), config)
            .await
            .unwrap();
        let device = |id: &str| serde_json::json!({ "deviceId": id });
        hub.put_device("old", device("old"), None).await.unwrap();
        clock.advance(chrono::Duration::days(6));
        hub.put_device("new", device("new"), None).await.unwrap();
        clock.advance(chrono::Duration::days(1) + chrono::Duration::seconds(1));
        hub.upkeep().await.unwrap();
        let page = hub.events_after(0, 10).await.unwrap();
        let ids: Vec<_> = page.events.iter().map(|e| e.device_id.as_deref()).collect();
        assert_eq!(ids, vec![Some("new")]);
    }

    #[tokio::test]
    async fn latest_events_are_the_newest_oldest_first_with_a_cursor_to_read_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path().join("hub.db"))).unwrap();
        let hub = Hub::open(
            store,
            Arc::new(fleethub_core::SystemClock),
            HubConfig::default(),
        )
        .await
        .unwrap();
        let empty = hub.latest_events(5).await.unwrap();
        assert!(empty.events.is_empty());
        assert_eq!(empty.next, "0");
        for i in 0..7 {
            let id = format!("d{i}");
            hub.put_device(&id, serde_json::json!({ "deviceId": id }), None)
                .await
                .unwrap();
        }
        let page = hub.latest_events(3).await.unwrap();
        let ids: Vec<_> = page.events.iter().map(|e| e.device_id.as_deref()).collect();
        assert_eq!(ids, vec![Some("d4"), Some("d5"), Some("d6")]);
        assert_eq!(page.next, hub.last_event_seq().await.unwrap().to_string());
        hub.put_device("d7", serde_json::json!({ "deviceId": "d7" }), None)
            .await
            .unwrap();
        let after = parse_cursor(Some(&page.next)).unwrap();
        let next = hub.events_after(after, 10).await.unwrap();
        assert_eq!(next.events.len(), 1);
        assert_eq!(next.events[0].device_id.as_deref(), Some("d7"));
    }

    #[test]
    fn cursors_are_sequence_numbers_and_anything_else_is_refused_with_what_to_pass() {
        assert_eq!(parse_cursor(None).unwrap(), 0);
        assert_eq!(parse_cursor(Some("")).unwrap(), 0);
        assert_eq!(parse_cursor(Some("42")).unwrap(), 42);
        for bad in ["-1", "x", "1.5"] {
            let e = parse_cursor(Some(bad)).unwrap_err();
            assert_eq!(e.code, ErrorCode::ArgumentInvalid);
            assert!(e.message.contains("`next`"), "{}", e.message);
        }
    }
}
