//! Queries (`POST /devices/query`): parse, compile one page for the store's dialect, have the
//! store run it on a read connection, and turn the rows into IoT Hub's documents.

use crate::twin::TwinState;
use crate::Hub;
use fleethub_core::{ErrorCode, HubError, HubResult};
use fleethub_query::{Page, Query, QueryError, Source};
use fleethub_store::{JobDeviceRow, QueryRow, Reads};
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
    /// Answers whether a device is online, for `connectionState` in queries the store runs;
    /// holds the hub weakly so the store never keeps a stopped hub alive.
    pub(crate) fn presence(&self) -> fleethub_store::Presence {
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
        let page = Page {
            limit,
            continuation,
        };
        let compiled = query
            .compile(&page, self.store().dialect())
            .map_err(|e| invalid_query(&e))?;
        let page = self.store().read(move |r| r.run_query(&compiled)).await?;
        let source = query.source();
        let items = page
            .rows
            .into_iter()
            .map(|row| match row {
                QueryRow::Document(doc) => Ok(doc),
                QueryRow::Device(row) => {
                    let twin = TwinState::from_row(&row)?;
                    Ok(twin.to_json(self.inner.connections.is_connected(&row.device_id)))
                }
                QueryRow::DeviceJob(row) => Ok(device_job_document(row)),
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
}

/// A `SELECT *` row of `devices.jobs` in IoT Hub's device-job shape (times not yet set, and an
/// error not given, are left out; `outcome` is `{}` until there is one).
fn device_job_document(row: JobDeviceRow) -> Value {
    let mut doc = Map::new();
    let mut put = |name: &str, value: Option<Value>| {
        if let Some(v) = value.filter(|v| !v.is_null()) {
            doc.insert(name.to_string(), v);
        }
    };
    put("jobId", Some(Value::String(row.job_id)));
    put("deviceId", Some(Value::String(row.device_id)));
    put("jobType", Some(Value::String(row.job_type)));
    put(
        "status",
        Some(Value::String(row.status.as_str().to_string())),
    );
    put("createdDateTimeUtc", Some(Value::String(row.created_time)));
    put("startTimeUtc", row.start_time.map(Value::String));
    put("endTimeUtc", row.end_time.map(Value::String));
    put(
        "lastUpdatedDateTimeUtc",
        Some(Value::String(row.updated_time)),
    );
    put("outcome", Some(row.outcome.unwrap_or_else(|| json!({}))));
    put("error", row.error);
    Value::Object(doc)
}
