//! Queries (`POST /devices/query`): parse, compile to SQL for one page, run on a read
//! connection, and turn the rows into IoT Hub's documents.

use crate::twin::TwinState;
use crate::Hub;
use fleethub_core::{ErrorCode, HubError, HubResult};
use fleethub_query::{Page, Query, QueryError, ResultRow, Source, DEVICE_COLUMNS, JOB_COLUMNS};
use fleethub_store::rusqlite::types::Value as SqlValue;
use fleethub_store::{DeviceRow, Reads};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Items per page when the caller does not say (`x-ms-max-item-count`).
pub const DEFAULT_PAGE: usize = 100;
/// The most items one page may ask for.
pub const MAX_PAGE: usize = 1000;

/// One page of query results.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    pub items: Vec<Value>,
    /// `x-ms-item-type`: `twin`, `deviceJob` or `raw` (projections and aggregates).
    pub item_type: &'static str,
    /// `x-ms-continuation`: present when another page exists.
    pub continuation: Option<String>,
}

/// A query error as the API reports it: 400 InvalidQuery with the positioned message.
pub fn invalid_query(e: &QueryError) -> HubError {
    HubError::new(ErrorCode::InvalidQuery, e.to_string())
}

impl Hub {
    /// Answers whether a device is online, for the `connectionState` SQL function; holds the
    /// hub weakly so a long-lived connection never keeps a stopped hub alive.
    pub(crate) fn presence(&self) -> Arc<dyn Fn(&str) -> bool + Send + Sync> {
        let hub = Arc::downgrade(&self.inner);
        Arc::new(move |id: &str| {
            hub.upgrade()
                .is_some_and(|inner| inner.connections.is_connected(id))
        })
    }

    /// Runs one page of `text`. `max_items` is `x-ms-max-item-count` (default 100, at most
    /// 1,000); `continuation` is the previous page's token.
    pub async fn query(
        &self,
        text: &str,
        max_items: Option<usize>,
        continuation: Option<String>,
    ) -> HubResult<QueryResult> {
        let limit = match max_items {
            None => DEFAULT_PAGE,
            Some(n) if (1..=MAX_PAGE).contains(&n) => n,
            Some(n) => {
                return Err(HubError::invalid(format!(
                    "x-ms-max-item-count is {n}; it must be between 1 and {MAX_PAGE}"
                )))
            }
        };
        let query = Query::parse(text).map_err(|e| invalid_query(&e))?;
        let compiled = query
            .compile(&Page {
                limit,
                continuation,
            })
            .map_err(|e| invalid_query(&e))?;
        let page = self
            .store()
            .read(move |r| Ok(compiled.execute(r.conn())?))
            .await?;
        let source = query.source();
        let items = page
            .rows
            .into_iter()
            .map(|row| match row {
                ResultRow::Document(doc) => Ok(doc),
                ResultRow::Columns(columns) => match source {
                    Source::Devices => self.twin_document(columns),
                    Source::DeviceJobs => Ok(device_job_document(columns)),
                },
            })
            .collect::<HubResult<Vec<_>>>()?;
        let item_type = match (query.is_select_star() && !query.is_aggregate(), source) {
            (true, Source::Devices) => "twin",
            (true, Source::DeviceJobs) => "deviceJob",
            (false, _) => "raw",
        };
        Ok(QueryResult {
            items,
            item_type,
            continuation: page.continuation,
        })
    }

    /// A `SELECT *` row of `devices` as the service twin.
    fn twin_document(&self, columns: Vec<SqlValue>) -> HubResult<Value> {
        debug_assert_eq!(columns.len(), DEVICE_COLUMNS.len());
        let mut it = columns.into_iter();
        let mut next = || it.next().unwrap_or(SqlValue::Null);
        let device_id = text(next());
        let row = DeviceRow {
            status: text(next()),
            identity: json_column(next()),
            tags: json_column(next()),
            desired: json_column(next()),
            reported: json_column(next()),
            twin_version: integer(next()),
            twin_etag: text(next()),
            device_id,
        };
        let twin = TwinState::from_row(&row)?;
        Ok(twin.to_json(self.inner.connections.is_connected(&row.device_id)))
    }
}

/// A `SELECT *` row of `devices.jobs` in IoT Hub's device-job shape.
fn device_job_document(columns: Vec<SqlValue>) -> Value {
    debug_assert_eq!(columns.len(), JOB_COLUMNS.len());
    let mut doc = Map::new();
    let names = [
        "jobId",
        "deviceId",
        "jobType",
        "status",
        "createdDateTimeUtc",
        "startTimeUtc",
        "endTimeUtc",
        "lastUpdatedDateTimeUtc",
        "outcome",
        "error",
    ];
    for (name, value) in names.into_iter().zip(columns) {
        let value = match name {
            "outcome" | "error" => json_column(value),
            _ => match value {
                SqlValue::Null => Value::Null,
                other => Value::String(text(other)),
            },
        };
        if !value.is_null() {
            doc.insert(name.to_string(), value);
        }
    }
    if !doc.contains_key("outcome") {
        doc.insert("outcome".into(), json!({}));
    }
    Value::Object(doc)
}

fn text(v: SqlValue) -> String {
    match v {
        SqlValue::Text(s) => s,
        SqlValue::Integer(i) => i.to_string(),
        SqlValue::Real(f) => f.to_string(),
        SqlValue::Blob(b) => String::from_utf8_lossy(&b).into_owned(),
        SqlValue::Null => String::new(),
    }
}

fn integer(v: SqlValue) -> i64 {
    match v {
        SqlValue::Integer(i) => i,
        _ => 0,
    }
}

/// A JSON column; NULL or unreadable text becomes `null`.
fn json_column(v: SqlValue) -> Value {
    match v {
        SqlValue::Text(s) => serde_json::from_str(&s).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}
