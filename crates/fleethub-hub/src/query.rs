//! Queries (`POST /devices/query`): parse, compile one page for the store's dialect, have the
//! store run it on a read connection, and turn the rows into typed items (a `SELECT *` row is a
//! [`Twin`], with the configurations that target it, or a device's row in a job; a projection or an aggregate is the JSON document the
//! query language computed). `fleethub-api` writes them in IoT Hub's shapes.

use crate::twin::{Twin, TwinState};
use crate::Hub;
use fleethub_core::{ErrorCode, HubError, HubResult};
use fleethub_query::{Page, Query, QueryError, Source};
use fleethub_store::{ConfigurationReads, JobDeviceRow, QueryRow, Reads, StoreError};
use serde_json::Value;
use std::sync::Arc;

/// Items per page when the caller does not say (`x-ms-max-item-count`).
pub const DEFAULT_PAGE: usize = 100;
/// The most items one page may ask for.
pub const MAX_PAGE: usize = 1000;

/// One row of a query's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryItem {
    /// A `SELECT *` row of `devices`: the whole twin, its connection state as of the query.
    Twin(Box<Twin>),
    /// A `SELECT *` row of `devices.jobs`: one device's row in a job.
    DeviceJob(Box<JobDeviceRow>),
    /// A projection or an aggregate: a JSON document by the query language's definition.
    Document(Value),
}

/// One page of query results.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    pub items: Vec<QueryItem>,
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
        // A twin row carries the configurations that target it, as `GET /twins/{id}` does,
        // read with the page. An aggregate has no twin rows, and the store may split its scan
        // over several connections.
        let (page, mut configurations) = if query.is_aggregate() {
            (self.store().query(compiled).await?, Vec::new().into_iter())
        } else {
            self.store()
                .read(move |r| {
                    let page = r.run_query(&compiled)?;
                    let mut configurations = Vec::new();
                    for row in &page.rows {
                        if let QueryRow::Device(device) = row {
                            configurations.push(r.device_configurations(&device.device_id)?);
                        }
                    }
                    Ok::<_, StoreError>((page, configurations.into_iter()))
                })
                .await?
        };
        let source = query.source();
        let items = page
            .rows
            .into_iter()
            .map(|row| match row {
                QueryRow::Document(doc) => Ok(QueryItem::Document(doc)),
                QueryRow::Device(row) => {
                    let connected = self.inner.connections.is_connected(&row.device_id);
                    let mut twin = TwinState::from_row(&row)?;
                    twin.configurations = configurations
                        .next()
                        .unwrap_or_default()
                        .into_iter()
                        .collect();
                    Ok(QueryItem::Twin(Box::new(twin.into_twin(connected))))
                }
                QueryRow::DeviceJob(row) => Ok(QueryItem::DeviceJob(Box::new(row))),
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
