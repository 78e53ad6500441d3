//! `POST /devices/query`: IoT Hub's query language over twins and device jobs, paged with
//! `x-ms-max-item-count` and `x-ms-continuation`. The hub answers typed rows; this module writes
//! them: a twin as `GET /twins/{id}` does ([`TwinBody`]), a device's row in a job in IoT Hub's
//! device-job shape, a projection or aggregate as the document the query computed.

use super::paging::{self, MAX_ITEM_COUNT};
use super::twins::TwinBody;
use crate::auth::{Authorized, RegistryRead};
use crate::extract::HubJson;
use crate::{ApiError, ApiState};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use fleethub_core::HubError;
use fleethub_hub::{JobDeviceRow, QueryItem};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde::Deserialize;
use serde_json::Value;

const ITEM_TYPE: &str = "x-ms-item-type";

/// The query route.
pub fn routes() -> Router<ApiState> {
    Router::new().route("/devices/query", post(query))
}

#[derive(Deserialize)]
struct QuerySpecification {
    query: Option<String>,
}

async fn query(
    _: Authorized<RegistryRead>,
    State(state): State<ApiState>,
    headers: HeaderMap,
    HubJson(spec): HubJson<QuerySpecification>,
) -> Result<Response, ApiError> {
    let text = spec.query.filter(|q| !q.trim().is_empty()).ok_or_else(|| {
        HubError::invalid(
            "the body must be {\"query\": \"SELECT … FROM devices …\"}; the query is missing",
        )
    })?;
    let max_items = paging::page_size(MAX_ITEM_COUNT, paging::header(&headers, MAX_ITEM_COUNT)?)?;
    let continuation = paging::continuation(&headers)?;
    let page = state.hub.query(&text, max_items, continuation).await?;
    let items: Vec<Item<'_>> = page.items.iter().map(Item).collect();
    let mut response = Json(items).into_response();
    response.headers_mut().insert(
        HeaderName::from_static(ITEM_TYPE),
        HeaderValue::from_static(page.item_type),
    );
    paging::set_continuation(&mut response, page.continuation.as_deref())?;
    Ok(response)
}

/// One row of a query's answer, as IoT Hub writes it.
struct Item<'a>(&'a QueryItem);

impl Serialize for Item<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            QueryItem::Twin(twin) => TwinBody(twin).serialize(serializer),
            QueryItem::DeviceJob(row) => DeviceJobBody(row).serialize(serializer),
            QueryItem::Document(doc) => doc.serialize(serializer),
        }
    }
}

/// A `SELECT *` row of `devices.jobs` in IoT Hub's device-job shape: times not yet set, and an
/// error not given, are left out; `outcome` is `{}` until there is one (a stored JSON `null` is
/// left out).
struct DeviceJobBody<'a>(&'a JobDeviceRow);

impl Serialize for DeviceJobBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let row = self.0;
        let empty = Value::Object(Default::default());
        let mut doc = serializer.serialize_map(None)?;
        doc.serialize_entry("jobId", &row.job_id)?;
        doc.serialize_entry("deviceId", &row.device_id)?;
        doc.serialize_entry("jobType", &row.job_type)?;
        doc.serialize_entry("status", row.status.as_str())?;
        doc.serialize_entry("createdDateTimeUtc", &row.created_time)?;
        if let Some(start) = &row.start_time {
            doc.serialize_entry("startTimeUtc", start)?;
        }
        if let Some(end) = &row.end_time {
            doc.serialize_entry("endTimeUtc", end)?;
        }
        doc.serialize_entry("lastUpdatedDateTimeUtc", &row.updated_time)?;
        match &row.outcome {
            None => doc.serialize_entry("outcome", &empty)?,
            Some(Value::Null) => {}
            Some(outcome) => doc.serialize_entry("outcome", outcome)?,
        }
        if let Some(error) = row.error.as_ref().filter(|e| !e.is_null()) {
            doc.serialize_entry("error", error)?;
        }
        doc.end()
    }
}
