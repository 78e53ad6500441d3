//! Writes `tests/fixtures/v15.sqlite`, the store as schema version 15 wrote it (registry
//! entries as full JSON text), for the migration tests:
//! `cargo run -p fleethub-store --example v15_fixture -- tests/fixtures/v15.sqlite`.
//! Only a build at schema version 15 may regenerate it (`tests/fixtures/v15.rs` says why).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic here fails a generator run

#[path = "../tests/fixtures/v15.rs"]
mod v15;

use fleethub_store::{Store, StoreConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let out = std::env::args()
        .nth(1)
        .expect("usage: v15_fixture OUT.sqlite");
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path().join("fleethub.db"))).unwrap();
    v15::write(&store).await;
    store.close();
    // One compact file without its WAL: what the store wrote, vacuumed into `out`.
    let _ = std::fs::remove_file(&out);
    let conn = rusqlite::Connection::open(dir.path().join("fleethub.db")).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 15, "only schema version 15 may write this fixture");
    conn.execute("VACUUM INTO ?1", [&out]).unwrap();
    println!("wrote {out} (schema version {version})");
}
