//! The `/v1` API against its own OpenAPI document, as `GET /v1/openapi.json` serves it: every
//! operation the document describes is called on a real hub and must answer (with a status the
//! document lists, a body its schema accepts, the request's body accepted by its request
//! schema), every operation must be called (so a new route needs a step here), and each
//! operation's security requirement must be what the route enforces.

use crate::support::TestApi;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use fleethub_hub::TelemetryIn;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;
use tower::ServiceExt;

/// What came back; `body` is `None` for a stream (server-sent events), which is never read.
struct Answer {
    status: StatusCode,
    content_type: Option<String>,
    body: Option<Vec<u8>>,
}

impl Answer {
    fn json(&self) -> Value {
        let body = self.body.as_deref().expect("a body, not a stream");
        serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(self.body.as_deref().unwrap_or_default()).into_owned()
    }
}

/// A request: method, path and query, `Authorization`, body and its content type, more headers.
struct Call<'a> {
    method: Method,
    uri: &'a str,
    token: Option<&'a str>,
    body: Vec<u8>,
    content_type: &'a str,
    headers: &'a [(&'a str, &'a str)],
}

async fn send(api: &TestApi, call: Call<'_>) -> Answer {
    let mut request = Request::builder()
        .method(call.method)
        .uri(call.uri)
        .header("content-type", call.content_type);
    if let Some(token) = call.token {
        request = request.header("authorization", token);
    }
    for (name, value) in call.headers {
        request = request.header(*name, *value);
    }
    let response = api
        .app
        .clone()
        .oneshot(request.body(Body::from(call.body)).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let body = if content_type
        .as_deref()
        .is_some_and(|t| t.starts_with("text/event-stream"))
    {
        None
    } else {
        Some(
            response
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
    };
    Answer {
        status,
        content_type,
        body,
    }
}

/// The served document and the schema checks made against it.
struct Document(Value);

impl Document {
    fn operation(&self, method: &str, template: &str) -> &Value {
        let operation = &self.0["paths"][template][method];
        assert!(
            operation.is_object(),
            "{} {template} is not in the document",
            method.to_uppercase()
        );
        operation
    }

    /// Every (method, path template) the document describes.
    fn operations(&self) -> BTreeSet<(String, String)> {
        let mut all = BTreeSet::new();
        for (template, item) in self.0["paths"].as_object().unwrap() {
            for method in ["get", "put", "post", "delete", "patch", "head"] {
                if item.get(method).is_some() {
                    all.insert((method.to_string(), template.clone()));
                }
            }
        }
        all
    }

    /// Fails unless `instance` matches `schema` (whose `$ref`s point into the document).
    fn check(&self, what: &str, schema: &Value, instance: &Value) {
        let mut root = schema.as_object().cloned().unwrap_or_default();
        root.insert(
            "$schema".into(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
        root.insert("components".into(), self.0["components"].clone());
        let validator = jsonschema::validator_for(&Value::Object(root))
            .unwrap_or_else(|e| panic!("{what}: the document's schema does not compile: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("{e} (at {})", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{what}: {instance} does not match the document's schema {schema}:\n{}",
            errors.join("\n")
        );
    }

    /// Checks an answer against what the document says `method template` answers.
    fn check_answer(&self, method: &str, template: &str, answer: &Answer) {
        let what = format!("{} {template} → {}", method.to_uppercase(), answer.status);
        let responses = &self.operation(method, template)["responses"];
        let status = answer.status.as_u16().to_string();
        let response = match responses.get(&status) {
            Some(response) => response,
            None if answer.status.is_success() => {
                panic!("{what}: the document lists no {status} for it ({responses})")
            }
            None => responses
                .get("default")
                .unwrap_or_else(|| panic!("{what}: no response describes a failure")),
        };
        let Some(content) = response.get("content") else {
            assert!(
                answer.body.as_deref().is_some_and(<[u8]>::is_empty),
                "{what}: the document describes no body, but one came: {}",
                answer.text()
            );
            return;
        };
        let content_type = answer
            .content_type
            .as_deref()
            .unwrap_or_else(|| panic!("{what}: a body without a content type"));
        let media = content_type.split(';').next().unwrap().trim();
        let schema = &content
            .get(media)
            .unwrap_or_else(|| panic!("{what}: the document lists no {media} body ({content})"))
            ["schema"];
        match media {
            "application/json" => self.check(&what, schema, &answer.json()),
            "application/x-ndjson" => {
                let text = answer.text();
                for line in text.lines() {
                    self.check(&what, schema, &serde_json::from_str(line).unwrap());
                }
            }
            _ => {}
        }
    }

    /// Checks a JSON request body against the operation's request schema.
    fn check_request(&self, method: &str, template: &str, body: &Value) {
        let what = format!("the {} {template} request", method.to_uppercase());
        let schema = &self.operation(method, template)["requestBody"]["content"]
            ["application/json"]["schema"];
        assert!(schema.is_object(), "{what}: no JSON body is described");
        self.check(&what, schema, body);
    }
}

/// Calls operations against a hub with the owner's token, checking each answer against the
/// document and recording which operations were called.
struct Walk {
    api: TestApi,
    document: Document,
    token: String,
    called: BTreeSet<(String, String)>,
}

impl Walk {
    /// Calls `method template` as `uri`, expects `status`, and checks the answer.
    async fn call(
        &mut self,
        method: Method,
        template: &str,
        uri: &str,
        request: Option<(&str, Vec<u8>)>,
        headers: &[(&str, &str)],
        status: u16,
    ) -> Answer {
        let name = method.as_str().to_ascii_lowercase();
        let (content_type, body) = request.unwrap_or(("application/json", Vec::new()));
        // An operation that needs no credential gets none (a download URL authorizes itself,
        // and would take a token for a device's).
        let requirements = self.document.operation(&name, template)["security"].clone();
        let open = requirements.as_array().is_some_and(|r| {
            r.iter()
                .all(|r| r.as_object().is_some_and(|o| o.is_empty()))
        });
        let token = (!open).then_some(self.token.as_str());
        if content_type == "application/json" && !body.is_empty() {
            let json: Value = serde_json::from_slice(&body).unwrap();
            self.document.check_request(&name, template, &json);
        }
        let answer = send(
            &self.api,
            Call {
                method,
                uri,
                token,
                body,
                content_type,
                headers,
            },
        )
        .await;
        assert_eq!(
            answer.status.as_u16(),
            status,
            "{} {uri}: {}",
            name.to_uppercase(),
            answer.text()
        );
        self.document.check_answer(&name, template, &answer);
        self.called.insert((name, template.to_string()));
        answer
    }

    async fn json(
        &mut self,
        method: Method,
        template: &str,
        uri: &str,
        body: Value,
        status: u16,
    ) -> Answer {
        let body = Some(("application/json", body.to_string().into_bytes()));
        self.call(method, template, uri, body, &[], status).await
    }

    async fn get(&mut self, template: &str, uri: &str) -> Answer {
        self.call(Method::GET, template, uri, None, &[], 200).await
    }
}

/// `GET /v1/openapi.json` with `token`.
async fn get_document(api: &TestApi, token: Option<&str>) -> Answer {
    let call = Call {
        method: Method::GET,
        uri: "/v1/openapi.json",
        token,
        body: Vec::new(),
        content_type: "application/json",
        headers: &[],
    };
    send(api, call).await
}

async fn served_document(api: &TestApi) -> Value {
    let answer = get_document(api, Some(&api.token("iothubowner"))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    answer.json()
}

#[tokio::test]
async fn the_document_is_openapi_3_1_generated_from_the_routes() {
    let api = TestApi::start().await;
    let served = served_document(&api).await;
    if let Ok(path) = std::env::var("FLEETHUB_OPENAPI_OUT") {
        std::fs::write(path, serde_json::to_string_pretty(&served).unwrap()).unwrap();
    }
    assert_eq!(served["openapi"], "3.1.0");
    assert_eq!(
        served,
        serde_json::to_value(fleethub_api::openapi::document()).unwrap()
    );
    let paths: Vec<&String> = served["paths"].as_object().unwrap().keys().collect();
    assert!(
        paths.iter().all(|p| p.starts_with("/v1/")),
        "only the native API is described: {paths:?}"
    );
    for path in ["/v1/rollouts/{id}/{verb}", "/v1/firmware/{id}/download"] {
        assert!(served["paths"].get(path).is_some(), "{path} is described");
    }
    // The schemas the paths name are in components, and each is valid JSON Schema.
    let schemas = served["components"]["schemas"].as_object().unwrap();
    for name in [
        "ErrorBody",
        "RolloutView",
        "CreateRollout",
        "FirmwareArtifact",
    ] {
        assert!(schemas.contains_key(name), "{name} is in components");
    }
    // The checks below can fail: a body missing what a schema requires does not pass.
    let document = Document(served.clone());
    let rejects = |name: &str, body: Value| {
        let schema = json!({ "$ref": format!("#/components/schemas/{name}") });
        let checked = std::panic::catch_unwind(|| document.check(name, &schema, &body));
        assert!(checked.is_err(), "{body} passed as a {name}");
    };
    rejects("RolloutView", json!({"id": "r1"}));
    rejects("ErrorBody", json!({"errorCode": "404001"}));
    rejects("ImportReport", json!({"isSuccessful": true}));
    for (name, schema) in schemas {
        let mut root = schema.as_object().unwrap().clone();
        root.insert("components".into(), served["components"].clone());
        jsonschema::validator_for(&Value::Object(root))
            .unwrap_or_else(|e| panic!("schema {name} is not valid JSON Schema: {e}"));
    }
}

#[tokio::test]
async fn any_valid_credential_reads_the_document_and_none_does_not() {
    let api = TestApi::start().await;
    for policy in [
        "iothubowner",
        "service",
        "device",
        "registryRead",
        "registryReadWrite",
    ] {
        let answer = get_document(&api, Some(&api.token(policy))).await;
        assert_eq!(answer.status, StatusCode::OK, "{policy}: {}", answer.text());
    }
    let answer = get_document(&api, None).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.json()["info"]["name"], "IotHubUnauthorizedAccess");
}

const SPEC: &str = r#"{
    "artifact": {"version": "2.1.0", "sha256": "SHA"},
    "target": "tags.product = 'aq'",
    "waves": [
        {"name": "canary", "select": {"count": 1}, "success": {"percent": 100}, "failure": {"count": 0}},
        {"name": "rest", "select": {"percent": 100}, "batch": {"size": 1, "interval_secs": 60},
         "success": {"percent": 98}, "failure": {"percent": 50}}
    ],
    "soak_secs": 60,
    "max_silence_secs": 900,
    "device_timeout_secs": 600,
    "window": {"cron": "0 2 * * *", "duration_secs": 14400, "zone": "UTC"}
}"#;

#[tokio::test]
async fn every_described_operation_answers_as_described() {
    let api = TestApi::start_with_firmware(Arc::new(fleethub_core::SystemClock)).await;
    let document = Document(served_document(&api).await);
    let token = api.token("iothubowner");
    let mut walk = Walk {
        api,
        document,
        token,
        called: BTreeSet::new(),
    };
    walk.get("/v1/openapi.json", "/v1/openapi.json").await;

    // The registry as a file.
    let lines = "{\"id\":\"walk-1\",\"tags\":{\"product\":\"aq\"}}\n{\"id\":\"walk-2\",\"tags\":{\"product\":\"aq\"}}\nnot json\n";
    let report = walk
        .call(
            Method::POST,
            "/v1/devices/import",
            "/v1/devices/import",
            Some(("application/x-ndjson", lines.as_bytes().to_vec())),
            &[],
            200,
        )
        .await
        .json();
    assert_eq!(
        (report["created"].as_u64(), report["failed"].as_u64()),
        (Some(2), Some(1))
    );
    let export = walk.get("/v1/devices/export", "/v1/devices/export").await;
    assert_eq!(export.text().lines().count(), 2);

    // Messages, telemetry and the change feed.
    let c2d = json!({"body": "hello", "properties": {"colour": "amber"}, "ttlSeconds": 60});
    walk.json(
        Method::POST,
        "/v1/devices/{id}/messages",
        "/v1/devices/walk-1/messages",
        c2d,
        200,
    )
    .await;
    walk.api
        .hub
        .ingest_telemetry(
            "walk-1",
            TelemetryIn {
                message_id: Some("m1".into()),
                properties: vec![("$.ct".into(), "application/json".into())],
                body: bytes::Bytes::from_static(b"{\"pm25\": 4}"),
            },
        )
        .await
        .unwrap();
    let telemetry = walk
        .get("/v1/telemetry", "/v1/telemetry?deviceId=walk-1")
        .await
        .json();
    assert_eq!(telemetry["items"].as_array().unwrap().len(), 1);
    walk.get(
        "/v1/telemetry/stream",
        "/v1/telemetry/stream?deviceId=walk-1",
    )
    .await;
    let events = walk.get("/v1/events", "/v1/events?limit=5").await.json();
    assert!(!events["events"].as_array().unwrap().is_empty());
    walk.get("/v1/events/stream", "/v1/events/stream").await;

    // The firmware store.
    let image = (0..4096u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>();
    let artifact = walk
        .call(
            Method::POST,
            "/v1/firmware",
            "/v1/firmware?version=2.1.0&model=esp32",
            Some(("application/octet-stream", image.clone())),
            &[],
            201,
        )
        .await
        .json();
    let sha = artifact["id"].as_str().unwrap().to_string();
    walk.call(
        Method::POST,
        "/v1/firmware",
        "/v1/firmware?version=2.1.0&model=esp32",
        Some(("application/octet-stream", image)),
        &[],
        200,
    )
    .await;
    walk.get("/v1/firmware", "/v1/firmware").await;
    walk.get("/v1/firmware/key", "/v1/firmware/key").await;
    walk.get("/v1/firmware/{id}", &format!("/v1/firmware/{sha}"))
        .await;
    let minted = walk
        .call(
            Method::POST,
            "/v1/firmware/{id}/url",
            &format!("/v1/firmware/{sha}/url?deviceId=walk-1"),
            None,
            &[],
            200,
        )
        .await
        .json();
    let url = minted["url"].as_str().unwrap();
    let download = &url[url.find("/v1/").unwrap()..];
    let template = "/v1/firmware/{id}/download";
    let part = walk
        .call(
            Method::GET,
            template,
            download,
            None,
            &[("range", "bytes=0-9")],
            206,
        )
        .await;
    assert_eq!(part.body.unwrap().len(), 10);
    walk.call(Method::HEAD, template, download, None, &[], 200)
        .await;
    walk.call(
        Method::GET,
        template,
        download,
        None,
        &[("range", "bytes=9999-")],
        416,
    )
    .await;

    // Rollouts.
    let spec: Value = serde_json::from_str(&SPEC.replace("SHA", &sha)).unwrap();
    walk.json(
        Method::POST,
        "/v1/rollouts",
        "/v1/rollouts",
        json!({"id": "walk", "spec": spec}),
        201,
    )
    .await;
    walk.get("/v1/rollouts", "/v1/rollouts").await;
    walk.get("/v1/rollouts/{id}", "/v1/rollouts/walk").await;
    let devices = walk
        .get("/v1/rollouts/{id}/devices", "/v1/rollouts/walk/devices")
        .await
        .json();
    assert_eq!(devices.as_array().unwrap().len(), 2, "{devices}");
    let trail = walk
        .get("/v1/rollouts/{id}/events", "/v1/rollouts/walk/events")
        .await
        .json();
    assert!(!trail["events"].as_array().unwrap().is_empty());
    let history = walk
        .get("/v1/devices/{id}/rollouts", "/v1/devices/walk-1/rollouts")
        .await
        .json();
    assert_eq!(history[0]["rollout"], "walk", "{history}");
    assert_eq!(history.as_array().unwrap().len(), 1, "{history}");
    let unknown = walk
        .call(
            Method::GET,
            "/v1/devices/{id}/rollouts",
            "/v1/devices/no-such-device/rollouts",
            None,
            &[],
            404,
        )
        .await
        .json();
    assert_eq!(unknown["errorCode"], 404001, "{unknown}");
    let command = "/v1/rollouts/{id}/{verb}";
    let paused = walk
        .call(
            Method::POST,
            command,
            "/v1/rollouts/walk/pause",
            None,
            &[],
            200,
        )
        .await
        .json();
    assert_eq!(paused["status"], "paused");
    let resumed = walk
        .json(
            Method::POST,
            command,
            "/v1/rollouts/walk/resume",
            json!({}),
            200,
        )
        .await
        .json();
    assert_eq!(resumed["status"], "running");

    // An artifact nothing references can go.
    let spare = walk
        .call(
            Method::POST,
            "/v1/firmware",
            "/v1/firmware?version=2.2.0&model=esp32",
            Some(("application/octet-stream", vec![7u8; 512])),
            &[],
            201,
        )
        .await
        .json();
    let spare = spare["id"].as_str().unwrap();
    walk.call(
        Method::DELETE,
        "/v1/firmware/{id}",
        &format!("/v1/firmware/{spare}"),
        None,
        &[],
        204,
    )
    .await;

    let described = walk.document.operations();
    let missing: Vec<_> = described.difference(&walk.called).collect();
    assert!(
        missing.is_empty(),
        "described but never called (add a step to this test): {missing:?}"
    );
}

/// A default policy lacking `right`, and one holding it (and as little else as there is).
fn policies_for(right: &str) -> (&'static str, &'static str) {
    match right {
        "RegistryRead" => ("service", "registryRead"),
        "RegistryWrite" => ("registryRead", "registryReadWrite"),
        "ServiceConnect" => ("registryReadWrite", "service"),
        other => panic!("the document names a right the hub does not have: {other}"),
    }
}

#[tokio::test]
async fn each_operation_demands_the_right_the_document_says() {
    let api = TestApi::start_with_firmware(Arc::new(fleethub_core::SystemClock)).await;
    let document = Document(served_document(&api).await);
    for (method, template) in document.operations() {
        let operation = document.operation(&method, &template);
        let verb = document.0["components"]["schemas"]["RolloutVerb"]["enum"][0]
            .as_str()
            .unwrap();
        let uri = template
            .replace("{id}", "no-such-thing")
            .replace("{verb}", verb);
        let http_method: Method = method.to_uppercase().parse().unwrap();
        let call = |token: Option<String>| {
            let (api, uri, http_method) = (&api, uri.clone(), http_method.clone());
            async move {
                send(
                    api,
                    Call {
                        method: http_method,
                        uri: &uri,
                        token: token.as_deref(),
                        body: b"not json".to_vec(),
                        content_type: "application/json",
                        headers: &[],
                    },
                )
                .await
            }
        };
        let what = format!("{} {uri}", method.to_uppercase());
        let requirements = operation["security"].as_array().unwrap();
        if requirements
            .iter()
            .all(|r| r.as_object().unwrap().is_empty())
        {
            let answer = call(None).await;
            assert_ne!(
                answer.status,
                StatusCode::UNAUTHORIZED,
                "{what} needs no credential"
            );
            continue;
        }
        let anonymous = call(None).await;
        assert_eq!(
            anonymous.status,
            StatusCode::UNAUTHORIZED,
            "{what} without a credential"
        );
        document.check_answer(&method, &template, &anonymous);
        // The SAS token and the session cookie need the same right.
        let scopes: BTreeSet<&str> = requirements
            .iter()
            .flat_map(|r| r.as_object().unwrap().values())
            .flat_map(|s| s.as_array().unwrap())
            .map(|s| s.as_str().unwrap())
            .collect();
        let scopes: Vec<&str> = scopes.into_iter().collect();
        match scopes.as_slice() {
            [] => {
                for policy in ["service", "device", "registryRead"] {
                    let answer = call(Some(api.token(policy))).await;
                    assert_eq!(answer.status, StatusCode::OK, "{what} as {policy}");
                }
            }
            [right, ..] => {
                let (lacking, holding) = policies_for(right);
                let refused = call(Some(api.token(lacking))).await;
                assert_eq!(
                    refused.status,
                    StatusCode::UNAUTHORIZED,
                    "{what} as {lacking}"
                );
                assert!(
                    refused.json()["message"]
                        .as_str()
                        .unwrap()
                        .contains(&format!("does not grant {right}")),
                    "{what} as {lacking}: {}",
                    refused.text()
                );
                let allowed = call(Some(api.token(holding))).await;
                assert_ne!(
                    allowed.status,
                    StatusCode::UNAUTHORIZED,
                    "{what} as {holding}: {}",
                    allowed.text()
                );
            }
        }
    }
}
