//! The native `/v1` API and its OpenAPI 3.1 document, built together: each route module hands
//! back a `utoipa_axum` router whose routes are mounted from their handlers' `#[utoipa::path]`
//! descriptions, so a `/v1` route cannot be mounted without being described, and the schemas
//! are derived from the very types the handlers answer with. [`v1`] gives the routes to the
//! router and [`document`] the description to `GET /v1/openapi.json`.

use crate::auth::{AnyRight, Authorized};
use crate::{routes, ApiState};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use std::sync::LazyLock;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

/// The document's fixed parts; the paths and their schemas come from the routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "FleetHub native API",
        description = "FleetHub's own REST API under `/v1` (firmware, rollouts, the registry as a \
                       file, the change feed, telemetry, cloud-to-device messages). The IoT Hub \
                       service API FleetHub also answers (devices, twins, jobs, configurations, \
                       queries, methods) is Azure IoT Hub's, described by Microsoft; see \
                       docs/rest-api.md. Every failure answers an `ErrorBody` with the HTTP \
                       status and `iothub-errorcode` header of the hub's error table."
    ),
    // Path parameters' types are not collected from the paths: named here.
    components(schemas(fleethub_core::error::ErrorBody, routes::rollouts::Verb)),
    modifiers(&Security),
    tags(
        (name = "api", description = "This description."),
        (name = "devices", description = "The registry as a file: import and export."),
        (name = "events", description = "The change feed: every committed change, by cursor or live."),
        (name = "firmware", description = "The firmware store: signed artifacts and per-device download URLs."),
        (name = "messages", description = "Cloud-to-device messages."),
        (name = "rollouts", description = "Phased firmware rollouts (docs/rollouts.md)."),
        (name = "telemetry", description = "Stored device-to-cloud messages, by page or live."),
    )
)]
struct Fixed;

/// The two ways a caller proves who it is. An operation's security requirement lists the
/// policy right it needs (`RegistryRead`, `RegistryWrite`, `ServiceConnect`); an empty list
/// means any policy will do.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut sas = ApiKeyValue::new("Authorization");
        sas.description = Some(
            "A service SAS token of a shared access policy, as the IoT Hub service SDKs send it: \
             `SharedAccessSignature sr=<host>&sig=…&se=<expiry>&skn=<policy>`."
                .into(),
        );
        components.add_security_scheme("sas", SecurityScheme::ApiKey(ApiKey::Header(sas)));
        let mut session = ApiKeyValue::new(crate::dashboard::session::COOKIE);
        session.description = Some(format!(
            "The dashboard's session cookie (`POST /dashboard/session`); a request that changes \
             something also sends the session's CSRF token in `{}`.",
            crate::dashboard::session::CSRF_HEADER
        ));
        components.add_security_scheme("session", SecurityScheme::ApiKey(ApiKey::Cookie(session)));
    }
}

/// The `/v1` routes, each mounted with its description.
pub(crate) fn v1() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(Fixed::openapi())
        .routes(utoipa_axum::routes!(openapi_json))
        .merge(routes::registry_files::routes())
        .merge(routes::messages::routes())
        .merge(routes::events::routes())
        .merge(routes::firmware::routes())
        .merge(routes::rollouts::routes())
}

/// The OpenAPI 3.1 document of the `/v1` API, as `GET /v1/openapi.json` serves it.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut document = v1().into_openapi();
    add_error_responses(&mut document);
    document
}

/// Every operation answers its failures with the error table's body, under any 4xx or 5xx
/// status (`default`), unless it describes that status itself.
fn add_error_responses(document: &mut utoipa::openapi::OpenApi) {
    let error = ResponseBuilder::new()
        .description(
            "A failure: the status, `iothub-errorcode` header and body from the hub's error table.",
        )
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    for item in document.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
        ];
        for operation in operations.into_iter().flatten() {
            operation
                .responses
                .responses
                .entry("default".to_string())
                .or_insert_with(|| error.clone().into());
        }
    }
}

/// Every operation of `document` as (method in capitals, path), in path order.
pub fn operations(document: &utoipa::openapi::OpenApi) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (path, item) in &document.paths.paths {
        let methods = [
            ("GET", &item.get),
            ("PUT", &item.put),
            ("POST", &item.post),
            ("DELETE", &item.delete),
            ("PATCH", &item.patch),
            ("HEAD", &item.head),
        ];
        for (method, operation) in methods {
            if operation.is_some() {
                out.push((method, path.clone()));
            }
        }
    }
    out
}

/// The document, serialized once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    serde_json::to_string(&document()).expect("an OpenAPI document always serializes")
});

/// This API's OpenAPI 3.1 document, derived from the code that serves it.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "api",
    responses((status = 200, description = "The OpenAPI 3.1 document.", body = Object)),
    security(("sas" = []), ("session" = [])),
)]
async fn openapi_json(_: Authorized<AnyRight>) -> Response {
    ([(CONTENT_TYPE, "application/json")], DOCUMENT.as_str()).into_response()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every `.rs` file under `dir`, with its text.
    fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("a source file is readable");
                out.push((path.display().to_string(), text));
            }
        }
    }

    /// The router has no list of its routes to compare with the document, so the rule is kept
    /// in the source: a `/v1` path is written only in a handler's `#[utoipa::path(path = …)]`,
    /// which `utoipa_axum::routes!` mounts together with its description. A plain
    /// `.route("/v1/…")` or `.nest("/v1", …)` anywhere in the crate fails this test.
    #[test]
    fn v1_paths_are_written_only_in_route_descriptions() {
        // Spelled with an escape so that this test's own lines do not match.
        const QUOTED_V1: &str = "\u{22}/v1";
        const DESCRIPTION: &str = "path = \u{22}/v1/";
        let mut files = Vec::new();
        sources(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        assert!(files.len() > 10, "the crate's sources were found");
        let mut described = 0;
        let mut stray = Vec::new();
        for (file, text) in &files {
            for (n, line) in text.lines().enumerate() {
                let code = line.trim_start();
                if code.starts_with("//") || !code.contains(QUOTED_V1) {
                    continue;
                }
                if code.starts_with(DESCRIPTION) {
                    described += 1;
                } else {
                    stray.push(format!("{file}:{}: {code}", n + 1));
                }
            }
        }
        assert!(
            stray.is_empty(),
            "a /v1 path outside a #[utoipa::path] description (mount /v1 routes with \
             utoipa_axum::routes! so the OpenAPI document describes them):\n{}",
            stray.join("\n")
        );
        let operations = super::operations(&super::document()).len();
        // One description per handler; the download handler serves GET and HEAD.
        assert_eq!(described + 1, operations, "every description is mounted");
    }

    /// docs/rest-api.md is the page people read: each operation of the document must appear
    /// there as `` `METHOD /v1/path `` (its parameters named as in the document), so a route
    /// added to the code and not to the page fails here.
    #[test]
    fn every_v1_operation_is_in_the_rest_api_page() {
        let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/rest-api.md");
        let page = std::fs::read_to_string(&page).expect("docs/rest-api.md is readable");
        let operations = super::operations(&super::document());
        assert!(operations.len() > 20, "the document lists the /v1 API");
        let missing: Vec<String> = operations
            .iter()
            .map(|(method, path)| format!("`{method} {path}"))
            .filter(|spelled| {
                // The path must end there: `GET /v1/rollouts` is not found in `GET /v1/rollouts/{id}`.
                !page.match_indices(spelled.as_str()).any(|(at, _)| {
                    matches!(page[at + spelled.len()..].chars().next(), Some('`' | '?'))
                })
            })
            .collect();
        assert!(
            missing.is_empty(),
            "docs/rest-api.md does not list these /v1 operations (add a row per route to its \
             native routes table):\n{}",
            missing.join("\n")
        );
    }
}
