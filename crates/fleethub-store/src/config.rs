//! How to open a store.

use std::path::PathBuf;

/// Where the SQLite store lives and how much concurrency it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The SQLite database file; it and its parent directory are created when missing.
    pub path: PathBuf,
    /// How many read connections the pool holds (reads beyond this wait their turn).
    pub read_connections: usize,
    /// The most writes the writer commits in one transaction.
    pub max_batch: usize,
}

impl StoreConfig {
    /// A store at `path` with the default pool size (4) and batch size (1024).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StoreConfig {
            path: path.into(),
            read_connections: 4,
            max_batch: 1024,
        }
    }
}
