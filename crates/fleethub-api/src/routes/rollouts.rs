//! Phased firmware rollouts over `/v1/rollouts` (docs/rollouts.md): create from a spec, list,
//! show, the devices a rollout tracks, its audit trail read by cursor, the operator's commands,
//! and one device's rollouts (`/v1/devices/{id}/rollouts`, its firmware history). The hub answers typed views; a spec's mistakes answer 400 `RolloutInvalid` naming
//! the field, an unknown id 404 `RolloutNotFound`, a command the rollout's state refuses 409
//! `RolloutStateConflict`.

use crate::auth::{Authorized, RegistryRead, RegistryWrite};
use crate::extract::{HubJson, HubQuery, PathId};
use crate::{ApiError, ApiState};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use fleethub_core::{ErrorCode, HubError};
use fleethub_hub::rollouts::{
    CreateRollout, DeviceRolloutView, RolloutCommand, RolloutEventsPage, RolloutView,
};
use fleethub_rollout::{DeviceRecord, RolloutSpec};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Rollouts listed when the caller gives no `top`.
const DEFAULT_TOP: usize = 100;
/// Events per page when the caller gives no `top`.
const DEFAULT_EVENTS: usize = 100;
/// A device's rollouts listed when the caller gives no `top`.
const DEFAULT_DEVICE_ROLLOUTS: usize = 20;

/// The rollout routes, each with its description.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show))
        .routes(routes!(devices))
        .routes(routes!(events))
        .routes(routes!(command))
        .routes(routes!(device_rollouts))
}

fn invalid(message: String) -> ApiError {
    ApiError(HubError::new(ErrorCode::RolloutInvalid, message))
}

/// A part of a body as `T`, or 400 `RolloutInvalid` naming the part and what was wrong.
fn part<T: DeserializeOwned>(what: &str, value: Value) -> Result<T, ApiError> {
    serde_json::from_value(value).map_err(|e| invalid(format!("{what}: {e}")))
}

/// A rollout to create.
#[derive(ToSchema)]
#[schema(as = CreateRollout)]
struct CreateBody {
    /// 1–48 ASCII letters, digits and `-`.
    id: String,
    spec: RolloutSpec,
    /// An unfinished (or completed) rollout this one takes over, in the same commit.
    supersedes: Option<String>,
}

impl From<CreateBody> for CreateRollout {
    fn from(body: CreateBody) -> CreateRollout {
        CreateRollout {
            id: body.id,
            spec: body.spec,
            supersedes: body.supersedes,
        }
    }
}

/// Creates a rollout.
///
/// Creates a rollout from its spec (docs/rollouts.md): `{"id": …, "spec": {…}, "supersedes":
/// "older-id"?}`. A spec's mistakes answer 400 `RolloutInvalid` naming the field.
#[utoipa::path(
    post,
    path = "/v1/rollouts",
    tag = "rollouts",
    request_body = CreateBody,
    responses((status = 201, description = "Created; the engine starts it.", body = RolloutView)),
    security(("sas" = ["RegistryWrite"]), ("session" = ["RegistryWrite"])),
)]
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
    let body = CreateBody {
        id,
        spec,
        supersedes,
    };
    let view = state.hub.create_rollout(body.into()).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// At most this many (default 100).
    top: Option<usize>,
}

/// Rollouts, newest first.
#[utoipa::path(
    get,
    path = "/v1/rollouts",
    tag = "rollouts",
    params(ListQuery),
    responses((status = 200, description = "The rollouts.", body = Vec<RolloutView>)),
    security(("sas" = ["RegistryRead"]), ("session" = ["RegistryRead"])),
)]
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

/// One rollout: status, each wave with its gate, counters and compliance.
#[utoipa::path(
    get,
    path = "/v1/rollouts/{id}",
    tag = "rollouts",
    params(("id" = String, Path, description = "The rollout's id.")),
    responses((status = 200, description = "The rollout.", body = RolloutView)),
    security(("sas" = ["RegistryRead"]), ("session" = ["RegistryRead"])),
)]
async fn show(
    _: Authorized<RegistryRead>,
    State(state): State<ApiState>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    Ok(Json(state.hub.get_rollout(&id).await?).into_response())
}

/// Every device a rollout tracks, with its state, wave, attempts and last report.
#[utoipa::path(
    get,
    path = "/v1/rollouts/{id}/devices",
    tag = "rollouts",
    params(("id" = String, Path, description = "The rollout's id.")),
    responses((status = 200, description = "The devices.", body = Vec<DeviceRecord>)),
    security(("sas" = ["RegistryRead"]), ("session" = ["RegistryRead"])),
)]
async fn devices(
    _: Authorized<RegistryRead>,
    State(state): State<ApiState>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    Ok(Json(state.hub.rollout_devices(&id).await?).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DeviceRolloutsQuery {
    /// At most this many (default 20, at most 100).
    top: Option<usize>,
}

/// One device's rollouts: its firmware history.
///
/// Every rollout the device belongs to, newest first, with the device's attempt there: its
/// state, wave, attempt number, from- and to-version, when it was first and last pushed, when it
/// ended and why it failed. An unregistered device answers 404 `DeviceNotFound`.
#[utoipa::path(
    get,
    path = "/v1/devices/{id}/rollouts",
    tag = "rollouts",
    params(("id" = String, Path, description = "The device's id."), DeviceRolloutsQuery),
    responses((status = 200, description = "The device's rollouts.", body = Vec<DeviceRolloutView>)),
    security(("sas" = ["RegistryRead"]), ("session" = ["RegistryRead"])),
)]
async fn device_rollouts(
    _: Authorized<RegistryRead>,
    State(state): State<ApiState>,
    PathId(id): PathId,
    HubQuery(query): HubQuery<DeviceRolloutsQuery>,
) -> Result<Response, ApiError> {
    let top = query.top.unwrap_or(DEFAULT_DEVICE_ROLLOUTS);
    Ok(Json(state.hub.device_rollouts(&id, top).await?).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// Events after this `seq` (a page's `next`; default 0).
    after: Option<i64>,
    /// Events per page (default 100).
    top: Option<usize>,
}

/// Reads a rollout's audit trail.
///
/// A page of the rollout's audit trail: `{"events": […], "next": seq}`; pass `next` as `after`
/// to read on (null: the end).
#[utoipa::path(
    get,
    path = "/v1/rollouts/{id}/events",
    tag = "rollouts",
    params(("id" = String, Path, description = "The rollout's id."), EventsQuery),
    responses((status = 200, description = "A page of the trail.", body = RolloutEventsPage)),
    security(("sas" = ["RegistryRead"]), ("session" = ["RegistryRead"])),
)]
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
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RolloutCommandBody)]
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

/// An operator's command.
#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
#[schema(as = RolloutVerb)]
pub(crate) enum Verb {
    /// Stop pushing; nothing is undone.
    Pause,
    /// Go on (a tripped wave is armed again); with `query`, retry only the failed and flagged
    /// devices matching it.
    Resume,
    /// Push nothing more. Final.
    Abort,
    /// Send a `wave`'s devices (else every device the rollout changed) back; pauses.
    Rollback,
    /// Push failed and flagged devices again: `devices`, or all of them.
    Retry,
    /// Another rollout (`by`) takes over. Final.
    Supersede,
}

/// Pauses, resumes, aborts, rolls back, retries or supersedes a rollout.
///
/// An operator's command, carried out in one commit: `POST /v1/rollouts/{id}/{pause|resume|
/// abort|rollback|retry|supersede}`, the body (optional) carrying the verb's own field. A
/// command the rollout's state refuses answers 409 `RolloutStateConflict`.
#[utoipa::path(
    post,
    path = "/v1/rollouts/{id}/{verb}",
    tag = "rollouts",
    params(
        ("id" = String, Path, description = "The rollout's id."),
        ("verb" = Verb, Path, description = "The command."),
    ),
    request_body(content = Option<CommandBody>, description = "The verb's own field, if any; may be empty."),
    responses((status = 200, description = "The rollout after the command.", body = RolloutView)),
    security(("sas" = ["RegistryWrite"]), ("session" = ["RegistryWrite"])),
)]
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
    let command = to_command(parse_verb(&verb)?, &verb, body)?;
    Ok(Json(state.hub.rollout_command(&id, command).await?).into_response())
}

/// The verb in the path, or 404 listing the verbs there are.
fn parse_verb(verb: &str) -> Result<Verb, ApiError> {
    serde_json::from_value(Value::String(verb.to_string())).map_err(|_| {
        ApiError(HubError::new(
            ErrorCode::NotFound,
            format!(
                "'{verb}' is not a rollout command; use pause, resume, abort, rollback, retry or supersede"
            ),
        ))
    })
}

fn to_command(verb: Verb, name: &str, body: CommandBody) -> Result<RolloutCommand, ApiError> {
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
            Some((k, _)) => Err(invalid(format!("{name} takes no '{k}'"))),
            None => Ok(()),
        }
    };
    Ok(match verb {
        Verb::Pause => {
            only("")?;
            RolloutCommand::Pause
        }
        Verb::Abort => {
            only("")?;
            RolloutCommand::Abort
        }
        Verb::Resume => {
            only("query")?;
            match query {
                Some(query) => RolloutCommand::ResumeFor { query },
                None => RolloutCommand::Resume,
            }
        }
        Verb::Rollback => {
            only("wave")?;
            RolloutCommand::Rollback { wave }
        }
        Verb::Retry => {
            only("devices")?;
            RolloutCommand::Retry { devices }
        }
        Verb::Supersede => {
            only("by")?;
            let by = by.ok_or_else(|| {
                invalid("supersede needs {\"by\": \"the rollout that takes over\"}".into())
            })?;
            RolloutCommand::Supersede { by }
        }
    })
}
