//! Phased firmware rollouts over `/v1/rollouts` (docs/rollouts.md): create from a spec, list,
//! show, the devices a rollout tracks, its audit trail read by cursor, and the operator's
//! commands. The hub answers typed views; a spec's mistakes answer 400 `RolloutInvalid` naming
//! the field, an unknown id 404 `RolloutNotFound`, a command the rollout's state refuses 409
//! `RolloutStateConflict`.

use crate::auth::{Authorized, RegistryRead, RegistryWrite};
use crate::extract::{HubJson, HubQuery, PathId};
use crate::{ApiError, ApiState};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fleethub_core::{ErrorCode, HubError};
use fleethub_hub::rollouts::{CreateRollout, RolloutCommand};
use fleethub_rollout::RolloutSpec;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

/// Rollouts listed when the caller gives no `top`.
const DEFAULT_TOP: usize = 100;
/// Events per page when the caller gives no `top`.
const DEFAULT_EVENTS: usize = 100;

/// The rollout routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/rollouts", post(create).get(list))
        .route("/v1/rollouts/{id}", get(show))
        .route("/v1/rollouts/{id}/devices", get(devices))
        .route("/v1/rollouts/{id}/events", get(events))
        .route("/v1/rollouts/{id}/{verb}", post(command))
}

fn invalid(message: String) -> ApiError {
    ApiError(HubError::new(ErrorCode::RolloutInvalid, message))
}

/// A part of a body as `T`, or 400 `RolloutInvalid` naming the part and what was wrong.
fn part<T: DeserializeOwned>(what: &str, value: Value) -> Result<T, ApiError> {
    serde_json::from_value(value).map_err(|e| invalid(format!("{what}: {e}")))
}

/// `POST /v1/rollouts`: `{"id": …, "spec": {…}, "supersedes": "older-id"?}`.
async fn create(
    _: Authorized<RegistryWrite>,
    State(state): State<ApiState>,
    HubJson(body): HubJson<Value>,
) -> Result<Response, ApiError> {
    let Value::Object(mut body) = body else {
        return Err(invalid(
            "the body must be an object: {\"id\": …, \"spec\": {…}}".into(),
        ));
    };
    if let Some(key) = body
        .keys()
        .find(|k| !["id", "spec", "supersedes"].contains(&k.as_str()))
    {
        return Err(invalid(format!(
            "unknown field '{key}'; a rollout is created from id, spec and supersedes"
        )));
    }
    let id: String = match body.remove("id") {
        Some(v) => part("id", v)?,
        None => return Err(invalid("id is missing: name the rollout".into())),
    };
    let spec: RolloutSpec = match body.remove("spec") {
        Some(v) => part("spec", v)?,
        None => {
            return Err(invalid(
                "spec is missing: the rollout's artifact, target, waves… (docs/rollouts.md)".into(),
            ))
        }
    };
    let supersedes: Option<String> = part(
        "supersedes",
        body.remove("supersedes").unwrap_or(Value::Null),
    )?;
    let view = state
        .hub
        .create_rollout(CreateRollout {
            id,
            spec,
            supersedes,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    top: Option<usize>,
}

async fn list(
    _: Authorized<RegistryRead>,
    State(state): State<ApiState>,
    HubQuery(query): HubQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let views = state
        .hub
        .list_rollouts(query.top.unwrap_or(DEFAULT_TOP))
        .await?;
    Ok(Json(views).into_response())
}

async fn show(
    _: Authorized<RegistryRead>,
    State(state): State<ApiState>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    Ok(Json(state.hub.get_rollout(&id).await?).into_response())
}

async fn devices(
    _: Authorized<RegistryRead>,
    State(state): State<ApiState>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    Ok(Json(state.hub.rollout_devices(&id).await?).into_response())
}

#[derive(Deserialize)]
struct EventsQuery {
    after: Option<i64>,
    top: Option<usize>,
}

/// `{"events": […], "next": seq}`: pass `next` as `after` to read on (null: the end).
async fn events(
    _: Authorized<RegistryRead>,
    State(state): State<ApiState>,
    PathId(id): PathId,
    HubQuery(query): HubQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let page = state
        .hub
        .rollout_events(
            &id,
            query.after.unwrap_or(0),
            query.top.unwrap_or(DEFAULT_EVENTS),
        )
        .await?;
    Ok(Json(page).into_response())
}

/// The body a command may carry; each verb reads its own part and refuses the others.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CommandBody {
    /// `resume`: only for the failed and flagged devices matching this condition.
    query: Option<String>,
    /// `rollback`: this wave (else every wave).
    wave: Option<String>,
    /// `retry`: these devices (else every failed and flagged one).
    devices: Option<Vec<String>>,
    /// `supersede`: the rollout that takes over.
    by: Option<String>,
}

/// `POST /v1/rollouts/{id}/{pause|resume|abort|rollback|retry|supersede}`.
async fn command(
    _: Authorized<RegistryWrite>,
    State(state): State<ApiState>,
    Path((id, verb)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body: CommandBody = if body.iter().all(u8::is_ascii_whitespace) {
        CommandBody::default()
    } else {
        let value: Value = serde_json::from_slice(&body).map_err(|e| {
            ApiError(HubError::format(format!(
                "request body is not valid JSON: {e}"
            )))
        })?;
        part(&format!("the {verb} body"), value)?
    };
    let command = to_command(&verb, body)?;
    Ok(Json(state.hub.rollout_command(&id, command).await?).into_response())
}

fn to_command(verb: &str, body: CommandBody) -> Result<RolloutCommand, ApiError> {
    let CommandBody {
        query,
        wave,
        devices,
        by,
    } = body;
    let only = |allowed: &str| -> Result<(), ApiError> {
        let given = [
            ("query", query.is_some()),
            ("wave", wave.is_some()),
            ("devices", devices.is_some()),
            ("by", by.is_some()),
        ];
        match given.iter().find(|(k, set)| *set && *k != allowed) {
            Some((k, _)) => Err(invalid(format!("{verb} takes no '{k}'"))),
            None => Ok(()),
        }
    };
    Ok(match verb {
        "pause" => {
            only("")?;
            RolloutCommand::Pause
        }
        "abort" => {
            only("")?;
            RolloutCommand::Abort
        }
        "resume" => {
            only("query")?;
            match query {
                Some(query) => RolloutCommand::ResumeFor { query },
                None => RolloutCommand::Resume,
            }
        }
        "rollback" => {
            only("wave")?;
            RolloutCommand::Rollback { wave }
        }
        "retry" => {
            only("devices")?;
            RolloutCommand::Retry { devices }
        }
        "supersede" => {
            only("by")?;
            let by = by.ok_or_else(|| {
                invalid("supersede needs {\"by\": \"the rollout that takes over\"}".into())
            })?;
            RolloutCommand::Supersede { by }
        }
        other => {
            return Err(ApiError(HubError::new(
                ErrorCode::NotFound,
                format!(
                    "'{other}' is not a rollout command; use pause, resume, abort, rollback, retry or supersede"
                ),
            )))
        }
    })
}
