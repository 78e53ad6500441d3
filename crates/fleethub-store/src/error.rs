//! What can go wrong in the store, and how the hub reports it.

use fleethub_core::{ErrorCode, HubError};

/// A failure inside the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused or failed a statement.
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
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
                StoreError::Sqlite(rusqlite::Error::SqliteFailure(*code, msg.clone()))
            }
            other => StoreError::Other(other.to_string()),
        }
    }
}

impl From<StoreError> for HubError {
    fn from(e: StoreError) -> Self {
        let code = match e {
            StoreError::Closed => ErrorCode::ServiceUnavailable,
            _ => ErrorCode::ServerError,
        };
        HubError::new(code, e.to_string())
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
}
