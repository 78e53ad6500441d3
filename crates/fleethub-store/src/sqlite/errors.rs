//! SQLite's errors as the store's own: nothing above the store sees a SQLite code.

use std::cell::RefCell;

use rusqlite::ErrorCode;

use crate::StoreError;

thread_local! {
    /// The last failure on this thread after which SQLite may have rolled back the whole
    /// transaction on its own ([`ends_transactions`]). The writer reads it when a write leaves
    /// the transaction gone, so the batch reports that cause (a full store, say) rather than the
    /// "no such savepoint" its next statement would meet.
    static LAST_ABORT: RefCell<Option<(rusqlite::ffi::Error, Option<String>)>> =
        const { RefCell::new(None) };
}

/// Whether SQLite may answer a failure with this code by rolling back the whole transaction
/// rather than only the statement (SQLite's "Response To Errors Within A Transaction").
fn ends_transactions(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::OutOfMemory
            | ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::DatabaseCorrupt
    )
}

/// Forgets the failure [`take_abort_cause`] would answer: called before each write.
pub(crate) fn clear_abort_cause() {
    LAST_ABORT.with(|last| last.borrow_mut().take());
}

/// The last failure on this thread since [`clear_abort_cause`] that may have ended the
/// transaction, as the SQLite error it was.
pub(crate) fn take_abort_cause() -> Option<rusqlite::Error> {
    LAST_ABORT
        .with(|last| last.borrow_mut().take())
        .map(|(f, msg)| rusqlite::Error::SqliteFailure(f, msg))
}

/// Words in SQLite's messages for a statement past one of its limits (`SQLITE_ERROR` carries
/// no code of its own for these): expression depth, result columns, terms, function arguments,
/// parameters, parser depth, LIKE patterns.
const LIMIT_MESSAGES: &[&str] = &["too large", "too many", "too complex", "stack overflow"];

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::from_sqlite(&e)
    }
}

impl StoreError {
    /// The store's error for a SQLite failure; by reference, so one failure can answer every
    /// write of a batch (rusqlite's errors are not `Clone`).
    pub(crate) fn from_sqlite(e: &rusqlite::Error) -> StoreError {
        match e {
            rusqlite::Error::SqliteFailure(f, msg) => {
                if ends_transactions(f.code) {
                    LAST_ABORT.with(|last| *last.borrow_mut() = Some((*f, msg.clone())));
                }
                let text = msg.clone().unwrap_or_else(|| e.to_string());
                match f.code {
                    ErrorCode::DiskFull => StoreError::Full(text),
                    ErrorCode::TooBig => StoreError::TooComplex { limit: text },
                    ErrorCode::Unknown if names_a_limit(&text) => {
                        StoreError::TooComplex { limit: text }
                    }
                    _ => StoreError::Engine(text),
                }
            }
            other => StoreError::Engine(other.to_string()),
        }
    }

    /// The store's error for a failure of a statement compiled by the query crate: what SQLite
    /// refuses as written (`SQLITE_ERROR`, parameter mismatches) is [`StoreError::Rejected`]
    /// rather than a failure of the store.
    pub(crate) fn from_compiled(e: &rusqlite::Error) -> StoreError {
        match (StoreError::from_sqlite(e), e) {
            (StoreError::Engine(text), rusqlite::Error::SqliteFailure(f, _))
                if f.code == ErrorCode::Unknown =>
            {
                StoreError::Rejected(text)
            }
            (
                _,
                rusqlite::Error::InvalidParameterCount(..)
                | rusqlite::Error::InvalidParameterName(_),
            ) => StoreError::Rejected(e.to_string()),
            (mapped, _) => mapped,
        }
    }
}

fn names_a_limit(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    LIMIT_MESSAGES.iter().any(|m| lower.contains(m))
}

#[cfg(test)]
mod tests {
    use fleethub_core::{ErrorCode, HubError};

    use super::*;

    fn failure(code: i32, message: Option<&str>) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), message.map(String::from))
    }

    /// A full disk answered 500 ServerError, which clients do not retry; it is a 503 that says
    /// the store is full, from SQLite's SQLITE_FULL and from the file system's ENOSPC alike.
    #[test]
    fn disk_full_is_a_retryable_503_that_says_the_store_is_full() {
        let sqlite_full = failure(rusqlite::ffi::SQLITE_FULL, Some("database or disk is full"));
        let shared = StoreError::from_sqlite(&sqlite_full);
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

        let constraint = failure(rusqlite::ffi::SQLITE_CONSTRAINT, None);
        assert_eq!(
            HubError::from(StoreError::from(constraint)).code,
            ErrorCode::ServerError,
            "only a full store is 503"
        );
    }

    /// A compiled statement SQLite refuses as written is Rejected; one past a limit is
    /// TooComplex wherever it comes from; anything else is the engine's failure.
    #[test]
    fn statement_errors_are_told_apart_without_sqlite_codes_above_the_store() {
        let depth = failure(
            rusqlite::ffi::SQLITE_ERROR,
            Some("Expression tree is too large (maximum depth 1000)"),
        );
        for e in [
            StoreError::from_sqlite(&depth),
            StoreError::from_compiled(&depth),
        ] {
            assert!(
                matches!(&e, StoreError::TooComplex { limit } if limit.contains("maximum depth 1000")),
                "{e:?}"
            );
        }
        let missing = failure(
            rusqlite::ffi::SQLITE_ERROR,
            Some("no such function: fh_nope"),
        );
        assert!(
            matches!(StoreError::from_compiled(&missing), StoreError::Rejected(m) if m.contains("fh_nope"))
        );
        assert!(matches!(
            StoreError::from_sqlite(&missing),
            StoreError::Engine(_)
        ));
        let params = rusqlite::Error::InvalidParameterCount(3, 2);
        assert!(matches!(
            StoreError::from_compiled(&params),
            StoreError::Rejected(_)
        ));
        let io = failure(rusqlite::ffi::SQLITE_IOERR, Some("disk I/O error"));
        assert!(matches!(
            StoreError::from_compiled(&io),
            StoreError::Engine(_)
        ));
    }
}
