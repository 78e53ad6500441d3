//! What can go wrong in the store, and how the hub reports it.

use fleethub_core::{ErrorCode, HubError};

/// A failure inside the store. No database type crosses this boundary: the SQLite backend turns
/// its errors into these variants (`sqlite/errors.rs`), and so will any other backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed a statement for a reason of its own (an I/O error, a damaged file, a
    /// bug in the store's SQL).
    #[error("store: {0}")]
    Engine(String),
    /// No room for the write: the disk is full (`SQLITE_FULL`, `ENOSPC`) or the database reached
    /// its size limit. Nothing of the write was kept; it can be retried once there is space.
    #[error("store is full: {0}")]
    Full(String),
    /// A compiled query or condition is beyond one of the database's limits on statements
    /// (expression depth, result columns, parameters, …); `limit` names it. Nothing was read or
    /// written: a simpler query would run.
    #[error("the query is too complex for the store: {limit}")]
    TooComplex {
        /// The limit, in words (`"Expression tree is too large (maximum depth 1000)"`).
        limit: String,
    },
    /// The database refused a compiled query or condition as written (no such function or
    /// column, wrong parameters): the compiler and the store disagree.
    #[error("the store refused the compiled statement: {0}")]
    Rejected(String),
    /// Another writer changed the row after it was read: the write carried the version it read
    /// and found another one. Nothing of the write was kept; read again and retry.
    #[error("{0} was changed by another writer since it was read")]
    Conflict(String),
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
    /// A file-system failure while `doing` something; a full disk (`ENOSPC`) is [`StoreError::Full`].
    pub fn io(doing: &str, e: &std::io::Error) -> StoreError {
        if e.kind() == std::io::ErrorKind::StorageFull {
            StoreError::Full(format!("{doing}: {e}"))
        } else {
            StoreError::Other(format!("{doing}: {e}"))
        }
    }

    /// Whether this is a [`StoreError::Conflict`]: a write that can be computed again from
    /// current state and retried.
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict(_))
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
            StoreError::TooComplex { .. } => HubError::new(
                ErrorCode::InvalidQuery,
                format!("{e}; split it into simpler queries (fewer terms, less nesting)"),
            ),
            StoreError::Conflict(_) => HubError::new(
                ErrorCode::PreconditionFailed,
                format!("{e}; read it again and retry"),
            ),
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

    /// A statement beyond the database's limits is the caller's query, not the hub's fault: 400
    /// InvalidQuery naming the limit. A conflict is 412, which a client answers by reading again.
    #[test]
    fn too_complex_is_a_400_naming_the_limit_and_a_conflict_a_412() {
        let e = HubError::from(StoreError::TooComplex {
            limit: "Expression tree is too large (maximum depth 1000)".into(),
        });
        assert_eq!(e.code, ErrorCode::InvalidQuery);
        assert_eq!(e.code.http_status(), 400);
        assert!(e.message.contains("maximum depth 1000"), "{}", e.message);
        let e = HubError::from(StoreError::Conflict("twin 'd1'".into()));
        assert_eq!(e.code, ErrorCode::PreconditionFailed);
        assert!(e.message.contains("another writer"), "{}", e.message);
    }
}
