//! A job's `queryCondition`: which devices it targets, compiled for the store to run.

use fleethub_core::{ErrorCode, HubError, HubResult};
use fleethub_query::{Condition, Dialect, SqlFragment};

/// The devices a job targets: every device, or those a query condition selects.
#[derive(Debug, Clone)]
pub enum DeviceSelection {
    /// `*`: every device, without evaluating anything per row.
    All,
    /// A condition compiled to SQL over `devices`, in the store's dialect.
    Where(SqlFragment),
}

impl DeviceSelection {
    /// Parses and compiles a `queryCondition` for `dialect` (the store's); a bad one answers
    /// 400 `InvalidQuery` with the parser's positioned message.
    pub fn parse(text: &str, dialect: Dialect) -> HubResult<DeviceSelection> {
        Ok(match parse_condition(text)? {
            None => DeviceSelection::All,
            Some(condition) => DeviceSelection::Where(condition.to_sql(dialect)),
        })
    }

    /// Checks a `queryCondition` as [`DeviceSelection::parse`] would, without compiling it.
    pub fn validate(text: &str) -> HubResult<()> {
        parse_condition(text).map(drop)
    }

    /// The compiled condition; `None` for every device.
    pub fn condition(&self) -> Option<&SqlFragment> {
        match self {
            DeviceSelection::All => None,
            DeviceSelection::Where(fragment) => Some(fragment),
        }
    }
}

/// The condition, or `None` for `*`.
fn parse_condition(text: &str) -> HubResult<Option<Condition>> {
    if text.trim() == "*" {
        return Ok(None);
    }
    let condition = Condition::parse(text).map_err(|e| {
        HubError::new(
            ErrorCode::InvalidQuery,
            format!("queryCondition is not valid: {e}"),
        )
    })?;
    Ok(Some(condition))
}
