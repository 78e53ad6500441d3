use super::*;
use crate::sqlite::reads::sealed::Connected;
use crate::{Store, StoreConfig};

fn open(dir: &std::path::Path) -> Store {
    Store::open(StoreConfig::new(dir.join("db"))).unwrap()
}

fn rollout(id: &str, created_ms: i64) -> RolloutRow {
    RolloutRow {
        rollout_id: id.into(),
        spec: r#"{"artifact":{"version":"2.1.0"}}"#.into(),
        status: "running".into(),
        state: "{}".into(),
        created_ms,
        updated_ms: created_ms,
    }
}

fn push(device: &str, attempt: u32) -> RolloutPushRow {
    RolloutPushRow {
        rollout_id: "r1".into(),
        device_id: device.into(),
        attempt,
        version: "2.1.0".into(),
        rollback: false,
        created_ms: 10,
        sent_ms: None,
    }
}

fn event(kind: &str, message: &str) -> RolloutEventRow {
    RolloutEventRow {
        seq: 0,
        rollout_id: "r1".into(),
        at_ms: 10,
        kind: kind.into(),
        wave: Some("canary".into()),
        device_id: None,
        message: message.into(),
    }
}

#[tokio::test]
async fn a_rollout_is_stored_once_updated_listed_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let inserted = store
        .write(|tx| {
            Ok::<_, StoreError>((
                tx.insert_rollout(&rollout("r1", 1))?,
                tx.insert_rollout(&rollout("r2", 2))?,
                tx.insert_rollout(&rollout("r1", 3))?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(inserted, (true, true, false), "an id is taken once");
    let updated = store
        .write(|tx| tx.update_rollout("r2", "completed", r#"{"waves":[]}"#, 9))
        .await
        .unwrap();
    assert!(updated);
    assert!(!store
        .write(|tx| tx.update_rollout("nope", "paused", "{}", 9))
        .await
        .unwrap());
    drop(store);
    let store = open(dir.path());
    let listed = store.read(|r| r.list_rollouts(10)).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|r| r.rollout_id.as_str()).collect();
    assert_eq!(ids, vec!["r2", "r1"], "newest first");
    assert_eq!(listed[0].status, "completed");
    assert_eq!(listed[0].state, r#"{"waves":[]}"#);
    assert_eq!(listed[0].updated_ms, 9);
    let unfinished = store.read(|r| r.unfinished_rollouts()).await.unwrap();
    assert_eq!(unfinished, vec!["r1".to_string()]);
    let got = store.read(|r| r.get_rollout("r1")).await.unwrap();
    assert_eq!(got, Some(rollout("r1", 1)));
}

#[tokio::test]
async fn a_replayed_push_is_the_same_journal_row() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let new = store
        .write(|tx| {
            tx.insert_rollout(&rollout("r1", 1))?;
            tx.insert_rollout_pushes(&[push("a", 1), push("b", 1)])
        })
        .await
        .unwrap();
    assert_eq!(new, 2);
    // The same (rollout, device, attempt) again, even with other fields: not a new push.
    let mut changed = push("a", 1);
    changed.version = "9.9.9".into();
    let new = store
        .write(move |tx| tx.insert_rollout_pushes(&[changed, push("a", 2)]))
        .await
        .unwrap();
    assert_eq!(new, 1, "only attempt 2 is new");
    let unsent = store
        .read(|r| r.unsent_rollout_pushes("r1", 10))
        .await
        .unwrap();
    let keys: Vec<(String, u32, String)> = unsent
        .iter()
        .map(|p| (p.device_id.clone(), p.attempt, p.version.clone()))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("a".into(), 1, "2.1.0".into()),
            ("a".into(), 2, "2.1.0".into()),
            ("b".into(), 1, "2.1.0".into())
        ]
    );
    let marked = store
        .write(|tx| {
            let first =
                tx.mark_rollout_pushes_sent("r1", &[("a".into(), 1), ("b".into(), 1)], 20)?;
            let again = tx.mark_rollout_pushes_sent("r1", &[("a".into(), 1)], 30)?;
            Ok::<_, StoreError>((first, again))
        })
        .await
        .unwrap();
    assert_eq!(marked, (2, 0), "a push is handed on once");
    let unsent = store
        .read(|r| r.unsent_rollout_pushes("r1", 10))
        .await
        .unwrap();
    assert_eq!(unsent.len(), 1);
    let of_a = store
        .read(|r| r.rollout_pushes_of("r1", "a"))
        .await
        .unwrap();
    assert_eq!(of_a[0].sent_ms, Some(20));
    assert_eq!(of_a[1].sent_ms, None);
}

#[tokio::test]
async fn state_pushes_and_events_of_a_failed_write_are_all_absent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .write(|tx| tx.insert_rollout(&rollout("r1", 1)))
        .await
        .unwrap();
    // A step written whole, then one that fails halfway: nothing of the second remains.
    store
        .write(|tx| {
            tx.update_rollout("r1", "running", r#"{"step":1}"#, 2)?;
            tx.put_rollout_devices("r1", &[("a".into(), r#"{"state":"in_flight"}"#.into())], 2)?;
            tx.insert_rollout_pushes(&[push("a", 1)])?;
            tx.append_rollout_events(&[event("wave_started", "wave canary started: 1 devices")])
        })
        .await
        .unwrap();
    let failed = store
        .write(|tx| {
            tx.update_rollout("r1", "paused", r#"{"step":2}"#, 3)?;
            tx.put_rollout_devices("r1", &[("a".into(), r#"{"state":"flagged"}"#.into())], 3)?;
            tx.insert_rollout_pushes(&[push("a", 2)])?;
            tx.append_rollout_events(&[event("gate_tripped", "tripped")])?;
            Err::<(), _>(StoreError::Other("the process died here".into()))
        })
        .await;
    assert!(failed.is_err());
    drop(store);
    let store = open(dir.path());
    let row = store.read(|r| r.get_rollout("r1")).await.unwrap().unwrap();
    assert_eq!(
        (row.status.as_str(), row.state.as_str()),
        ("running", r#"{"step":1}"#)
    );
    let devices = store.read(|r| r.rollout_devices("r1")).await.unwrap();
    assert_eq!(
        devices,
        vec![("a".into(), r#"{"state":"in_flight"}"#.into())]
    );
    let pushes = store
        .read(|r| r.rollout_pushes_of("r1", "a"))
        .await
        .unwrap();
    assert_eq!(pushes.len(), 1);
    let events = store.read(|r| r.rollout_events("r1", 0, 10)).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "wave_started");
}

#[tokio::test]
async fn events_are_read_on_from_a_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .write(|tx| {
            tx.insert_rollout(&rollout("r1", 1))?;
            tx.append_rollout_events(&[
                event("created", "one"),
                event("wave_started", "two"),
                event("gate_passed", "three"),
            ])
        })
        .await
        .unwrap();
    let first = store.read(|r| r.rollout_events("r1", 0, 2)).await.unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(first[1].wave.as_deref(), Some("canary"));
    let after = first[1].seq;
    let rest = store
        .read(move |r| r.rollout_events("r1", after, 10))
        .await
        .unwrap();
    let messages: Vec<&str> = rest.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages, vec!["three"]);
    assert!(store
        .read(|r| r.rollout_events("other", 0, 10))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_device_reads_its_rollouts_newest_first_through_its_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .write(|tx| {
            tx.insert_rollout(&rollout("r1", 1))?;
            tx.insert_rollout(&rollout("r2", 5))?;
            tx.put_rollout_devices(
                "r1",
                &[
                    ("a".into(), r#"{"state":"updated"}"#.into()),
                    ("b".into(), r#"{"state":"waiting"}"#.into()),
                ],
                7,
            )?;
            tx.put_rollout_devices("r2", &[("a".into(), r#"{"state":"in_flight"}"#.into())], 8)?;
            tx.insert_rollout_pushes(&[push("a", 1), push("a", 2)])
        })
        .await
        .unwrap();
    let rows = store.read(|r| r.device_rollouts("a", 10)).await.unwrap();
    let seen: Vec<(&str, &str, Option<i64>, Option<i64>)> = rows
        .iter()
        .map(|d| {
            let rollout = d.rollout_id.as_str();
            (rollout, d.record.as_str(), d.updated_ms, d.first_push_ms)
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("r2", r#"{"state":"in_flight"}"#, Some(8), None),
            ("r1", r#"{"state":"updated"}"#, Some(7), Some(10)),
        ]
    );
    let newest = store.read(|r| r.device_rollouts("a", 1)).await.unwrap();
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0].rollout_id, "r2");
    assert!(store
        .read(|r| r.device_rollouts("nobody", 10))
        .await
        .unwrap()
        .is_empty());
    // The device's rows come from its index, not a scan of every rollout's rows.
    let plan: Vec<String> = store
        .read(|r| {
            let mut stmt = r
                .conn()
                .prepare(&format!("EXPLAIN QUERY PLAN {DEVICE_ROLLOUTS}"))?;
            let steps = stmt.query_map(params!["a", 10], |row| row.get::<_, String>(3))?;
            Ok::<_, StoreError>(steps.collect::<Result<Vec<_>, _>>()?)
        })
        .await
        .unwrap();
    assert!(
        plan.iter().any(|p| p.contains("rollout_devices_device")),
        "{plan:?}"
    );
    assert!(!plan.iter().any(|p| p.starts_with("SCAN")), "{plan:?}");
}
