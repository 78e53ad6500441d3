//! Optimistic concurrency. Every read-modify-write of a twin or a registry entry carries the
//! version it read (`twin_version`, the device's `revision`) into the store's `UPDATE` or
//! `DELETE`, and the store answers [`StoreError::Conflict`], having written nothing, if another
//! writer got there first. Today one writer thread commits everything and reads inside a write
//! see the latest commit, so a conflict needs a read outside the write (a twin job's batch, or a
//! second hub on the same database); the check makes the same code correct when several writers
//! exist.
//!
//! What the hub does about a conflict depends on who computed the change: a change the hub
//! computed itself (a device's reported patch, a merge-patch the client did not pin to an etag)
//! is read and computed again, at most [`ATTEMPTS`] times; a change the client pinned to the
//! etag it read (`If-Match`) is refused with 412 PreconditionFailed, as IoT Hub does.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use fleethub_core::{ErrorCode, HubError, HubResult};
use fleethub_store::{StoreError, WriteTx};

use crate::Hub;

/// How many times a change the hub computes is tried before the caller hears 503.
pub(crate) const ATTEMPTS: usize = 5;

/// What a write that lost a race does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnConflict {
    /// Read again and compute the change again (at most [`ATTEMPTS`] tries in all).
    Recompute,
    /// Give up at once: the client pinned the version it read, so it must read again itself.
    Refuse,
}

impl OnConflict {
    /// `Refuse` when a client's `If-Match` names an etag; `Recompute` when it names none or `*`
    /// (the client asked for its change on top of whatever is there).
    pub(crate) fn for_if_match(if_match: Option<&str>) -> OnConflict {
        match crate::device::pinned_etag(if_match) {
            None => OnConflict::Recompute,
            Some(_) => OnConflict::Refuse,
        }
    }
}

/// Why one attempt at a write failed: it lost a race (worth computing again), or anything else.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// Another writer changed what this write read; nothing of it was kept.
    Conflict(StoreError),
    /// Any other failure, final.
    Refused(HubError),
}

impl From<StoreError> for WriteError {
    fn from(e: StoreError) -> Self {
        if e.is_conflict() {
            WriteError::Conflict(e)
        } else {
            WriteError::Refused(e.into())
        }
    }
}

impl From<HubError> for WriteError {
    fn from(e: HubError) -> Self {
        WriteError::Refused(e)
    }
}

/// A conflict that is given up on is IoT Hub's 412 PreconditionFailed (the store's mapping).
impl From<WriteError> for HubError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Conflict(e) => e.into(),
            WriteError::Refused(e) => e,
        }
    }
}

/// The result of one attempt at a write.
pub(crate) type WriteResult<T> = Result<T, WriteError>;

impl Hub {
    /// Runs `f` as one store write. If it loses a race, `on_conflict` says whether it runs again,
    /// from a fresh read in a new transaction (`Recompute`, up to [`ATTEMPTS`] tries, then 503
    /// ServiceUnavailable), or fails with 412 PreconditionFailed (`Refuse`).
    pub(crate) async fn write_versioned<T, F>(&self, on_conflict: OnConflict, f: F) -> HubResult<T>
    where
        F: Fn(&mut WriteTx<'_>) -> WriteResult<T> + Send + Sync + 'static,
        T: Send + 'static,
    {
        let f = Arc::new(f);
        let mut attempt = 1;
        loop {
            let this = Arc::clone(&f);
            let lost = match self.store().write(move |tx| (*this)(tx)).await {
                Ok(value) => return Ok(value),
                Err(WriteError::Refused(e)) => return Err(e),
                Err(WriteError::Conflict(e)) => e,
            };
            self.metrics()
                .write_conflicts
                .fetch_add(1, Ordering::Relaxed);
            if on_conflict == OnConflict::Refuse {
                return Err(lost.into());
            }
            if attempt == ATTEMPTS {
                return Err(gave_up(&lost));
            }
            attempt += 1;
        }
    }
}

/// The error for a change that lost the race [`ATTEMPTS`] times in a row.
pub(crate) fn gave_up(last: &StoreError) -> HubError {
    HubError::new(
        ErrorCode::ServiceUnavailable,
        format!(
            "{last}, {ATTEMPTS} times in a row; nothing was saved; retry once the other writers \
             are done"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::etag_for;
    use crate::HubConfig;
    use fleethub_core::twin::{Section, TwinProperties};
    use fleethub_store::{Reads, Store, StoreConfig, TwinSections};
    use serde_json::json;
    use std::sync::atomic::AtomicUsize;
    use tempfile::TempDir;

    /// Two hubs on one database file, each with its own store handle and writer: two nodes.
    async fn two_nodes() -> (Hub, Hub, TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let node = |name: &str| {
            let config = StoreConfig {
                node: name.into(),
                ..StoreConfig::new(dir.path().join("hub.db"))
            };
            Store::open(config).unwrap()
        };
        let (a, b) = (node("a"), node("b"));
        let clock = Arc::new(fleethub_core::SystemClock);
        let a = Hub::open(a, clock.clone(), HubConfig::default())
            .await
            .unwrap();
        let b = Hub::open(b, clock, HubConfig::default()).await.unwrap();
        a.put_device("d1", json!({ "deviceId": "d1" }), None)
            .await
            .unwrap();
        (a, b, dir)
    }

    /// d1's reported section as stored, and the twin version, read outside any write.
    async fn read_outside(hub: &Hub) -> (String, i64) {
        hub.store()
            .read(|r| r.get_reported_text("d1"))
            .await
            .unwrap()
            .unwrap()
    }

    /// A write that adds `key` to d1's reported properties: on top of `stale` (read before
    /// the write, so maybe out of date) on its first run, then on top of what it reads inside
    /// the write; `runs` counts its runs.
    fn add_reported(
        stale: (String, i64),
        key: &'static str,
        runs: Arc<AtomicUsize>,
        stays_stale: bool,
    ) -> impl Fn(&mut WriteTx<'_>) -> WriteResult<u64> + Send + Sync + 'static {
        let stale = parking_lot::Mutex::new(Some(stale));
        move |tx: &mut WriteTx<'_>| -> WriteResult<u64> {
            runs.fetch_add(1, Ordering::Relaxed);
            let earlier = if stays_stale {
                stale.lock().clone()
            } else {
                stale.lock().take()
            };
            let (text, read) = match earlier {
                Some(read) => read,
                None => tx
                    .get_reported_text("d1")?
                    .ok_or_else(|| HubError::device_not_found("d1"))?,
            };
            let mut reported: TwinProperties = serde_json::from_str(&text).unwrap();
            let patch = json!({ key: 1 }).as_object().unwrap().clone();
            reported.apply_patch(Section::Reported, &patch, "2026-03-01T12:00:00Z")?;
            let section = serde_json::to_value(&reported).unwrap();
            let sections = TwinSections {
                reported: Some(&section),
                ..TwinSections::default()
            };
            tx.update_twin("d1", sections, read + 1, &etag_for(read as u64 + 1))?;
            Ok(reported.version)
        }
    }

    fn conflicts(hub: &Hub) -> u64 {
        hub.metrics().write_conflicts.load(Ordering::Relaxed)
    }

    /// What node A saw of a race it lost.
    struct Race {
        answer: HubResult<u64>,
        runs: usize,
        a: Hub,
        b: Hub,
        _dir: TempDir,
    }

    /// The race the version check exists for: node A reads d1 outside its write, node B's
    /// device report commits, then A writes its change (adding `a`) through `write_versioned`.
    async fn lose_a_race(on_conflict: OnConflict, stays_stale: bool) -> Race {
        let (a, b, dir) = two_nodes().await;
        let stale = read_outside(&a).await;
        b.device_report("d1", br#"{"b":1}"#).await.unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        let change = add_reported(stale, "a", runs.clone(), stays_stale);
        let answer = a.write_versioned(on_conflict, change).await;
        Race {
            answer,
            runs: runs.load(Ordering::Relaxed),
            a,
            b,
            _dir: dir,
        }
    }

    /// A's write loses, is computed again from a fresh read, and both changes stay.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_that_loses_a_race_to_another_node_is_computed_again_and_both_stay() {
        let race = lose_a_race(OnConflict::Recompute, false).await;
        let version = race.answer.unwrap();
        assert_eq!(version, 3, "reported $version 1, then B's report, then A's");
        let twin = race.b.get_twin("d1").await.unwrap();
        assert_eq!(twin.reported.values["a"], 1);
        assert_eq!(twin.reported.values["b"], 1, "no lost update: {twin:?}");
        assert_eq!(twin.version, 3);
        assert_eq!((race.runs, conflicts(&race.a)), (2, 1));
    }

    /// A change that loses every race is tried five times, then refused with a 503 that says
    /// nothing was saved.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_that_keeps_losing_gives_up_after_five_tries_with_a_503() {
        let race = lose_a_race(OnConflict::Recompute, true).await;
        let err = race.answer.unwrap_err();
        assert_eq!(err.code, ErrorCode::ServiceUnavailable, "{err:?}");
        assert!(err.message.contains("nothing was saved"), "{}", err.message);
        assert_eq!((race.runs, conflicts(&race.a)), (ATTEMPTS, 5));
        let twin = race.a.get_twin("d1").await.unwrap();
        assert!(twin.reported.values.get("a").is_none(), "{twin:?}");
        assert_eq!(twin.version, 2);
    }

    /// A change the client pinned to the etag it read is not computed again: one try, then
    /// 412 PreconditionFailed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pinned_change_that_loses_a_race_is_a_412_at_once() {
        let race = lose_a_race(OnConflict::Refuse, false).await;
        let err = race.answer.unwrap_err();
        assert_eq!(err.code, ErrorCode::PreconditionFailed, "{err:?}");
        assert!(
            err.message.contains("read at version 1, now at 2"),
            "{}",
            err.message
        );
        assert_eq!((race.runs, conflicts(&race.a)), (1, 1));
        let twin = race.a.get_twin("d1").await.unwrap();
        assert!(twin.reported.values.get("a").is_none(), "{twin:?}");
    }

    /// Two nodes' devices report on one twin at once, service patches in between: every change
    /// lands.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_nodes_writing_one_twin_at_once_lose_no_update() {
        const EACH: usize = 20;
        let (a, b, _dir) = two_nodes().await;
        let node = |hub: Hub, name: &'static str| {
            tokio::spawn(async move {
                for i in 0..EACH {
                    let patch = format!(r#"{{"{name}{i}":{i}}}"#);
                    hub.device_report("d1", patch.as_bytes()).await.unwrap();
                    let desired =
                        json!({ "properties": { "desired": { format!("{name}{i}"): i } } });
                    hub.update_twin("d1", desired, None).await.unwrap();
                }
            })
        };
        let (ra, rb) = tokio::join!(node(a.clone(), "a"), node(b, "b"));
        ra.unwrap();
        rb.unwrap();
        let twin = a.get_twin("d1").await.unwrap();
        assert_eq!(twin.reported.values.len(), 2 * EACH, "{twin:?}");
        assert_eq!(twin.desired.values.len(), 2 * EACH, "{twin:?}");
        assert_eq!(twin.version, 1 + 4 * EACH as u64);
    }

    #[test]
    fn only_an_etag_a_client_names_refuses_a_conflict() {
        assert_eq!(OnConflict::for_if_match(None), OnConflict::Recompute);
        assert_eq!(OnConflict::for_if_match(Some("*")), OnConflict::Recompute);
        assert_eq!(
            OnConflict::for_if_match(Some("\"*\"")),
            OnConflict::Recompute
        );
        assert_eq!(
            OnConflict::for_if_match(Some("\"AAAAAAAAAAE=\"")),
            OnConflict::Refuse
        );
    }

    #[test]
    fn a_conflict_given_up_on_is_a_412_and_one_retried_too_often_a_503() {
        let conflict = || StoreError::Conflict("twin 'd1' (read at version 3, now at 4)".into());
        let refused = HubError::from(WriteError::from(conflict()));
        assert_eq!(refused.code, ErrorCode::PreconditionFailed);
        assert!(
            refused.message.contains("read it again"),
            "{}",
            refused.message
        );
        let exhausted = gave_up(&conflict());
        assert_eq!(exhausted.code.http_status(), 503);
        assert!(
            exhausted.message.contains("5 times in a row"),
            "{}",
            exhausted.message
        );
        assert!(matches!(
            WriteError::from(StoreError::Closed),
            WriteError::Refused(e) if e.code == ErrorCode::ServiceUnavailable
        ));
    }

    /// The writer's kept copy of a reported section (`twin_cache`) is only a shortcut:
    /// a report after the twin moved on (a desired change) is merged into the store's copy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_report_after_a_desired_change_is_merged_into_the_stored_section() {
        let (a, _b, _dir) = two_nodes().await;
        let first = a.device_report("d1", br#"{"a":1}"#).await.unwrap();
        assert_eq!(a.inner.twins.len(), 1, "kept after the commit");
        let desired = json!({ "properties": { "desired": { "x": 1 } } });
        let moved = a.update_twin("d1", desired, None).await.unwrap().version;
        assert_eq!(
            a.device_report("d1", br#"{"b":2}"#).await.unwrap(),
            first + 1
        );
        let twin = a.get_twin("d1").await.unwrap();
        assert_eq!(
            twin.reported.values,
            *json!({ "a": 1, "b": 2 }).as_object().unwrap()
        );
        assert_eq!(twin.version, moved + 1);
        // And again from the kept copy, which now holds the merged section.
        a.device_report("d1", br#"{"c":3}"#).await.unwrap();
        let twin = a.get_twin("d1").await.unwrap();
        assert_eq!(twin.reported.values.len(), 3, "{twin:?}");
        assert_eq!(
            (twin.version, twin.reported.version),
            (moved + 2, first + 2)
        );
    }

    /// A desired patch starts from the writer's kept twin, which must never hide a change made
    /// since: a report on this node (carried into the copy) or on another (the copy is old), a
    /// registry change (same twin version, new revision), an If-Match pinned to an old etag.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_desired_patch_from_the_kept_twin_sees_every_change_made_since() {
        let (a, b, _dir) = two_nodes().await;
        let patch = |k: &str| json!({ "properties": { "desired": { k: 1 } } });
        let same_as_stored = |twin: &crate::Twin, stored: &crate::Twin| {
            assert_eq!(
                (&twin.desired, &twin.reported, twin.version, &twin.device),
                (
                    &stored.desired,
                    &stored.reported,
                    stored.version,
                    &stored.device
                )
            );
        };
        a.update_twin("d1", patch("x"), None).await.unwrap();
        assert_eq!(a.inner.twins.len(), 1, "kept after the commit");
        a.device_report("d1", br#"{"here":1}"#).await.unwrap();
        let twin = a.update_twin("d1", patch("y"), None).await.unwrap();
        same_as_stored(&twin, &a.get_twin("d1").await.unwrap());
        assert_eq!(twin.reported.values.len(), 1, "{twin:?}");
        b.device_report("d1", br#"{"there":1}"#).await.unwrap();
        let twin = a.update_twin("d1", patch("z"), None).await.unwrap();
        same_as_stored(&twin, &a.get_twin("d1").await.unwrap());
        assert_eq!(twin.reported.values.len(), 2, "{twin:?}");
        assert_eq!(twin.desired.values.len(), 3, "{twin:?}");
        let disabled = json!({ "deviceId": "d1", "status": "disabled" });
        a.put_device("d1", disabled, Some("*")).await.unwrap();
        let twin = a.update_twin("d1", patch("w"), None).await.unwrap();
        assert_eq!(twin.device.status, crate::DeviceStatus::Disabled);
        same_as_stored(&twin, &a.get_twin("d1").await.unwrap());
        let old = etag_for(twin.version - 1);
        let refused = a.update_twin("d1", patch("v"), Some(&old)).await;
        assert_eq!(
            refused.unwrap_err().code,
            fleethub_core::ErrorCode::PreconditionFailed
        );
        let current = format!("\"{}\"", twin.etag());
        let next = a.update_twin("d1", patch("v"), Some(&current)).await;
        let next = next.unwrap();
        assert_eq!(next.version, twin.version + 1);
        same_as_stored(&next, &a.get_twin("d1").await.unwrap());
    }

    /// Deleted and created again, a device's twin versions start over: the copy kept from
    /// before the delete must not be merged into the new device's section even once the new
    /// twin is back at the same version. `on_b` deletes and recreates on the other node (seen
    /// through the store's data version), otherwise on the same node (seen through the delete).
    async fn a_device_created_again_does_not_inherit_the_kept_section(on_b: bool) {
        let (a, b, _dir) = two_nodes().await;
        a.device_report("d1", br#"{"old":1}"#).await.unwrap();
        let before = a.get_twin("d1").await.unwrap().version;
        let other = if on_b { &b } else { &a };
        other.delete_device("d1", None).await.unwrap();
        other
            .put_device("d1", json!({ "deviceId": "d1" }), None)
            .await
            .unwrap();
        let desired = json!({ "properties": { "desired": { "x": 1 } } });
        other.update_twin("d1", desired, None).await.unwrap();
        assert_eq!(
            other.get_twin("d1").await.unwrap().version,
            before,
            "same version again"
        );
        a.device_report("d1", br#"{"new":1}"#).await.unwrap();
        let twin = a.get_twin("d1").await.unwrap();
        assert_eq!(
            twin.reported.values,
            *json!({ "new": 1 }).as_object().unwrap(),
            "{twin:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_device_deleted_and_created_again_on_this_node_starts_a_new_reported_section() {
        a_device_created_again_does_not_inherit_the_kept_section(false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_device_deleted_and_created_again_by_another_node_starts_a_new_reported_section() {
        a_device_created_again_does_not_inherit_the_kept_section(true).await;
    }
}
