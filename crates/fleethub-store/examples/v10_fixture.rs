//! Writes `tests/fixtures/v10.sqlite`, the store as schema version 10 wrote it (twins as JSON
//! text with `$metadata` inline), for the migration tests:
//! `cargo run -p fleethub-store --example v10_fixture -- tests/fixtures/v10.sqlite`.
//! Only a build at schema version 10 may regenerate it (`tests/fixtures/v10.rs` says why).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic here fails a generator run

#[path = "../tests/fixtures/v10.rs"]
mod v10;

use fleethub_store::{Store, StoreConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let out = std::env::args()
        .nth(1)
        .expect("usage: v10_fixture OUT.sqlite");
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path().join("fleethub.db"))).unwrap();
    v10::write(&store).await;
    store.close();
    // One compact file without its WAL: what the store wrote, vacuumed into `out`.
    let _ = std::fs::remove_file(&out);
    let conn = rusqlite::Connection::open(dir.path().join("fleethub.db")).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 10, "only schema version 10 may write this fixture");
    conn.execute("VACUUM INTO ?1", [&out]).unwrap();
    println!("wrote {out} (schema version {version})");
}
