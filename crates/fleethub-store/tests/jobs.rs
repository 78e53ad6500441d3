//! Job rows and device snapshots against a real database file.
#![allow(clippy::unwrap_used)] // a panic here fails a test or a probe; it never reaches the hub

use fleethub_query::{Dialect, SqlFragment, SqlParam};
use fleethub_store::{
    DeviceJobStatus, DeviceRow, JobDeviceCounts, JobDeviceUpdate, JobFilter, JobReads, JobRow,
    JobSnapshot, JobStatus, NewJobDevice, NewJobDevices, Store, StoreConfig, StoreError,
};
use serde_json::json;
use tempfile::TempDir;

fn open(dir: &TempDir) -> Store {
    Store::open(StoreConfig::new(dir.path().join("fleethub.db"))).unwrap()
}

fn device(id: &str, tags: serde_json::Value) -> DeviceRow {
    DeviceRow {
        device_id: id.to_string(),
        status: "enabled".into(),
        identity: json!({ "deviceId": id }),
        tags,
        desired: json!({"values":{},"metadata":{},"version":1}),
        reported: json!({"values":{},"metadata":{},"version":1}),
        twin_version: 1,
        twin_etag: "AAAAAAAAAAE=".into(),
        revision: 1,
    }
}

fn job(id: &str, job_type: &str, status: &str, created_ms: i64) -> JobRow {
    JobRow {
        job_id: id.into(),
        job_type: job_type.into(),
        status: JobStatus::parse(status).unwrap(),
        created_ms,
        start_ms: created_ms,
        end_ms: None,
        body: json!({ "jobId": id }),
    }
}

async fn seed(store: &Store, n: usize) {
    store
        .write(move |tx| -> Result<(), StoreError> {
            for i in 0..n {
                let tags = json!({ "even": i % 2 == 0 });
                tx.insert_device(&device(&format!("d{i:03}"), tags))?;
            }
            Ok(())
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_job_id_is_taken_once_and_its_document_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let first = store
        .write(|tx| tx.insert_job(&job("j1", "scheduleUpdateTwin", "queued", 1)))
        .await
        .unwrap();
    let again = store
        .write(|tx| tx.insert_job(&job("j1", "scheduleDeviceMethod", "queued", 2)))
        .await
        .unwrap();
    assert!(first && !again);
    store
        .write(|tx| tx.update_job("j1", JobStatus::Completed, Some(9), &json!({"done": true})))
        .await
        .unwrap();
    let row = store.read(|r| r.get_job("j1")).await.unwrap().unwrap();
    assert_eq!(
        (row.job_type.as_str(), row.status.as_str(), row.end_ms),
        ("scheduleUpdateTwin", "completed", Some(9))
    );
    assert_eq!(row.body, json!({"done": true}));
}

#[tokio::test]
async fn snapshots_are_taken_in_chunks_with_a_condition_and_its_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    seed(&store, 10).await;
    let take = |after: Option<String>| {
        store.write(move |tx| {
            let condition = SqlFragment {
                dialect: Dialect::Sqlite,
                sql: "json_extract(tags, '$.even') = ?1".into(),
                params: vec![SqlParam::Integer(1)],
            };
            let snapshot = JobSnapshot {
                job_id: "j1",
                job_type: "scheduleUpdateTwin",
                created_time: "2026-01-01T00:00:00.0000000Z",
                condition: Some(&condition),
            };
            tx.snapshot_job_devices(&snapshot, after.as_deref(), 3)
        })
    };
    let (n, last) = take(None).await.unwrap();
    assert_eq!((n, last.as_deref()), (3, Some("d004")));
    let (n, last) = take(last).await.unwrap();
    assert_eq!((n, last.as_deref()), (2, Some("d008")));
    let (n, last) = take(last).await.unwrap();
    assert_eq!((n, last), (0, None));
    let counts = store.read(|r| r.job_device_counts("j1")).await.unwrap();
    assert_eq!(
        counts,
        JobDeviceCounts {
            pending: 5,
            ..Default::default()
        }
    );
    let row = store
        .read(|r| r.get_job_device("j1", "d002"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, DeviceJobStatus::Pending);
    assert_eq!(row.created_time, row.updated_time);
    assert_eq!((row.start_time, row.outcome), (None, None));
}

#[tokio::test]
async fn device_rows_move_in_bounded_chunks_and_count_by_status() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    seed(&store, 6).await;
    store
        .write(|tx| {
            let snapshot = JobSnapshot {
                job_id: "j1",
                job_type: "scheduleDeviceMethod",
                created_time: "t0",
                condition: None,
            };
            tx.snapshot_job_devices(&snapshot, None, 100)
        })
        .await
        .unwrap();
    let error = json!({"code": "JobCanceled", "description": "canceled"});
    let moved = store
        .write(move |tx| {
            let cancel = JobDeviceUpdate {
                status: DeviceJobStatus::Canceled,
                start_time: None,
                end_time: Some("t1"),
                updated_time: "t1",
                outcome: None,
                error: Some(&error),
            };
            tx.move_job_devices("j1", DeviceJobStatus::Pending, &cancel, 4)
        })
        .await
        .unwrap();
    assert_eq!(moved, ["d000", "d001", "d002", "d003"]);
    let outcome = json!({"deviceMethodResponse": {"status": 200, "payload": null}});
    store
        .write(move |tx| {
            let done = JobDeviceUpdate {
                status: DeviceJobStatus::Completed,
                start_time: Some("t2"),
                end_time: Some("t3"),
                updated_time: "t3",
                outcome: Some(&outcome),
                error: None,
            };
            tx.update_job_device("j1", "d005", &done)
        })
        .await
        .unwrap();
    let counts = store.read(|r| r.job_device_counts("j1")).await.unwrap();
    assert_eq!(
        (counts.canceled, counts.pending, counts.completed),
        (4, 1, 1)
    );
    assert_eq!(counts.total(), 6);
    let pending = store
        .read(|r| r.job_device_ids("j1", DeviceJobStatus::Pending, 10))
        .await
        .unwrap();
    assert_eq!(pending, vec!["d004".to_string()]);
    let row = store
        .read(|r| r.get_job_device("j1", "d005"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.outcome.unwrap()["deviceMethodResponse"]["status"], 200);
    assert_eq!(row.start_time.as_deref(), Some("t2"));
}

#[tokio::test]
async fn twin_targets_carry_only_the_sections_asked_for_and_flag_deleted_devices() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    seed(&store, 2).await;
    store
        .write(|tx| -> Result<(), StoreError> {
            let snapshot = JobSnapshot {
                job_id: "j1",
                job_type: "scheduleUpdateTwin",
                created_time: "t0",
                condition: None,
            };
            tx.snapshot_job_devices(&snapshot, None, 100)?;
            tx.delete_device("d001", 1)?;
            Ok(())
        })
        .await
        .unwrap();
    let targets = store
        .read(|r| r.pending_twin_targets("j1", false, true, None, 10))
        .await
        .unwrap();
    assert_eq!(targets.len(), 2);
    assert!(targets[0].tags.is_none() && targets[0].desired.is_some());
    assert_eq!(targets[0].twin_version, Some(1));
    assert_eq!(targets[1].device_id, "d001");
    assert_eq!(targets[1].twin_version, None);
}

#[tokio::test]
async fn job_lists_filter_page_and_finished_jobs_are_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store
        .write(|tx| -> Result<(), StoreError> {
            tx.insert_job(&job("a", "scheduleUpdateTwin", "completed", 1))?;
            tx.insert_job(&job("b", "scheduleDeviceMethod", "running", 2))?;
            tx.insert_job(&job("c", "scheduleUpdateTwin", "running", 3))?;
            tx.update_job("a", JobStatus::Completed, Some(10), &json!({}))?;
            Ok(())
        })
        .await
        .unwrap();
    let page = store
        .read(|r| r.list_jobs(&JobFilter::default(), 2))
        .await
        .unwrap();
    let ids: Vec<_> = page.iter().map(|j| j.job_id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    let rest = store
        .read(|r| {
            let filter = JobFilter {
                after: Some((2, "b")),
                ..Default::default()
            };
            r.list_jobs(&filter, 2)
        })
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].job_id, "c");
    let twins = store
        .read(|r| {
            let filter = JobFilter {
                job_type: Some("scheduleUpdateTwin"),
                status: Some(JobStatus::Running),
                ..Default::default()
            };
            r.list_jobs(&filter, 10)
        })
        .await
        .unwrap();
    assert_eq!(twins.len(), 1);
    let unfinished = store
        .read(|r| r.unfinished_jobs(&[JobStatus::Running, JobStatus::Completed]))
        .await
        .unwrap();
    assert_eq!(unfinished.len(), 2, "a finished job is not unfinished");

    let old = store
        .write(|tx| tx.finished_jobs_before(11, 10))
        .await
        .unwrap();
    assert_eq!(old, vec!["a".to_string()]);
    store
        .write(|tx| -> Result<(), StoreError> {
            tx.delete_job_devices("a", 100)?;
            tx.delete_job("a")?;
            Ok(())
        })
        .await
        .unwrap();
    assert!(store.read(|r| r.get_job("a")).await.unwrap().is_none());
}

/// `job_device_counts` (kept as each write goes) against a count of the rows themselves.
async fn counts_match_rows(store: &Store, job_id: &'static str) -> JobDeviceCounts {
    let kept = store
        .read(move |r| r.job_device_counts(job_id))
        .await
        .unwrap();
    let counted = store
        .read(move |r| {
            let mut c = JobDeviceCounts::default();
            for status in DeviceJobStatus::ALL {
                *c.of_mut(status) = r.job_device_ids(job_id, status, usize::MAX)?.len() as u64;
            }
            Ok(c)
        })
        .await
        .unwrap();
    assert_eq!(kept, counted);
    kept
}

#[tokio::test]
async fn job_counts_follow_every_change_and_a_rolled_back_write_changes_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    seed(&store, 10).await;
    let update = |status: DeviceJobStatus| JobDeviceUpdate {
        status,
        start_time: Some("t"),
        end_time: Some("t"),
        updated_time: "t",
        outcome: None,
        error: None,
    };
    store
        .write(|tx| {
            let snapshot = JobSnapshot {
                job_id: "j1",
                job_type: "scheduleDeviceMethod",
                created_time: "t0",
                condition: None,
            };
            tx.snapshot_job_devices(&snapshot, None, 6)?;
            tx.snapshot_job_devices(&snapshot, Some("d005"), 100)
        })
        .await
        .unwrap();
    assert_eq!(counts_match_rows(&store, "j1").await.pending, 10);

    let seen_inside = store
        .write(move |tx| -> Result<JobDeviceCounts, StoreError> {
            tx.move_job_devices(
                "j1",
                DeviceJobStatus::Pending,
                &update(DeviceJobStatus::Running),
                3,
            )?;
            tx.update_job_device("j1", "d000", &update(DeviceJobStatus::Completed))?;
            // The same status again, and a row that does not exist: no change.
            tx.update_job_device("j1", "d000", &update(DeviceJobStatus::Completed))?;
            tx.update_job_device("j1", "nope", &update(DeviceJobStatus::Failed))?;
            tx.update_pending_job_device("j1", "d005", &update(DeviceJobStatus::Failed))?;
            // Not pending any more: refused, not counted.
            tx.update_pending_job_device("j1", "d001", &update(DeviceJobStatus::Failed))?;
            assert!(!tx.update_job_device_from(
                "j1",
                "d002",
                DeviceJobStatus::Completed,
                &update(DeviceJobStatus::Failed)
            )?);
            tx.job_device_counts("j1")
        })
        .await
        .unwrap();
    let c = counts_match_rows(&store, "j1").await;
    assert_eq!((c.pending, c.running, c.completed, c.failed), (6, 2, 1, 1));
    // A write reading the counts sees its own changes.
    assert_eq!(seen_inside, c);

    // A write that fails after changing rows is rolled back with its counts.
    let failed = store
        .write(move |tx| -> Result<(), StoreError> {
            tx.move_job_devices(
                "j1",
                DeviceJobStatus::Pending,
                &update(DeviceJobStatus::Canceled),
                100,
            )?;
            Err(StoreError::Other("changed my mind".into()))
        })
        .await;
    assert!(failed.is_err());
    let c = counts_match_rows(&store, "j1").await;
    assert_eq!((c.pending, c.canceled), (6, 0));

    // Pruning takes the counts with the rows.
    store
        .write(|tx| -> Result<(), StoreError> {
            tx.delete_job_devices("j1", 4)?;
            tx.delete_job_devices("j1", 100)?;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(counts_match_rows(&store, "j1").await.total(), 0);
}

/// Two nodes share one store; each has method calls in flight. When node "a" restarts and fails
/// its interrupted calls, node "b"'s calls stay running: b is still waiting for their answers.
#[tokio::test]
async fn recovery_fails_only_the_running_rows_its_own_node_owns() {
    let dir = tempfile::tempdir().unwrap();
    let open_as = |node: &str| {
        let mut cfg = StoreConfig::new(dir.path().join("fleethub.db"));
        cfg.node = node.to_string();
        Store::open(cfg).unwrap()
    };
    let (a, b) = (open_as("a"), open_as("b"));
    seed(&a, 6).await;
    a.write(|tx| {
        tx.insert_job(&job("j1", "scheduleDeviceMethod", "running", 1))?;
        let snapshot = JobSnapshot {
            job_id: "j1",
            job_type: "scheduleDeviceMethod",
            created_time: "t0",
            condition: None,
        };
        tx.snapshot_job_devices(&snapshot, None, 100)
    })
    .await
    .unwrap();
    let running = JobDeviceUpdate {
        status: DeviceJobStatus::Running,
        start_time: Some("t1"),
        end_time: None,
        updated_time: "t1",
        outcome: None,
        error: None,
    };
    // Each node starts calls on its own devices, as the engine does: pending → running.
    for (store, ids) in [
        (&a, ["d000", "d001", "d002"]),
        (&b, ["d003", "d004", "d005"]),
    ] {
        store
            .write(move |tx| -> Result<(), StoreError> {
                for id in ids {
                    assert!(tx.update_pending_job_device("j1", id, &running)?);
                }
                Ok(())
            })
            .await
            .unwrap();
    }
    let interrupted = json!({"code": "JobInterrupted"});
    let failed = a
        .write(move |tx| {
            let fail = JobDeviceUpdate {
                status: DeviceJobStatus::Failed,
                start_time: None,
                end_time: Some("t2"),
                updated_time: "t2",
                outcome: None,
                error: Some(&interrupted),
            };
            tx.move_own_running_job_devices("j1", &fail, 100)
        })
        .await
        .unwrap();
    assert_eq!(failed.len(), 3, "a fails its own three calls: {failed:?}");
    for (id, status) in [
        ("d000", DeviceJobStatus::Failed),
        ("d002", DeviceJobStatus::Failed),
        ("d003", DeviceJobStatus::Running),
        ("d005", DeviceJobStatus::Running),
    ] {
        let row = b
            .read(move |r| r.get_job_device("j1", id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.status, status, "{id}");
    }
    let counts = b.read(|r| r.job_device_counts("j1")).await.unwrap();
    assert_eq!((counts.failed, counts.running), (3, 3));
    a.close();
    b.close();
}

/// A listed device set enters a job row by row: pending, scheduled for a not-before time, or
/// failed at once; scheduled rows are released when their time comes, earliest first, and
/// the counts follow every move.
#[tokio::test]
async fn listed_devices_wait_for_their_not_before_time_and_are_released_when_due() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    seed(&store, 3).await;
    let (exists, missing) = store
        .read(|r| Ok((r.device_exists("d001")?, r.device_exists("nope")?)))
        .await
        .unwrap();
    assert!(exists && !missing);
    let not_found = json!({"code": "DeviceNotFound", "description": "no such device"});
    let error = not_found.clone();
    store
        .write(move |tx| {
            let job = NewJobDevices {
                job_id: "j1",
                job_type: "scheduleUpdateTwin",
                created_time: "t0",
            };
            let row = |device_id, status, not_before_ms| NewJobDevice {
                device_id,
                status,
                not_before_ms,
                error: None,
            };
            tx.insert_job_devices(
                &job,
                &[
                    row("d000", DeviceJobStatus::Pending, None),
                    row("d001", DeviceJobStatus::Scheduled, Some(2_000)),
                    row("d002", DeviceJobStatus::Scheduled, Some(1_000)),
                    NewJobDevice {
                        error: Some(&error),
                        ..row("nope", DeviceJobStatus::Failed, None)
                    },
                ],
            )
        })
        .await
        .unwrap();
    let c = counts_match_rows(&store, "j1").await;
    assert_eq!((c.pending, c.scheduled, c.failed), (1, 2, 1));
    let failed = store
        .read(|r| r.get_job_device("j1", "nope"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.error, Some(not_found));
    assert_eq!(failed.end_time.as_deref(), Some("t0"));
    assert_eq!(
        store.read(|r| r.next_not_before("j1")).await.unwrap(),
        Some(1_000)
    );

    let release = |now_ms| {
        let store = store.clone();
        async move {
            store
                .write(move |tx| tx.release_due_job_devices("j1", now_ms, "t1", 100))
                .await
                .unwrap()
        }
    };
    assert_eq!(release(999).await, (0, Some(1_000)), "nothing is due yet");
    assert_eq!(release(1_500).await, (1, Some(2_000)));
    let d002 = store
        .read(|r| r.get_job_device("j1", "d002"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d002.status, DeviceJobStatus::Pending);
    assert_eq!(release(5_000).await, (1, None));
    let c = counts_match_rows(&store, "j1").await;
    assert_eq!((c.pending, c.scheduled, c.failed), (3, 0, 1));
}
