//! A job's `queryCondition`: which devices it targets, as SQL the store can run.

use fleethub_core::{ErrorCode, HubError, HubResult};
use fleethub_query::Condition;
use fleethub_store::rusqlite::types::Value as SqlValue;

/// The devices a job targets: every device, or those a query condition selects.
#[derive(Debug, Clone)]
pub enum DeviceSelection {
    /// `*`: every device, without evaluating anything per row.
    All,
    /// A condition compiled to SQL over `devices`.
    Where { sql: String, params: Vec<SqlValue> },
}

impl DeviceSelection {
    /// Parses and compiles a `queryCondition`; a bad one answers 400 `InvalidQuery` with the
    /// parser's positioned message.
    pub fn parse(text: &str) -> HubResult<DeviceSelection> {
        if text.trim() == "*" {
            return Ok(DeviceSelection::All);
        }
        let condition = Condition::parse(text).map_err(|e| {
            HubError::new(
                ErrorCode::InvalidQuery,
                format!("queryCondition is not valid: {e}"),
            )
        })?;
        let fragment = condition.to_sql();
        Ok(DeviceSelection::Where {
            sql: fragment.sql,
            params: fragment.params,
        })
    }

    /// The SQL condition and its parameters; `None` for every device.
    pub fn sql(&self) -> (Option<&str>, &[SqlValue]) {
        match self {
            DeviceSelection::All => (None, &[]),
            DeviceSelection::Where { sql, params } => (Some(sql), params),
        }
    }
}
