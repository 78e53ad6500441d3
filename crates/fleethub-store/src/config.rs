//! How to open a store.

use std::path::PathBuf;
use std::sync::Arc;

/// Answers whether a device is connected right now (`connectionState` in queries and job
/// conditions is live, not stored): given to the store by the hub ([`crate::Store::set_presence`]).
pub type Presence = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The node name of a store opened without one: a single hub.
pub const DEFAULT_NODE: &str = "local";

/// Where the SQLite store lives and how much concurrency it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The SQLite database file; it and its parent directory are created when missing.
    pub path: PathBuf,
    /// How many read connections the pool holds (reads beyond this wait their turn).
    pub read_connections: usize,
    /// The most writes the writer commits in one transaction.
    pub max_batch: usize,
    /// The most bytes the database file may grow to (SQLite's `max_page_count`); a write that
    /// needs more fails as [`crate::StoreError::Full`], as on a full disk. `None`: the disk is
    /// the limit. A limit below the current size holds the database at its current size.
    pub max_size_bytes: Option<u64>,
    /// Names the process that opens the store. A job device row moved to `running` (a method
    /// call in flight) is owned by its node, and recovery after a crash fails only the rows its
    /// own node owns, so a second node sharing the store never fails the first one's calls.
    /// Keep it the same across restarts of one node.
    pub node: String,
    /// How an aggregate query over devices ([`crate::Store::query`]) is split over the read
    /// connections so its scan uses every core.
    pub split: SplitScans,
}

/// How [`crate::Store::query`] splits an aggregate over devices into parts by row key, each on
/// its own read connection, and merges them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitScans {
    /// Parts per query (at most the read connections); 1 scans on one connection.
    pub parts: usize,
    /// A table whose row keys span fewer than this many rows is scanned on one connection:
    /// below it the hand-off to more threads costs more than it saves.
    pub min_rows: u64,
}

impl Default for SplitScans {
    /// One part per core, from 10,000 rows.
    fn default() -> Self {
        SplitScans {
            parts: std::thread::available_parallelism().map_or(1, |n| n.get()),
            min_rows: 10_000,
        }
    }
}

impl StoreConfig {
    /// A store at `path` with the default pool size (4) and batch size (1024), scans split
    /// as [`SplitScans::default`].
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StoreConfig {
            path: path.into(),
            read_connections: 4,
            max_batch: 1024,
            max_size_bytes: None,
            node: DEFAULT_NODE.to_string(),
            split: SplitScans::default(),
        }
    }
}
