//! Configurations (automatic device management): `PUT/GET/DELETE /configurations/{id}`,
//! `GET /configurations[?top=N]`, `POST /configurations/testQueries` and
//! `POST /devices/{id}/applyConfigurationContent`.
//!
//! No If-Match on PUT creates (409 if the id is taken); an If-Match updates. Python sends the
//! etag unquoted and Node quoted (`"*"` too); the hub strips quotes. DELETE takes an optional
//! If-Match (Node sends none) and answers 204.

use crate::auth::{Authorized, RegistryRead, RegistryWrite, ServiceConnect};
use crate::extract::{if_match, HubJson, HubQuery, PathId};
use crate::{ApiError, ApiState};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fleethub_core::HubError;
use fleethub_hub::configurations::Metrics;
use fleethub_hub::{Configuration, PutOutcome, QueryTestResult};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The configuration routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/configurations", get(list))
        .route("/configurations/testQueries", post(test_queries))
        .route("/configurations/{id}", get(get_one).put(put).delete(delete))
        .route(
            "/devices/{id}/applyConfigurationContent",
            post(apply_content),
        )
}

/// 201 with the new configuration, or 200 with the updated one; the etag also in `ETag`.
async fn put(
    _: Authorized<RegistryWrite>,
    State(state): State<ApiState>,
    PathId(id): PathId,
    headers: HeaderMap,
    HubJson(body): HubJson<Value>,
) -> Result<Response, ApiError> {
    let (configuration, outcome) = state
        .hub
        .put_configuration(&id, &body, if_match(&headers)?)
        .await?;
    let status = match outcome {
        PutOutcome::Created => StatusCode::CREATED,
        PutOutcome::Updated => StatusCode::OK,
    };
    Ok((status, configuration_response(configuration)).into_response())
}

async fn get_one(
    _: Authorized<RegistryRead>,
    State(state): State<ApiState>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    Ok(configuration_response(
        state.hub.get_configuration(&id).await?,
    ))
}

#[derive(Deserialize)]
struct ListParams {
    top: Option<String>,
}

/// A JSON array of configurations, at most `top` (1 to 100; default 100).
async fn list(
    _: Authorized<RegistryRead>,
    State(state): State<ApiState>,
    HubQuery(params): HubQuery<ListParams>,
) -> Result<Response, ApiError> {
    let top = match params.top.as_deref().filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => Some(t.parse::<u64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
            ApiError(HubError::invalid(format!(
                "top '{t}' is not allowed; it must be an integer from 1 to 100"
            )))
        })?),
    };
    let all = state.hub.list_configurations(top).await?;
    let bodies: Vec<ConfigurationBody<'_>> = all.iter().map(ConfigurationBody::of).collect();
    Ok(Json(bodies).into_response())
}

async fn delete(
    _: Authorized<RegistryWrite>,
    State(state): State<ApiState>,
    PathId(id): PathId,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    state
        .hub
        .delete_configuration(&id, if_match(&headers)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn test_queries(
    _: Authorized<RegistryRead>,
    State(state): State<ApiState>,
    HubJson(body): HubJson<Value>,
) -> Result<Json<QueryTestBody>, ApiError> {
    let QueryTestResult {
        target_condition_error,
        custom_metric_query_errors,
    } = state.hub.test_configuration_queries(&body)?;
    Ok(Json(QueryTestBody {
        target_condition_error,
        custom_metric_query_errors,
    }))
}

/// `ConfigurationQueriesTestResponse`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct QueryTestBody {
    target_condition_error: String,
    custom_metric_query_errors: BTreeMap<String, String>,
}

/// 204: the content's `deviceContent` is now in the device's desired properties.
async fn apply_content(
    _: Authorized<ServiceConnect>,
    State(state): State<ApiState>,
    PathId(id): PathId,
    HubJson(body): HubJson<Value>,
) -> Result<StatusCode, ApiError> {
    state.hub.apply_configuration_content(&id, &body).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A configuration as the body, with its etag (quoted) in an `ETag` header.
fn configuration_response(configuration: Configuration) -> Response {
    let etag = axum::http::HeaderValue::from_str(&format!("\"{}\"", configuration.etag)).ok();
    let mut response = Json(ConfigurationBody::of(&configuration)).into_response();
    if let Some(etag) = etag {
        response
            .headers_mut()
            .insert(axum::http::header::ETAG, etag);
    }
    response
}

/// A configuration in IoT Hub's shape (the SDKs' `Configuration` model).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigurationBody<'a> {
    id: &'a str,
    schema_version: &'a str,
    labels: &'a BTreeMap<String, String>,
    content: ContentBody<'a>,
    target_condition: &'a str,
    created_time_utc: String,
    last_updated_time_utc: String,
    priority: u32,
    system_metrics: MetricsBody<'a>,
    metrics: MetricsBody<'a>,
    etag: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ContentBody<'a> {
    device_content: &'a Map<String, Value>,
    modules_content: Map<String, Value>,
    module_content: Map<String, Value>,
}

#[derive(Serialize)]
struct MetricsBody<'a> {
    results: &'a BTreeMap<String, u64>,
    queries: &'a BTreeMap<String, String>,
}

impl<'a> ConfigurationBody<'a> {
    fn of(c: &'a Configuration) -> ConfigurationBody<'a> {
        let metrics = |m: &'a Metrics| MetricsBody {
            results: &m.results,
            queries: &m.queries,
        };
        ConfigurationBody {
            id: &c.id,
            schema_version: &c.schema_version,
            labels: &c.labels,
            content: ContentBody {
                device_content: &c.content.device_content,
                modules_content: Map::new(),
                module_content: Map::new(),
            },
            target_condition: &c.target_condition,
            created_time_utc: fleethub_core::time::format_timestamp(c.created_time_utc),
            last_updated_time_utc: fleethub_core::time::format_timestamp(c.last_updated_time_utc),
            priority: c.priority,
            system_metrics: metrics(&c.system_metrics),
            metrics: metrics(&c.metrics),
            etag: &c.etag,
        }
    }
}
