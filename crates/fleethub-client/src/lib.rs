//! A REST client for the hub's service API (IoT Hub's routes plus FleetHub's `/v1` ones), signed
//! with SAS tokens from a shared access policy. The CLI, the simulator's operator steps, the
//! benchmarks and the integration tests all talk to a hub through it.
//!
//! Calls return the hub's JSON or a [`ClientError`] that carries IoT Hub's `errorCode` and
//! message; [`HubClient::call`] is the raw form for anything without a typed method.

mod configurations;
mod error;
mod firmware;
mod query;
mod registry_files;
mod rollouts;
mod telemetry;

pub use error::ClientError;
pub use firmware::FirmwareUpload;
pub use query::QueryPage;
pub use registry_files::ImportProgress;
pub use reqwest::{header::HeaderMap, Method, StatusCode};
pub use rollouts::RolloutCommand;
pub use telemetry::{TelemetryMessage, TelemetryPage};

use fleethub_core::connection_string::ConnectionString;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Requests in flight at once through one client (and its clones) by default; fan-out helpers
/// such as [`HubClient::twins`] run this many at a time.
pub const FAN_OUT: usize = 32;
/// Devices per bulk registry call (the hub's limit, as IoT Hub's).
pub const BULK_LIMIT: usize = 100;
/// How long a token this client signs stays valid.
const TOKEN_TTL_SECS: u64 = 6 * 3600;

/// A shared access policy: what tokens are signed with.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The hub's host name, the audience (`sr`) of every token.
    pub host_name: String,
    /// The policy's name, e.g. `iothubowner`.
    pub key_name: String,
    /// The policy's key (base64).
    pub key: String,
}

impl Credentials {
    /// The policy a service connection string names.
    pub fn from_connection_string(conn: &ConnectionString) -> Result<Credentials, ClientError> {
        Ok(Credentials {
            host_name: conn.host_name.clone(),
            key_name: conn.shared_access_key_name.clone().ok_or_else(|| {
                ClientError::Credentials(
                    "a service connection string needs SharedAccessKeyName=… (e.g. iothubowner)"
                        .into(),
                )
            })?,
            key: conn.shared_access_key.clone().ok_or_else(|| {
                ClientError::Credentials("the connection string has no SharedAccessKey=…".into())
            })?,
        })
    }

    /// A token for the whole hub, valid for `ttl_secs` from now.
    pub fn token(&self, ttl_secs: u64) -> Result<String, ClientError> {
        let expiry = fleethub_core::Clock::unix(&fleethub_core::SystemClock) + ttl_secs;
        fleethub_core::sas::generate_token(&self.host_name, &self.key, Some(&self.key_name), expiry)
            .map_err(|e| ClientError::Credentials(e.to_string()))
    }
}

/// An HTTP client trusting `ca_pem` (every certificate in it) or, without one, the public roots.
pub fn http_client(
    ca_pem: Option<&[u8]>,
    timeout: Duration,
    idle_per_host: usize,
) -> Result<reqwest::Client, ClientError> {
    let mut b = reqwest::Client::builder()
        .pool_max_idle_per_host(idle_per_host)
        .timeout(timeout);
    if let Some(pem) = ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| ClientError::Credentials(format!("reading the CA PEM: {e}")))?;
        for cert in certs {
            b = b.add_root_certificate(cert);
        }
    }
    b.build().map_err(|source| ClientError::Transport {
        what: "building the HTTP client".into(),
        source,
    })
}

/// A hub's answer: status, headers and JSON body (`Null` when empty or not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The body when 2xx, else the hub's error (code and message) for `what` was asked.
    pub fn ok(self, what: &str) -> Result<Value, ClientError> {
        if self.status.is_success() {
            return Ok(self.body);
        }
        Err(ClientError::from_reply(what, self.status, &self.body))
    }

    /// IoT Hub's numeric `errorCode` of an error body (0 when there is none).
    pub fn error_code(&self) -> u64 {
        self.body["errorCode"].as_u64().unwrap_or_default()
    }
}

/// Sends a request built outside [`HubClient::call`] (a streamed body, a long timeout) and reads
/// its whole answer as a [`Reply`].
async fn send_request(req: reqwest::RequestBuilder, what: &str) -> Result<Reply, ClientError> {
    let transport = |source| ClientError::Transport {
        what: what.to_string(),
        source,
    };
    let resp = req.send().await.map_err(transport)?;
    read_reply(resp, what).await
}

/// A response's status, headers and JSON body (`Null` when empty or not JSON).
async fn read_reply(resp: reqwest::Response, what: &str) -> Result<Reply, ClientError> {
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp
        .bytes()
        .await
        .map_err(|source| ClientError::Transport {
            what: what.to_string(),
            source,
        })?;
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// How a bulk registry call went: IoT Hub's `BulkRegistryOperationResult`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkResult {
    pub is_successful: bool,
    /// One entry per device that failed (`deviceId`, `errorCode`, `errorStatus`).
    #[serde(default)]
    pub errors: Vec<Value>,
    #[serde(default)]
    pub warnings: Vec<Value>,
}

/// A direct method to invoke on a device.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MethodCall {
    pub method_name: String,
    pub payload: Value,
    pub response_timeout_in_seconds: u64,
    /// Seconds the hub waits for the device to connect; 0 (left out) means it must be
    /// connected now.
    #[serde(skip_serializing_if = "is_zero")]
    pub connect_timeout_in_seconds: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A device's answer to a direct method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodResult {
    pub status: i64,
    #[serde(default)]
    pub payload: Value,
}

/// A REST client for one hub; clones share the connection pool and the concurrency limit.
#[derive(Clone)]
pub struct HubClient {
    http: reqwest::Client,
    base: String,
    credentials: Credentials,
    limit: Arc<Semaphore>,
    token_ttl_secs: u64,
}

impl HubClient {
    /// A client for the hub at `base` (`https://host:port`), signing with `credentials`.
    pub fn new(http: reqwest::Client, base: String, credentials: Credentials) -> HubClient {
        HubClient {
            http,
            base,
            credentials,
            limit: Arc::new(Semaphore::new(FAN_OUT)),
            token_ttl_secs: TOKEN_TTL_SECS,
        }
    }

    /// This client with tokens valid for `secs` (six hours by default): for a hub whose clock
    /// runs ahead of this machine's (`fleethub demo`'s compressed nights).
    pub fn with_token_ttl(mut self, secs: u64) -> HubClient {
        self.token_ttl_secs = secs;
        self
    }

    /// A client for the hub a service connection string names, at `base`, trusting `ca_pem`
    /// (or the public roots when `None`).
    pub fn from_connection_string(
        conn: &ConnectionString,
        base: String,
        ca_pem: Option<&[u8]>,
    ) -> Result<HubClient, ClientError> {
        let credentials = Credentials::from_connection_string(conn)?;
        let http = http_client(ca_pem, Duration::from_secs(60), FAN_OUT * 2)?;
        Ok(HubClient::new(http, base, credentials))
    }

    /// `https://host:port`, what every path is appended to.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A fresh token for this client's policy.
    pub fn token(&self) -> Result<String, ClientError> {
        self.credentials.token(self.token_ttl_secs)
    }

    /// Any REST call with this client's token; the path may carry a query string.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, ClientError> {
        let token = self.token()?;
        self.call_as(method, path, body, &[], Some(&token)).await
    }

    /// Any REST call with extra headers and the given `Authorization` (or none).
    pub async fn call_as(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
        authorization: Option<&str>,
    ) -> Result<Reply, ClientError> {
        let (status, headers, bytes) = self
            .send(method, path, body, headers, authorization)
            .await?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// One request within the client's limit; answers the status, headers and raw body.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
        authorization: Option<&str>,
    ) -> Result<(StatusCode, HeaderMap, bytes::Bytes), ClientError> {
        let what = || format!("{method} {}{path}", self.base);
        let _permit = self
            .limit
            .acquire()
            .await
            .map_err(|_| ClientError::Closed)?;
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(t) = authorization {
            req = req.header("Authorization", t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let transport = |source| ClientError::Transport {
            what: what(),
            source,
        };
        let resp = req.send().await.map_err(transport)?;
        let (status, headers) = (resp.status(), resp.headers().clone());
        let bytes = resp.bytes().await.map_err(transport)?;
        Ok((status, headers, bytes))
    }

    async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let what = format!("{method} {path}");
        self.call(method, path, body).await?.ok(&what)
    }

    /// `GET` that answers `None` on 404.
    async fn get_optional(&self, path: &str) -> Result<Option<Value>, ClientError> {
        let reply = self.call(Method::GET, path, None).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        reply.ok(&format!("GET {path}")).map(Some)
    }

    /// The registry entry of a device; `None` when it does not exist.
    pub async fn device(&self, id: &str) -> Result<Option<Value>, ClientError> {
        self.get_optional(&format!("/devices/{id}")).await
    }

    /// Creates or updates a device (`PUT /devices/{id}`); answers the stored entry.
    pub async fn put_device(&self, id: &str, device: &Value) -> Result<Value, ClientError> {
        self.json(Method::PUT, &format!("/devices/{id}"), Some(device))
            .await
    }

    /// Replaces a device's registry entry only if it is still at `etag` (`If-Match`); a change
    /// in between is refused with 412.
    pub async fn update_device(
        &self,
        id: &str,
        device: &Value,
        etag: &str,
    ) -> Result<Value, ClientError> {
        let path = format!("/devices/{id}");
        self.json_if_match(Method::PUT, &path, Some(device), etag)
            .await
    }

    /// Deletes a device only if it is still at `etag`.
    pub async fn delete_device_if(&self, id: &str, etag: &str) -> Result<(), ClientError> {
        let path = format!("/devices/{id}");
        self.json_if_match(Method::DELETE, &path, None, etag)
            .await
            .map(drop)
    }

    /// A call with `If-Match: "{etag}"` (`*` matches any version).
    async fn json_if_match(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        etag: &str,
    ) -> Result<Value, ClientError> {
        let what = format!("{method} {path}");
        let token = self.token()?;
        let quoted = if etag == "*" || etag.starts_with('"') {
            etag.to_string()
        } else {
            format!("\"{etag}\"")
        };
        self.call_as(method, path, body, &[("If-Match", &quoted)], Some(&token))
            .await?
            .ok(&what)
    }

    /// Deletes a device.
    pub async fn delete_device(&self, id: &str) -> Result<(), ClientError> {
        self.json(Method::DELETE, &format!("/devices/{id}"), None)
            .await
            .map(drop)
    }

    /// One bulk registry call (`POST /devices`, at most [`BULK_LIMIT`] entries). The call
    /// succeeds when the hub answered; per-device failures are in the result.
    pub async fn bulk(&self, entries: &[Value]) -> Result<BulkResult, ClientError> {
        let body = self
            .json(
                Method::POST,
                "/devices",
                Some(&Value::from(entries.to_vec())),
            )
            .await?;
        serde_json::from_value(body).map_err(|e| ClientError::Unexpected {
            what: "POST /devices".into(),
            detail: e.to_string(),
        })
    }

    /// Bulk-registers every entry, [`BULK_LIMIT`] per call with `concurrency` calls in flight;
    /// fails on the first call or entry the hub refused.
    pub async fn bulk_all(
        &self,
        entries: Vec<Value>,
        concurrency: usize,
    ) -> Result<(), ClientError> {
        let chunks: Vec<Vec<Value>> = entries.chunks(BULK_LIMIT).map(<[Value]>::to_vec).collect();
        self.bulk_each(chunks.into_iter(), concurrency).await
    }

    /// Bulk-registers chunks as an iterator yields them (so a million entries need not be built
    /// at once), `concurrency` calls in flight; fails on the first refusal.
    pub async fn bulk_each(
        &self,
        chunks: impl Iterator<Item = Vec<Value>>,
        concurrency: usize,
    ) -> Result<(), ClientError> {
        let mut calls = futures_util::stream::iter(chunks)
            .map(|chunk| async move { self.bulk(&chunk).await })
            .buffer_unordered(concurrency.max(1));
        while let Some(result) = calls.next().await {
            let result = result?;
            if !result.is_successful {
                return Err(ClientError::Unexpected {
                    what: "bulk registration (POST /devices)".into(),
                    detail: Value::from(result.errors).to_string(),
                });
            }
        }
        Ok(())
    }

    /// The twin as the hub serves it; `None` when the device does not exist.
    pub async fn twin(&self, id: &str) -> Result<Option<Value>, ClientError> {
        self.get_optional(&format!("/twins/{id}")).await
    }

    /// Twins of many devices, [`FAN_OUT`] at a time, in the order given; a failed fetch is `None`.
    pub async fn twins(&self, ids: &[String]) -> Vec<Option<Value>> {
        futures_util::stream::iter(ids)
            .map(|id| async move { self.twin(id).await.ok().flatten() })
            .buffered(FAN_OUT)
            .collect()
            .await
    }

    /// Merges a patch (`tags`, `properties.desired`) into a twin; answers the twin.
    pub async fn patch_twin(&self, id: &str, patch: &Value) -> Result<Value, ClientError> {
        self.json(Method::PATCH, &format!("/twins/{id}"), Some(patch))
            .await
    }

    /// Replaces a twin's tags and desired properties (`PUT /twins/{id}`), if it is still at
    /// `etag` when one is given; answers the twin.
    pub async fn replace_twin(
        &self,
        id: &str,
        twin: &Value,
        etag: Option<&str>,
    ) -> Result<Value, ClientError> {
        let path = format!("/twins/{id}");
        self.json_if_match(Method::PUT, &path, Some(twin), etag.unwrap_or("*"))
            .await
    }

    /// Merges a patch into a twin only if it is still at `etag`; answers the twin.
    pub async fn patch_twin_if(
        &self,
        id: &str,
        patch: &Value,
        etag: &str,
    ) -> Result<Value, ClientError> {
        let path = format!("/twins/{id}");
        self.json_if_match(Method::PATCH, &path, Some(patch), etag)
            .await
    }

    /// Invokes a direct method and waits for the device's answer.
    pub async fn invoke_method(
        &self,
        id: &str,
        call: &MethodCall,
    ) -> Result<MethodResult, ClientError> {
        let path = format!("/twins/{id}/methods");
        let body = serde_json::to_value(call).map_err(|e| ClientError::Unexpected {
            what: path.clone(),
            detail: e.to_string(),
        })?;
        let answer = self.json(Method::POST, &path, Some(&body)).await?;
        serde_json::from_value(answer).map_err(|e| ClientError::Unexpected {
            what: format!("POST {path}"),
            detail: e.to_string(),
        })
    }

    /// Creates a job (`PUT /jobs/v2/{id}`); answers the job as stored.
    pub async fn create_job(&self, id: &str, job: &Value) -> Result<Value, ClientError> {
        self.json(Method::PUT, &format!("/jobs/v2/{id}"), Some(job))
            .await
    }

    /// A job's document with its status and statistics; `None` when there is no such job.
    pub async fn job(&self, id: &str) -> Result<Option<Value>, ClientError> {
        self.get_optional(&format!("/jobs/v2/{id}")).await
    }

    /// Cancels a job; answers the job.
    pub async fn cancel_job(&self, id: &str) -> Result<Value, ClientError> {
        self.json(Method::POST, &format!("/jobs/v2/{id}/cancel"), None)
            .await
    }

    /// Every job the hub keeps (`GET /jobs/v2/query`), newest first, optionally of one type
    /// (`scheduleUpdateTwin`, `scheduleDeviceMethod`) or status, following continuation tokens.
    pub async fn list_jobs(
        &self,
        job_type: Option<&str>,
        job_status: Option<&str>,
    ) -> Result<Vec<Value>, ClientError> {
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut params = vec![];
            if let Some(t) = job_type {
                params.push(format!("jobType={t}"));
            }
            if let Some(s) = job_status {
                params.push(format!("jobStatus={s}"));
            }
            if let Some(t) = &token {
                params.push(format!(
                    "continuationToken={}",
                    percent_encoding::utf8_percent_encode(t, percent_encoding::NON_ALPHANUMERIC)
                ));
            }
            let path = format!("/jobs/v2/query?{}", params.join("&"));
            let page = self.json(Method::GET, &path, None).await?;
            if let Some(page_items) = page["items"].as_array() {
                items.extend(page_items.iter().cloned());
            }
            token = page["continuationToken"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                return Ok(items);
            }
        }
    }

    /// `GET /statistics/devices`: total, enabled and disabled device counts.
    pub async fn device_statistics(&self) -> Result<Value, ClientError> {
        self.json(Method::GET, "/statistics/devices", None).await
    }

    /// Queues a cloud-to-device message (`POST /v1/devices/{id}/messages`).
    pub async fn send_message(&self, id: &str, message: &Value) -> Result<Value, ClientError> {
        self.json(
            Method::POST,
            &format!("/v1/devices/{id}/messages"),
            Some(message),
        )
        .await
    }

    /// The hub's metrics in Prometheus' text format (`GET /metrics`).
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let token = self.token()?;
        let (status, _, bytes) = self
            .send(Method::GET, "/metrics", None, &[], Some(&token))
            .await?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if !status.is_success() {
            let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
            return Err(ClientError::from_reply("GET /metrics", status, &body));
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests;
