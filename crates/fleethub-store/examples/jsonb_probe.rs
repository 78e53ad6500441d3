//! Measures what a twin scan costs per row with the reported section stored as JSON text versus
//! JSONB (docs/benchmarks.md): `cargo run --release -p fleethub-query --example jsonb_probe`.
#![allow(clippy::unwrap_used)] // a panic here fails a test or a probe; it never reaches the hub

use std::time::Instant;

const ROWS: u32 = 200_000;
const STAMP: &str = "2026-11-01T02:00:00.0000000Z";

/// A reported section shaped like the benchmark fleet's, with its `$metadata` tree.
fn reported(i: u32) -> String {
    let leaf = || serde_json::json!({ "$lastUpdated": STAMP });
    serde_json::json!({
        "values": {
            "firmware": {"current_version": "2.1.0", "status": "success", "progress": 100, "last_update_time": STAMP},
            "sensors": {"pm25": f64::from(i % 90) / 2.0, "temperature": 18.5, "humidity": 41},
            "network": {"rssi": -40, "ip": "10.1.2.3", "ssid": "fleet-iot"},
            "uptimeSeconds": i,
        },
        "metadata": {
            "$lastUpdated": STAMP,
            "firmware": {"$lastUpdated": STAMP, "current_version": leaf(), "status": leaf(), "progress": leaf(), "last_update_time": leaf()},
            "sensors": {"$lastUpdated": STAMP, "pm25": leaf(), "temperature": leaf(), "humidity": leaf()},
            "network": {"$lastUpdated": STAMP, "rssi": leaf(), "ip": leaf(), "ssid": leaf()},
            "uptimeSeconds": leaf(),
        },
        "version": 3,
    })
    .to_string()
}

fn main() -> rusqlite::Result<()> {
    let conn = rusqlite::Connection::open_in_memory()?;
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, r TEXT, b BLOB)")?;
    let tx = conn.unchecked_transaction()?;
    for i in 0..ROWS {
        tx.execute("INSERT INTO t (r, b) VALUES (?1, jsonb(?1))", [reported(i)])?;
    }
    tx.commit()?;
    let scan = |col: &str| {
        format!(
            "SELECT COUNT(*) FROM t WHERE CASE WHEN json_type({col}, '$.values.sensors.pm25') \
             IN ('integer', 'real') THEN ({col} ->> '$.values.sensors.pm25') > 40 ELSE 0 END"
        )
    };
    let group = |col: &str| {
        format!("SELECT COUNT(*) FROM (SELECT {col} -> '$.values.firmware.current_version' AS v, COUNT(*) FROM t GROUP BY v)")
    };
    for (name, sql) in [
        ("scan, text", scan("r")),
        ("scan, jsonb", scan("b")),
        ("group by, text", group("r")),
        ("group by, jsonb", group("b")),
    ] {
        let started = Instant::now();
        let n: i64 = conn.query_row(&sql, [], |r| r.get(0))?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{name}: {n} in {:.1} ms ({:.2} µs per row)",
            secs * 1e3,
            secs * 1e6 / f64::from(ROWS)
        );
    }
    Ok(())
}
