//! Databases written by earlier releases: the committed `tests/fixtures/v10.sqlite` (schema
//! version 10, written by `examples/v10_fixture.rs`) opens with today's code, which migrates it
//! to the twin layout of version 11, and reads back exactly what the same writes put into a
//! fresh store; a migration stopped part way picks up where it stopped. Likewise
//! `tests/fixtures/v15.sqlite` (schema version 15, registry entries in full) and migration 16,
//! which packs the entries.
#![allow(clippy::unwrap_used)] // a panic here fails a test; it never reaches the hub

#[path = "fixtures/v10.rs"]
mod v10;
#[path = "fixtures/v15.rs"]
mod v15;

use std::path::{Path, PathBuf};

use fleethub_query::{Dialect, Page, Query};
use fleethub_store::{JobReads, QueryRow, Reads, Store, StoreConfig};
use serde_json::json;
use tempfile::TempDir;

/// A committed fixture: `tests/fixtures/{name}`.
fn fixture_named(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn fixture() -> PathBuf {
    fixture_named("v10.sqlite")
}

/// A copy of `fixture` in its own directory (opening a database writes to it).
fn copy_of(fixture: PathBuf, dir: &TempDir) -> PathBuf {
    let path = dir.path().join("fleethub.db");
    std::fs::copy(fixture, &path).unwrap();
    path
}

fn copy_of_fixture(dir: &TempDir) -> PathBuf {
    copy_of(fixture(), dir)
}

fn schema_version(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

/// What a fresh store holding the fixture's writes shows, to compare a migrated one with.
async fn fresh_snapshot() -> Vec<String> {
    let dir = TempDir::new().unwrap();
    let fresh = Store::open(StoreConfig::new(dir.path().join("fleethub.db"))).unwrap();
    v10::write(&fresh).await;
    let lines = v10::snapshot(&fresh).await;
    fresh.close();
    lines
}

fn assert_same(migrated: &[String], fresh: &[String]) {
    assert_eq!(migrated.len(), fresh.len());
    for (a, b) in migrated.iter().zip(fresh) {
        assert_eq!(a, b);
    }
}

fn count(path: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

#[test]
fn the_fixture_is_a_small_version_10_database() {
    assert_eq!(schema_version(&fixture()), 10);
    let size = std::fs::metadata(fixture()).unwrap().len();
    assert!(size < 512 * 1024, "{size} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_v10_fixture_reads_back_what_was_written() {
    let old = TempDir::new().unwrap();
    let path = copy_of_fixture(&old);
    let migrated = Store::open(StoreConfig::new(&path)).unwrap();
    let from_fixture = v10::snapshot(&migrated).await;
    assert_same(&from_fixture, &fresh_snapshot().await);
    // And what it holds is what the fixture means to hold, not two empty stores agreeing.
    let devices = from_fixture
        .iter()
        .filter(|l| l.starts_with("device: "))
        .count();
    assert_eq!(devices, v10::DEVICES - 1);
    migrated.close();
    // The new layout: JSONB values, metadata in its own table, no copy left behind.
    assert_eq!(schema_version(&path), 16);
    let sql = "SELECT count(*) FROM devices WHERE typeof(tags) = 'blob' \
               AND typeof(desired) = 'blob' AND typeof(reported) = 'blob'";
    assert_eq!(count(&path, sql), (v10::DEVICES - 1) as i64);
    // Migration 15: every metadata tree packed (dev-01's reported keeps the path its report
    // touched, not its other leaves); the copy is gone.
    assert_eq!(unpacked(&path, "twin_metadata"), 0);
    let sql = "SELECT count(*) FROM twin_metadata WHERE reported LIKE '{\"$default\":%'";
    assert_eq!(count(&path, sql), (v10::DEVICES - 1) as i64);
    let sql = "SELECT count(*) FROM twin_metadata JOIN devices USING (row) \
               WHERE device_id = 'dev-01' AND json_type(twin_metadata.reported, '$.sensors.pm25') \
               = 'object' AND json_type(twin_metadata.reported, '$.sensors.temp') IS NULL";
    assert_eq!(count(&path, sql), 1);
    let sql = "SELECT count(*) FROM sqlite_schema WHERE name = 'twin_metadata_packed'";
    assert_eq!(count(&path, sql), 0);
    let sql = "SELECT count(*) FROM sqlite_schema WHERE name = 'devices_v11'";
    assert_eq!(count(&path, sql), 0);
    // Migration 13: the tag index holds every tag leaf, kept by the store's writes, not triggers.
    let sql = "SELECT count(*) FROM devices AS d, json_tree(d.tags) AS t \
               WHERE t.type NOT IN ('object', 'array')";
    let leaves = count(&path, sql);
    assert!(leaves > 0);
    assert_eq!(count(&path, "SELECT count(*) FROM device_tags"), leaves);
    // Migration 14: a device's rollout records, found by the device; written before the
    // migration, they carry no time.
    let sql = "SELECT count(*) FROM rollout_devices INDEXED BY rollout_devices_device \
               WHERE device_id = 'dev-00' AND updated_ms IS NULL";
    assert_eq!(count(&path, sql), 1);
    let sql = "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger' AND name LIKE '%tags%'";
    assert_eq!(count(&path, sql), 0);
}

/// A migration killed part way (here: stopped after whole chunks had committed) leaves the
/// database at version 10 with the old table whole; the next start copies the rest and ends
/// with every twin as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_stopped_part_way_picks_up_where_it_stopped() {
    let dir = TempDir::new().unwrap();
    let path = copy_of_fixture(&dir);
    assert!(!Store::migrate_partly(&path, 10).unwrap());
    assert_eq!(schema_version(&path), 10);
    assert_eq!(count(&path, "SELECT count(*) FROM devices_v11"), 10);
    assert_eq!(count(&path, "SELECT count(*) FROM twin_metadata"), 10);
    assert_eq!(count(&path, "SELECT count(*) FROM devices"), 23);
    // Stopped again, further on: it resumed after the last copied id.
    assert!(!Store::migrate_partly(&path, 5).unwrap());
    assert_eq!(count(&path, "SELECT count(*) FROM devices_v11"), 15);

    let store = Store::open(StoreConfig::new(&path)).unwrap();
    assert_same(&v10::snapshot(&store).await, &fresh_snapshot().await);
    store.close();
    assert_eq!(schema_version(&path), 16);
    assert_eq!(count(&path, "SELECT count(*) FROM twin_metadata"), 23);
}

/// How many rows of `table` still hold a full metadata tree that has a stamp (an empty tree
/// stays as it is).
fn unpacked(path: &Path, table: &str) -> i64 {
    let sql = format!(
        "SELECT count(*) FROM {table} \
         WHERE (desired NOT LIKE '{{\"$default\":%' AND desired != '{{}}') \
            OR (reported NOT LIKE '{{\"$default\":%' AND reported != '{{}}')"
    );
    count(path, &sql)
}

/// Migration 15 packs the metadata of a database written by the previous layout into a copy of
/// the table, in chunks: a run stopped part way leaves version 15 with the first rows copied
/// packed and `twin_metadata` untouched, and the next start copies the rest and swaps the
/// tables; the twins read back as a fresh store's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_packing_stopped_part_way_picks_up_where_it_stopped() {
    let dir = TempDir::new().unwrap();
    let path = copy_of_fixture(&dir);
    // The layout copy stops after 10 devices, finishes on the next run (13 more, fewer than
    // its 14), which then packs 14 rows and stops; a third run packs 5 more.
    assert!(!Store::migrate_partly(&path, 10).unwrap());
    assert_eq!(schema_version(&path), 10);
    assert!(!Store::migrate_partly(&path, 14).unwrap());
    assert_eq!(schema_version(&path), 16);
    let copied = "SELECT count(*) FROM twin_metadata_packed";
    assert_eq!(count(&path, copied), 14);
    assert_eq!(unpacked(&path, "twin_metadata_packed"), 0);
    let first_rows = "SELECT count(*) FROM twin_metadata_packed AS p JOIN \
        (SELECT row FROM twin_metadata ORDER BY row LIMIT 14) USING (row)";
    assert_eq!(count(&path, first_rows), 14);
    assert_eq!(unpacked(&path, "twin_metadata"), 23);
    assert!(!Store::migrate_partly(&path, 5).unwrap());
    assert_eq!(count(&path, copied), 19);
    assert_eq!(unpacked(&path, "twin_metadata_packed"), 0);

    let store = Store::open(StoreConfig::new(&path)).unwrap();
    assert_same(&v10::snapshot(&store).await, &fresh_snapshot().await);
    store.close();
    assert_eq!(unpacked(&path, "twin_metadata"), 0);
    let sql = "SELECT count(*) FROM sqlite_schema WHERE name = 'twin_metadata_packed'";
    assert_eq!(count(&path, sql), 0);
}

/// Between a stopped migration and the next start, an older build may run and change rows
/// that were already copied: the migration copies those again, and drops a deleted one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_an_older_build_changed_during_a_stopped_migration_are_copied_again() {
    let dir = TempDir::new().unwrap();
    let path = copy_of_fixture(&dir);
    assert!(!Store::migrate_partly(&path, 12).unwrap());
    {
        // What version 10 would write: dev-01's reported replaced, dev-02 deleted.
        let conn = rusqlite::Connection::open(&path).unwrap();
        let reported = json!({ "values": { "late": true }, "metadata": { "late": {} },
                               "version": 9 });
        conn.execute(
            "UPDATE devices SET reported = ?1, twin_version = twin_version + 1
             WHERE device_id = 'dev-01'",
            [reported.to_string()],
        )
        .unwrap();
        conn.execute("DELETE FROM devices WHERE device_id = 'dev-02'", [])
            .unwrap();
    }
    let store = Store::open(StoreConfig::new(&path)).unwrap();
    let (d1, d2) = store
        .read(|tx| Ok((tx.get_device("dev-01")?.unwrap(), tx.get_device("dev-02")?)))
        .await
        .unwrap();
    assert_eq!(d1.reported["values"], json!({ "late": true }));
    assert_eq!(d1.reported["version"], json!(9));
    assert_eq!(d1.twin_version, 3);
    assert!(d2.is_none());
    let counts = store.read(|tx| tx.device_counts()).await.unwrap();
    assert_eq!(counts.total, 22);
    store.close();
    assert_eq!(count(&path, "SELECT count(*) FROM twin_metadata"), 22);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_v10_fixture_holds_twins_jobs_and_the_rest() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(StoreConfig::new(copy_of_fixture(&dir))).unwrap();
    let checked = store
        .read(|tx| {
            // A twin after a reported patch: values, nested metadata and versions.
            let d = tx.get_device("dev-01")?.unwrap();
            assert_eq!(d.twin_version, 2);
            assert_eq!(d.twin_etag, "etag-0002");
            assert_eq!(d.reported["values"]["sensors"]["pm25"], json!(41));
            assert_eq!(d.reported["values"]["sensors"]["humidity"], json!(0.5));
            assert_eq!(d.reported["version"], json!(2));
            let pm25 = &d.reported["metadata"]["sensors"]["pm25"]["$lastUpdated"];
            assert_eq!(pm25, &json!(v10::at(101)));
            let temp = &d.reported["metadata"]["sensors"]["temp"]["$lastUpdated"];
            assert_eq!(temp, &json!(v10::at(1)));
            // Desired and tags after an operator's patch, and the registry.
            let d = tx.get_device("dev-02")?.unwrap();
            assert_eq!(d.tags["floor"], json!(9));
            assert_eq!(d.tags["location"]["room"], json!("r-2"));
            assert_eq!(
                d.desired["values"]["telemetry"],
                json!({ "intervalSecs": 300 })
            );
            assert_eq!(
                d.desired["metadata"]["telemetry"]["$lastUpdatedVersion"],
                json!(2)
            );
            assert_eq!(tx.get_device("dev-03")?.unwrap().revision, 2);
            assert_eq!(tx.get_device("dev-22")?.unwrap().status, "disabled");
            assert!(tx.get_device(v10::DELETED)?.is_none());
            let empty = tx.get_device("dev-23")?.unwrap();
            assert_eq!(empty.tags, json!({}));
            assert_eq!(empty.reported["values"], json!({}));
            // Kept job counts match the rows.
            let counts = tx.job_device_counts("job-twin-1")?;
            assert_eq!(
                (counts.completed, counts.failed, counts.total()),
                (9, 1, 10)
            );
            let counts = tx.job_device_counts("job-method-2")?;
            assert_eq!(
                (
                    counts.pending,
                    counts.scheduled,
                    counts.running,
                    counts.completed
                ),
                (0, 1, 1, 1)
            );
            // The tag index answers tag equality.
            let q =
                Query::parse("SELECT deviceId FROM devices WHERE tags.building = 'b-01'").unwrap();
            let page = Page {
                limit: 100,
                continuation: None,
            };
            let compiled = q.compile(&page, Dialect::Sqlite).unwrap();
            assert!(tx.query_plan(&compiled)?.contains("device_tags"));
            let ids: Vec<QueryRow> = tx.run_query(&compiled)?.rows;
            let want: Vec<QueryRow> = (0..v10::DEVICES - 1)
                .filter(|i| i % 3 == 1 && format!("dev-{i:02}") != v10::DELETED)
                .map(|i| QueryRow::Document(json!({ "deviceId": format!("dev-{i:02}") })))
                .collect();
            assert_eq!(ids, want);
            Ok(true)
        })
        .await
        .unwrap();
    assert!(checked);
    store.close();
}

fn v15_fixture() -> PathBuf {
    fixture_named("v15.sqlite")
}

fn copy_of_v15_fixture(dir: &TempDir) -> PathBuf {
    copy_of(v15_fixture(), dir)
}

/// What a fresh store holding the v15 fixture's writes shows.
async fn fresh_v15_snapshot() -> Vec<String> {
    let dir = TempDir::new().unwrap();
    let fresh = Store::open(StoreConfig::new(dir.path().join("fleethub.db"))).unwrap();
    v15::write(&fresh).await;
    let lines = v15::snapshot(&fresh).await;
    fresh.close();
    lines
}

/// `(device_id, identity)` of every row, as stored.
fn stored_entries(path: &Path) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT device_id, identity FROM devices ORDER BY device_id")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    rows
}

#[test]
fn the_v15_fixture_is_a_small_version_15_database_with_full_entries() {
    assert_eq!(schema_version(&v15_fixture()), 15);
    let entries = stored_entries(&v15_fixture());
    assert_eq!(entries.len(), v15::DEVICES);
    for (i, (id, text)) in entries.iter().enumerate() {
        assert_eq!(id, &format!("dev-{i:02}"));
        // Stored as version 15 stored it: the entry in full, as its JSON text.
        assert_eq!(text, &v15::expected_entry(i).to_string());
    }
}

/// Migration 16 packs the entries of a database written by schema version 15; every entry reads
/// back as it was written (key order included), through every read and query, exactly as a
/// fresh store holding the same writes shows it, and `lastActivityTime` answers queries as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_v15_fixture_reads_back_every_entry_as_written_with_entries_packed() {
    let dir = TempDir::new().unwrap();
    let path = copy_of_v15_fixture(&dir);
    let hub_shaped = "SELECT sum(length(identity)) FROM devices WHERE device_id < 'dev-09'";
    let before: i64 = count(&path, hub_shaped);
    let store = Store::open(StoreConfig::new(&path)).unwrap();
    let migrated = v15::snapshot(&store).await;
    assert_same(&migrated, &fresh_v15_snapshot().await);
    let entries = store
        .read(|tx| {
            (0..v15::DEVICES)
                .map(|i| Ok(tx.get_device_entry(&format!("dev-{i:02}"))?.unwrap()))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .unwrap();
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.identity.to_string(), v15::expected_entry(i).to_string());
    }
    // The registry field the query language reads: dev-07 alone has activity.
    let recent = migrated
        .iter()
        .find(|l| l.starts_with("SELECT deviceId FROM devices WHERE lastActivityTime >"))
        .unwrap();
    assert!(recent.contains("dev-07"), "{recent}");
    assert_eq!(recent.matches("dev-").count(), 1, "{recent}");
    // A new device's time, left out of the packed text, is filled back in for the query: every
    // hub-shaped entry but dev-07's (dev-10's and dev-11's have no such field).
    let never = migrated
        .iter()
        .find(|l| l.starts_with("SELECT deviceId FROM devices WHERE lastActivityTime ="))
        .unwrap();
    for i in (0..10).filter(|&i| i != 7) {
        assert!(never.contains(&format!("dev-{i:02}")), "{never}");
    }
    assert_eq!(never.matches("dev-").count(), 9, "{never}");
    store.close();
    assert_eq!(schema_version(&path), 16);
    let sql = "SELECT count(*) FROM sqlite_schema WHERE name = 'entry_packing'";
    assert_eq!(count(&path, sql), 0);
    // The hub-shaped entries are packed; the three of other shapes are kept in full (dev-11's
    // wrapped, since its first key is the marker).
    let packed: Vec<String> = stored_entries(&path)
        .into_iter()
        .filter(|(_, text)| text.starts_with("{\"$entry\":1"))
        .map(|(id, _)| id)
        .collect();
    let want: Vec<String> = (0..9).map(|i| format!("dev-{i:02}")).collect();
    assert_eq!(packed, want);
    let after: i64 = count(&path, hub_shaped);
    assert!(after * 2 < before, "{before} -> {after} bytes");
    // dev-11's entry, whose first key is the marker, was full text in version 15 that reads like
    // a packed one; migrated, it is stored wrapped and reads back as it was (the snapshot).
    let sql = "SELECT count(*) FROM devices WHERE device_id = 'dev-11' \
               AND identity LIKE '{\"$entry\":0,\"full\":{\"$entry\":1,%'";
    assert_eq!(count(&path, sql), 1);
}

/// Migration 16 stopped part way (whole chunks packed) leaves version 16 with the first rows
/// packed and the rest in full; the next start packs the rest after the row it stopped at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_packing_stopped_part_way_picks_up_where_it_stopped() {
    let dir = TempDir::new().unwrap();
    let path = copy_of_v15_fixture(&dir);
    // (dev-11's full text in version 15 starts like a packed one; it is not counted.)
    let packed = "SELECT count(*) FROM devices WHERE identity LIKE '{\"$entry\":1%' \
                  AND device_id != 'dev-11'";
    assert!(!Store::migrate_partly(&path, 4).unwrap());
    assert_eq!(schema_version(&path), 16);
    assert_eq!(count(&path, packed), 4);
    assert_eq!(count(&path, "SELECT after FROM entry_packing"), 4);
    let first_rows = "SELECT count(*) FROM (SELECT identity FROM devices ORDER BY row LIMIT 4)                       WHERE identity LIKE '{\"$entry\":1%'";
    assert_eq!(count(&path, first_rows), 4);
    assert!(!Store::migrate_partly(&path, 3).unwrap());
    assert_eq!(count(&path, packed), 7);

    let store = Store::open(StoreConfig::new(&path)).unwrap();
    assert_same(&v15::snapshot(&store).await, &fresh_v15_snapshot().await);
    store.close();
    assert_eq!(count(&path, packed), 9);
    let sql = "SELECT count(*) FROM sqlite_schema WHERE name = 'entry_packing'";
    assert_eq!(count(&path, sql), 0);
}
