//! The SQL executor against a real store: paging, TOP, grouping, index use, odd keys, jobs.

use std::collections::HashSet;

use fleethub_query::{Condition, Dialect, Page, Query, QueryError};
use fleethub_store::{QueryRow, QueryRows, Reads, Store};
use serde_json::{json, Value};

use super::{device, insert_all, open_store, run_compiled, runtime, selected, twin};

fn page(limit: usize, continuation: Option<String>) -> Page {
    Page {
        limit,
        continuation,
    }
}

async fn run(store: &Store, query: &Query, p: Page) -> Result<QueryRows, QueryError> {
    let compiled = query.compile(&p, store.dialect())?;
    Ok(run_compiled(store, compiled).await.expect("query runs"))
}

fn ids(p: &QueryRows) -> Vec<String> {
    p.rows
        .iter()
        .map(|r| match r {
            QueryRow::Device(d) => d.device_id.clone(),
            QueryRow::DeviceJob(j) => j.device_id.clone(),
            QueryRow::Document(d) => d["deviceId"].as_str().unwrap_or("?").to_string(),
        })
        .collect()
}

async fn numbered_store(n: usize) -> (Store, tempfile::TempDir) {
    let (store, dir) = open_store(HashSet::from(["d03".to_string()]));
    let rows = (0..n)
        .map(|i| {
            device(
                &format!("d{i:02}"),
                json!({"site": if i % 3 == 0 { "north" } else { "south" }, "n": i}),
                json!({}),
                json!({"temp": i as f64 + 0.5}),
            )
        })
        .collect();
    insert_all(&store, rows).await;
    (store, dir)
}

#[test]
fn pages_follow_the_key_and_end_without_an_empty_page() {
    runtime().block_on(async {
        let (store, _dir) = numbered_store(7).await;
        let q = Query::parse("SELECT * FROM devices").unwrap();
        let mut seen = Vec::new();
        let mut token = None;
        let mut pages = 0;
        loop {
            let p = run(&store, &q, page(3, token.take())).await.unwrap();
            pages += 1;
            seen.extend(ids(&p));
            match p.continuation {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        let expected: Vec<String> = (0..7).map(|i| format!("d{i:02}")).collect();
        assert_eq!(seen, expected);
    });
}

#[test]
fn paging_is_stable_under_concurrent_inserts_and_deletes() {
    runtime().block_on(async {
        let (store, _dir) = numbered_store(6).await;
        let q = Query::parse("SELECT deviceId FROM devices").unwrap();
        let first = run(&store, &q, page(3, None)).await.unwrap();
        assert_eq!(ids(&first), ["d00", "d01", "d02"]);
        // Between pages: a device before the cursor appears, one after it goes.
        store
            .write(|tx| {
                tx.insert_device(&device("d015", json!({}), json!({}), json!({})))?;
                tx.delete_device("d04", 1)?;
                Ok::<_, fleethub_store::StoreError>(())
            })
            .await
            .unwrap();
        let second = run(&store, &q, page(3, first.continuation)).await.unwrap();
        assert_eq!(ids(&second), ["d03", "d05"]);
        assert_eq!(second.continuation, None);
    });
}

#[test]
fn top_caps_the_total_across_pages() {
    runtime().block_on(async {
        let (store, _dir) = numbered_store(7).await;
        let q = Query::parse("SELECT TOP 5 deviceId FROM devices WHERE tags.n >= 1").unwrap();
        let p1 = run(&store, &q, page(3, None)).await.unwrap();
        assert_eq!(ids(&p1), ["d01", "d02", "d03"]);
        let p2 = run(&store, &q, page(3, p1.continuation)).await.unwrap();
        assert_eq!(ids(&p2), ["d04", "d05"]);
        assert_eq!(p2.continuation, None);
        let exact = Query::parse("SELECT TOP 3 deviceId FROM devices").unwrap();
        let p = run(&store, &exact, page(3, None)).await.unwrap();
        assert_eq!((p.rows.len(), p.continuation), (3, None));
    });
}

#[test]
fn malformed_or_foreign_tokens_are_query_errors() {
    let q = Query::parse("SELECT * FROM devices").unwrap();
    for bad in ["not base64!", "eyJ2IjoxfQ", "", "e30"] {
        let err = q
            .compile(&page(10, Some(bad.into())), Dialect::Sqlite)
            .unwrap_err();
        assert!(err.message.contains("malformed"), "{bad}: {}", err.message);
    }
    let compiled = q.compile(&page(1, None), Dialect::Sqlite).unwrap();
    let token = compiled.continuation_after(1, &["d01".into()]).unwrap();
    assert!(q
        .compile(&page(1, Some(token.clone())), Dialect::Sqlite)
        .is_ok());
    let other = Query::parse("SELECT deviceId FROM devices").unwrap();
    let err = other
        .compile(&page(1, Some(token)), Dialect::Sqlite)
        .unwrap_err();
    assert!(err.message.contains("different query"), "{}", err.message);
}

#[test]
fn projections_name_columns_and_omit_undefined_values() {
    runtime().block_on(async {
        let (store, _dir) = numbered_store(4).await;
        let q = Query::parse(
            "SELECT deviceId, tags.site, tags.nope, properties.reported.temp AS t, \
             connectionState FROM devices WHERE deviceId IN ['d02', 'd03']",
        )
        .unwrap();
        let p = run(&store, &q, page(100, None)).await.unwrap();
        let docs: Vec<Value> = p
            .rows
            .into_iter()
            .map(|r| match r {
                QueryRow::Document(d) => d,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            docs,
            [
                json!({"deviceId": "d02", "site": "south", "t": 2.5, "connectionState": "Disconnected"}),
                json!({"deviceId": "d03", "site": "north", "t": 3.5, "connectionState": "Connected"}),
            ]
        );
    });
}

#[test]
fn group_by_counts_and_aggregates_over_the_store() {
    runtime().block_on(async {
        let (store, _dir) = numbered_store(7).await;
        let text = "SELECT tags.site AS site, COUNT() AS n, SUM(tags.n) AS total, \
                    MAX(properties.reported.temp) AS hottest FROM devices GROUP BY tags.site";
        let q = Query::parse(text).unwrap();
        let p = run(&store, &q, page(1, None)).await.unwrap();
        let expected = vec![
            json!({"site": "north", "n": 3, "total": 9, "hottest": 6.5}),
            json!({"site": "south", "n": 4, "total": 12, "hottest": 5.5}),
        ];
        let got: Vec<Value> = p
            .rows
            .iter()
            .map(|r| match r {
                QueryRow::Document(d) => d.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got, expected);
        assert_eq!(p.continuation, None);
        let count = Query::parse("SELECT COUNT() AS n FROM devices WHERE tags.n > 100").unwrap();
        let p = run(&store, &count, page(10, None)).await.unwrap();
        assert_eq!(p.rows, [QueryRow::Document(json!({"n": 0}))]);
    });
}

async fn plan(store: &Store, where_clause: &str) -> String {
    let q = Query::parse(&format!("SELECT * FROM devices WHERE {where_clause}")).expect("parses");
    let compiled = q
        .compile(&page(10, None), store.dialect())
        .expect("compiles");
    store
        .read(move |r| r.query_plan(&compiled))
        .await
        .expect("SQLite plans it")
}

#[test]
fn tag_equality_uses_the_tag_index_and_device_ids_the_primary_key() {
    runtime().block_on(async {
        let (store, _dir) = numbered_store(3).await;
        for cond in [
            "tags.site = 'north'",
            "tags.n = 2",
            "tags.site IN ['north', 'east']",
            "tags.[[odd key]] = true",
        ] {
            let p = plan(&store, cond).await;
            assert!(p.contains("device_tags USING PRIMARY KEY"), "{cond}:\n{p}");
        }
        for cond in ["deviceId = 'd01'", "deviceId IN ['d01', 'd02']"] {
            let p = plan(&store, cond).await;
            assert!(
                p.contains("INDEX sqlite_autoindex_devices_1 (device_id=?)"),
                "{cond}:\n{p}"
            );
        }
    });
}

#[test]
fn odd_keys_are_found_by_lookups_and_the_tag_index() {
    runtime().block_on(async {
        let (store, _dir) = open_store(HashSet::new());
        let keys = [
            "plain",
            "snake_case",
            "dash-ed",
            "sp ace",
            "dot.ted",
            "quo\"te",
            "back\\slash",
            "é",
            "$dollar",
            "it's",
            "9lives",
        ];
        let mut tags = serde_json::Map::new();
        for k in keys {
            tags.insert(k.to_string(), json!({"v": k}));
        }
        let row = device("odd", Value::Object(tags), json!({}), json!({}));
        insert_all(&store, vec![row.clone()]).await;
        let doc = twin(&row, false);
        for k in keys {
            let text = format!(
                "tags.[[{k}]].v = '{}'",
                k.replace('\\', "\\\\").replace('\'', "\\'")
            );
            let cond = Condition::parse(&text).unwrap();
            assert!(cond.matches(&doc), "evaluator: {text}");
            let ids = selected(&store, &cond).await.unwrap();
            assert_eq!(ids, ["odd"], "sql: {text}");
        }
    });
}

#[test]
fn device_jobs_rows_are_queried_and_paged_by_job_then_device() {
    runtime().block_on(async {
        let (store, dir) = open_store(HashSet::new());
        // Rows as the job engine leaves them, written on a second connection to the file.
        let raw = rusqlite::Connection::open(dir.path().join("db.sqlite")).unwrap();
        let mut stmt = raw
            .prepare(
                "INSERT INTO job_devices (job_id, device_id, job_type, status, created_time, \
                 start_time, end_time, updated_time, outcome, error) \
                 VALUES (?1, ?2, 'scheduleDeviceMethod', ?3, '2024-05-01T10:00:00Z', \
                 NULL, NULL, '2024-05-01T10:00:01Z', ?4, ?5)",
            )
            .unwrap();
        for (job, dev, status, outcome, error) in [
            ("j1", "a", "completed", Some(r#"{"deviceMethodResponse":{"status":200,"payload":{"ok":true}}}"#), None),
            ("j1", "b", "failed", None, Some(r#"{"code":"DeviceNotOnline","description":"offline"}"#)),
            ("j2", "a", "completed", Some(r#"{"deviceMethodResponse":{"status":500,"payload":null}}"#), None),
        ] {
            stmt.execute(rusqlite::params![job, dev, status, outcome, error])
                .unwrap();
        }
        let all = Query::parse("SELECT * FROM devices.jobs").unwrap();
        let rows = run(&store, &all, page(10, None)).await.unwrap();
        let failed = rows.rows.iter().find_map(|r| match r {
            QueryRow::DeviceJob(j) if j.device_id == "b" => Some(j.clone()),
            _ => None,
        });
        let failed = failed.expect("SELECT * returns job rows");
        assert_eq!(failed.status.as_str(), "failed");
        assert_eq!(failed.error.unwrap()["code"], "DeviceNotOnline");
        let q = Query::parse(
            "SELECT jobId, deviceId, outcome.deviceMethodResponse.status AS code, error.code AS err \
             FROM devices.jobs WHERE devices.jobs.status = 'completed' OR IS_DEFINED(error)",
        )
        .unwrap();
        let p1 = run(&store, &q, page(2, None)).await.unwrap();
        let p2 = run(&store, &q, page(2, p1.continuation.clone())).await.unwrap();
        let docs: Vec<Value> = p1
            .rows
            .iter()
            .chain(&p2.rows)
            .map(|r| match r {
                QueryRow::Document(d) => d.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            docs,
            [
                json!({"jobId": "j1", "deviceId": "a", "code": 200}),
                json!({"jobId": "j1", "deviceId": "b", "err": "DeviceNotOnline"}),
                json!({"jobId": "j2", "deviceId": "a", "code": 500}),
            ]
        );
        assert!(p2.continuation.is_none());
    });
}
