//! What can go wrong in the store, and how the hub reports it.

use fleethub_core::{ErrorCode, HubError};

/// A failure inside the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused or failed a statement.
    #[error("store: {0}")]
    Sqlite(rusqlite::Error),
    /// No room for the write: the disk is full (`SQLITE_FULL`, `ENOSPC`) or the database reached
    /// its size limit. Nothing of the write was kept; it can be retried once there is space.
    #[error("store is full: {0}")]
    Full(String),
    /// A JSON column could not be encoded or decoded.
    #[error("store: {0}")]
    Json(#[from] serde_json::Error),
    /// The store was closed; no more work is accepted.
    #[error("store is closed")]
    Closed,
    /// Anything else, described in words.
    #[error("store: {0}")]
    Other(String),
}

impl StoreError {
    /// A copy of `e` for one of several writes that all failed with it (rusqlite errors are not
    /// `Clone`); SQLite failures keep their code so the hub can still tell a full disk from a bug.
    pub(crate) fn shared(e: &rusqlite::Error) -> StoreError {
        match e {
            rusqlite::Error::SqliteFailure(code, msg) => {
                StoreError::from(rusqlite::Error::SqliteFailure(*code, msg.clone()))
            }
            other => StoreError::Other(other.to_string()),
        }
    }

    /// A file-system failure while `doing` something; a full disk (`ENOSPC`) is [`StoreError::Full`].
    pub fn io(doing: &str, e: &std::io::Error) -> StoreError {
        if e.kind() == std::io::ErrorKind::StorageFull {
            StoreError::Full(format!("{doing}: {e}"))
        } else {
            StoreError::Other(format!("{doing}: {e}"))
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull => {
                StoreError::Full(e.to_string())
            }
            _ => StoreError::Sqlite(e),
        }
    }
}

/// What a user is told when the store is full: that nothing was saved, that a retry is safe,
/// and where the operator's steps are.
const FULL_ADVICE: &str = "the change was not saved; retry once the operator has freed space \
     on the data directory's disk (docs/operations.md, \"When the disk is full\")";

impl From<StoreError> for HubError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Closed => HubError::new(ErrorCode::ServiceUnavailable, e.to_string()),
            StoreError::Full(_) => {
                HubError::new(ErrorCode::ServiceUnavailable, format!("{e}; {FULL_ADVICE}"))
            }
            _ => HubError::new(ErrorCode::ServerError, e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_store_is_unavailable_and_other_failures_are_server_errors() {
        let closed = HubError::from(StoreError::Closed);
        assert_eq!(closed.code, ErrorCode::ServiceUnavailable);
        assert_eq!(closed.message, "store is closed");

        let other = HubError::from(StoreError::Other("disk on fire".into()));
        assert_eq!(other.code, ErrorCode::ServerError);
        assert!(other.message.contains("disk on fire"), "{}", other.message);
    }

    /// A full disk answered 500 ServerError, which clients do not retry; it is a 503 that says
    /// the store is full, from SQLite's SQLITE_FULL and from the file system's ENOSPC alike.
    #[test]
    fn disk_full_is_a_retryable_503_that_says_the_store_is_full() {
        let sqlite_full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("database or disk is full".into()),
        );
        let shared = StoreError::shared(&sqlite_full);
        let enospc = StoreError::io(
            "writing the firmware image",
            &std::io::Error::from_raw_os_error(28),
        );
        for e in [StoreError::from(sqlite_full), shared, enospc] {
            assert!(matches!(e, StoreError::Full(_)), "{e:?}");
            let hub = HubError::from(e);
            assert_eq!(hub.code, ErrorCode::ServiceUnavailable);
            assert_eq!(hub.code.http_status(), 503);
            assert!(hub.message.starts_with("store is full"), "{}", hub.message);
            assert!(hub.message.contains("retry"), "{}", hub.message);
        }

        let constraint = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
            None,
        );
        assert_eq!(
            HubError::from(StoreError::from(constraint)).code,
            ErrorCode::ServerError,
            "only a full store is 503"
        );
    }
}
