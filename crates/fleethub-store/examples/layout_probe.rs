//! Compares twin layouts for scans and GROUP BY (docs/benchmarks.md, issue 12):
//! `cargo run --release -p fleethub-store --example layout_probe -- ROWS DIR`.
//! A: today's (text sections with `$metadata` inline); B: JSONB values, metadata in the same row
//! after them; C: JSONB values, metadata in a table of its own; each scan also on two threads.
#![allow(clippy::unwrap_used)] // a panic here fails a probe; it never reaches the hub

use std::time::Instant;

const STAMP: &str = "2026-11-01T02:00:00.0000000Z";

fn meta_of(values: &serde_json::Value, desired: bool) -> serde_json::Value {
    let mut node = serde_json::Map::new();
    node.insert("$lastUpdated".into(), STAMP.into());
    if desired {
        node.insert("$lastUpdatedVersion".into(), 2.into());
    }
    if let Some(obj) = values.as_object() {
        for (k, v) in obj {
            node.insert(k.clone(), meta_of(v, desired));
        }
    }
    serde_json::Value::Object(node)
}

/// (tags, desired values, reported values, identity), shaped like the bench fleet's.
fn twin(i: usize) -> [serde_json::Value; 4] {
    let v = ["1.0.0", "1.1.0", "2.0.0", "2.1.0", "2.9.1", "2.10.0"][(i / 7) % 6];
    let tags = serde_json::json!({"city": "boston", "building": format!("b-{:03}", i % 100), "floor": (i / 100) % 8,
        "environment": "prod", "ring": "broad", "owner": {"team": "air-quality", "contact": "ops@example.com"},
        "location": {"lat": 42.0 + (i % 1000) as f64 / 1000.0, "lon": -71.0 - (i % 997) as f64 / 1000.0}});
    let desired = serde_json::json!({"firmware": {"version": v, "url": format!("https://firmware.example.com/aq-sensor/{v}.bin"),
        "sha256": "9f2c4a7e1b3d5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8", "size": 1048576},
        "config": {"telemetryIntervalSeconds": 60, "pm25Alarm": 35, "ledBrightness": 40}});
    let reported = serde_json::json!({"firmware": {"current_version": v, "status": "success", "progress": 100, "last_update_time": STAMP},
        "sensors": {"pm25": (i % 90) as f64 / 2.0, "temperature": 18.5, "humidity": 41},
        "network": {"rssi": -40 - (i % 50) as i64, "ip": "10.1.2.3", "ssid": "fleet-iot"}, "uptimeSeconds": i * 13 % 864000});
    let identity = serde_json::json!({"deviceId": format!("bench-{i}"), "generationId": "638123456789012345", "etag": "MQ==",
        "status": "enabled", "statusUpdatedTime": STAMP, "connectionStateUpdatedTime": STAMP, "lastActivityTime": STAMP,
        "cloudToDeviceMessageCount": 0, "authentication": {"type": "sas", "symmetricKey": {"primaryKey": "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U=", "secondaryKey": "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U="}, "x509Thumbprint": {"primaryThumbprint": null, "secondaryThumbprint": null}},
        "capabilities": {"iotEdge": false}});
    [tags, desired, reported, identity]
}

fn stored(values: &serde_json::Value, desired: bool) -> String {
    serde_json::json!({"values": values, "metadata": meta_of(values, desired), "version": 2})
        .to_string()
}

fn meta(values: &serde_json::Value, desired: bool) -> String {
    meta_of(values, desired).to_string()
}

const SCHEMAS: [(&str, &str); 3] = [
    ("A text+metadata inline", "CREATE TABLE devices (device_id TEXT PRIMARY KEY, status TEXT, identity TEXT, tags TEXT, desired TEXT, reported TEXT, twin_version INTEGER, twin_etag TEXT, revision INTEGER);"),
    ("B jsonb values, metadata last in the row", "CREATE TABLE devices (device_id TEXT PRIMARY KEY, status TEXT, twin_version INTEGER, revision INTEGER, tags BLOB, reported BLOB, desired BLOB, twin_etag TEXT, identity TEXT, reported_meta TEXT, desired_meta TEXT);"),
    ("C jsonb values, metadata in its own table", "CREATE TABLE devices (row INTEGER PRIMARY KEY, device_id TEXT UNIQUE, status TEXT, twin_version INTEGER, revision INTEGER, tags BLOB, reported BLOB, desired BLOB, twin_etag TEXT, identity TEXT);
     CREATE TABLE twin_metadata (row INTEGER PRIMARY KEY, reported TEXT, desired TEXT);"),
];

fn open(path: &std::path::Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).unwrap();
    c.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))
        .unwrap();
    c.pragma_update(None, "cache_size", -65536).unwrap();
    c
}

fn timed(conn: &rusqlite::Connection, sql: &str) -> (i64, f64) {
    let t = Instant::now();
    let n: i64 = conn.query_row(sql, [], |r| r.get(0)).unwrap();
    (n, t.elapsed().as_secs_f64() * 1e3)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rows: usize = args.next().map_or(100_000, |a| a.parse().unwrap());
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| "/tmp".into()));
    for (n, (name, schema)) in SCHEMAS.iter().enumerate() {
        let path = dir.join(format!("layout_{n}.db"));
        for s in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{s}", path.display()));
        }
        let conn = open(&path);
        conn.execute_batch(schema).unwrap();
        let t = Instant::now();
        let tx = conn.unchecked_transaction().unwrap();
        for i in 0..rows {
            let [tags, desired, reported, identity] = twin(i);
            let id = format!("bench-{i}");
            match n {
                0 => tx.execute("INSERT INTO devices VALUES (?1, 'enabled', ?2, ?3, ?4, ?5, 3, 'e', 1)",
                    rusqlite::params![id, identity.to_string(), tags.to_string(), stored(&desired, true), stored(&reported, false)]).unwrap(),
                1 => tx.execute("INSERT INTO devices VALUES (?1, 'enabled', 3, 1, jsonb(?2), jsonb(?3), jsonb(?4), 'e', ?5, ?6, ?7)",
                    rusqlite::params![id, tags.to_string(), reported.to_string(), desired.to_string(), identity.to_string(), meta(&reported, false), meta(&desired, true)]).unwrap(),
                _ => {
                    tx.execute("INSERT INTO devices (device_id, status, twin_version, revision, tags, reported, desired, twin_etag, identity) VALUES (?1, 'enabled', 3, 1, jsonb(?2), jsonb(?3), jsonb(?4), 'e', ?5)",
                        rusqlite::params![id, tags.to_string(), reported.to_string(), desired.to_string(), identity.to_string()]).unwrap();
                    tx.execute("INSERT INTO twin_metadata VALUES (last_insert_rowid(), ?1, ?2)", [meta(&reported, false), meta(&desired, true)]).unwrap()
                }
            };
        }
        tx.commit().unwrap();
        let insert_ms = t.elapsed().as_secs_f64() * 1e3;
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        let (rep, fw) = if n == 0 {
            (
                "json_extract(reported, '$.values')",
                "'$.values.firmware.current_version'",
            )
        } else {
            ("reported", "'$.firmware.current_version'")
        };
        let pm = if n == 0 {
            "'$.values.sensors.pm25'"
        } else {
            "'$.sensors.pm25'"
        };
        let _ = rep;
        let scan = |range: &str| {
            format!("SELECT count(*) FROM devices WHERE {range} CASE WHEN json_type(reported, {pm}) IN ('integer', 'real') THEN (reported ->> {pm}) > 40 ELSE 0 END")
        };
        let group = |range: &str| {
            format!("SELECT count(*) FROM (SELECT reported -> {fw} AS v, count(*) FROM devices WHERE {range} 1 GROUP BY v)")
        };
        println!(
            "{name}: {rows} rows inserted in {insert_ms:.0} ms, file {:.1} MB ({:.0} B/device)",
            size as f64 / 1e6,
            size as f64 / rows as f64
        );
        for _ in 0..2 {
            let (c, ms) = timed(&conn, &scan(""));
            let (g, gms) = timed(&conn, &group(""));
            // Two threads over halves of the key range.
            let key = if n == 2 { "row" } else { "device_id" };
            let mid: String = conn
                .query_row(
                    &format!("SELECT {key} FROM devices ORDER BY {key} LIMIT 1 OFFSET ?1"),
                    [rows as i64 / 2],
                    |r| {
                        r.get::<_, rusqlite::types::Value>(0).map(|v| match v {
                            rusqlite::types::Value::Integer(i) => i.to_string(),
                            rusqlite::types::Value::Text(t) => format!("'{t}'"),
                            _ => unreachable!(),
                        })
                    },
                )
                .unwrap();
            let t = Instant::now();
            let halves: Vec<_> = [format!("{key} < {mid} AND"), format!("{key} >= {mid} AND")]
                .into_iter()
                .map(|r| {
                    let (p, sql, gsql) = (path.clone(), scan(&r), group(&r));
                    std::thread::spawn(move || {
                        let c = open(&p);
                        let a = timed(&c, &sql).0;
                        let b = timed(&c, &gsql).0;
                        (a, b)
                    })
                })
                .collect();
            let sum: i64 = halves.into_iter().map(|h| h.join().unwrap().0).sum();
            let par = t.elapsed().as_secs_f64() * 1e3;
            println!("  scan {c} in {ms:.0} ms ({:.2} µs/row); group by {g} groups in {gms:.0} ms ({:.2} µs/row); both on two threads {par:.0} ms (scan {sum})",
                ms * 1e3 / rows as f64, gms * 1e3 / rows as f64);
        }
    }
}
