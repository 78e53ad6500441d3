//! The operator's side: REST calls to the hub as `iothubowner` (or whichever policy the
//! connection string names), with bounded concurrency for per-device fan-out.

use super::roster::Roster;
use anyhow::{anyhow, bail, Context, Result};
use fleethub_core::connection_string::ConnectionString;
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Requests in flight at once when a step or an expectation touches many devices.
pub const FAN_OUT: usize = 32;
/// Devices per bulk registration call (the hub's limit).
const BULK: usize = 100;

/// A REST client for one hub.
#[derive(Clone)]
pub struct HubRest {
    http: reqwest::Client,
    /// `https://host:port`.
    pub base: String,
    host_name: String,
    key_name: String,
    key: String,
    limit: Arc<Semaphore>,
}

/// One page of query results.
#[derive(Debug, Clone)]
pub struct QueryPage {
    pub items: Vec<Value>,
    pub item_type: String,
    pub continuation: Option<String>,
}

/// A REST answer: status and JSON body (Null when empty or not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl Reply {
    /// Fails with the hub's own message unless 2xx.
    pub fn ok(self, what: &str) -> Result<Value> {
        if self.status.is_success() {
            return Ok(self.body);
        }
        let msg = self.body["message"]
            .as_str()
            .or_else(|| self.body["Message"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| self.body.to_string());
        bail!("{what}: HTTP {} {msg}", self.status.as_u16())
    }
}

impl HubRest {
    /// A client for the hub a service connection string names, at `base`, trusting `ca_pem`
    /// (or the public roots when `None`).
    pub fn new(conn: &ConnectionString, base: String, ca_pem: Option<&[u8]>) -> Result<HubRest> {
        let mut b = reqwest::Client::builder()
            .pool_max_idle_per_host(FAN_OUT * 2)
            .timeout(Duration::from_secs(60));
        if let Some(pem) = ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem).context("reading the CA PEM")? {
                b = b.add_root_certificate(cert);
            }
        }
        Ok(HubRest {
            http: b.build()?,
            base,
            host_name: conn.host_name.clone(),
            key_name: conn
                .shared_access_key_name
                .clone()
                .ok_or_else(|| anyhow!("--hub needs a service connection string with SharedAccessKeyName=… (e.g. iothubowner)"))?,
            key: conn
                .shared_access_key
                .clone()
                .ok_or_else(|| anyhow!("--hub connection string has no SharedAccessKey=…"))?,
            limit: Arc::new(Semaphore::new(FAN_OUT)),
        })
    }

    fn token(&self) -> Result<String> {
        let expiry = fleethub_core::Clock::unix(&fleethub_core::SystemClock) + 3600;
        Ok(fleethub_core::sas::generate_token(
            &self.host_name,
            &self.key,
            Some(&self.key_name),
            expiry,
        )?)
    }

    /// Any REST call; the path may carry a query string.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Reply> {
        let _permit = self.limit.acquire().await?;
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header("Authorization", self.token()?);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {}{path}", self.base))?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Reply { status, body })
    }

    /// Creates (or updates) every device of the roster with its derived key and its group's
    /// tags, [`BULK`] per call.
    pub async fn register(&self, roster: &Roster) -> Result<()> {
        let mut bodies = Vec::new();
        for g in &roster.groups {
            let ids: Vec<String> = (g.first..g.first + g.count)
                .map(|i| roster.device_id(i))
                .collect();
            for chunk in ids.chunks(BULK) {
                let body: Vec<Value> = chunk
                    .iter()
                    .map(|id| {
                        let key = roster.key(id);
                        json!({
                            "id": id,
                            "importMode": "createOrUpdate",
                            "authentication": {"type": "sas", "symmetricKey": {"primaryKey": key, "secondaryKey": key}},
                            "tags": g.tags,
                        })
                    })
                    .collect();
                bodies.push(Value::Array(body));
            }
        }
        let mut calls = futures_util::stream::iter(bodies)
            .map(|body| async move { self.call(Method::POST, "/devices", Some(&body)).await })
            .buffer_unordered(4);
        while let Some(reply) = calls.next().await {
            reply?.ok("bulk registration (POST /devices)")?;
        }
        Ok(())
    }

    /// The twin as the hub serves it; `None` when the device does not exist.
    pub async fn twin(&self, id: &str) -> Result<Option<Value>> {
        let reply = self
            .call(Method::GET, &format!("/twins/{id}"), None)
            .await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        reply.ok(&format!("GET /twins/{id}")).map(Some)
    }

    /// Twins of many devices, [`FAN_OUT`] at a time, in the order given; a failed fetch is `None`.
    pub async fn twins(&self, ids: &[String]) -> Vec<Option<Value>> {
        futures_util::stream::iter(ids)
            .map(|id| async move { self.twin(id).await.ok().flatten() })
            .buffered(FAN_OUT)
            .collect()
            .await
    }

    /// One page of `POST /devices/query`: the items, the `x-ms-item-type` and the next page's
    /// `x-ms-continuation` token.
    pub async fn query_page(
        &self,
        query: &str,
        page_size: Option<usize>,
        continuation: Option<&str>,
    ) -> Result<QueryPage> {
        let _permit = self.limit.acquire().await?;
        let mut req = self
            .http
            .post(format!("{}/devices/query", self.base))
            .header("Authorization", self.token()?)
            .json(&json!({ "query": query }));
        if let Some(c) = continuation {
            req = req.header("x-ms-continuation", c);
        }
        if let Some(n) = page_size {
            req = req.header("x-ms-max-item-count", n.to_string());
        }
        let resp = req.send().await.context("POST /devices/query")?;
        let status = resp.status();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let continuation = header("x-ms-continuation");
        let item_type = header("x-ms-item-type").unwrap_or_default();
        let body: Value = serde_json::from_slice(&resp.bytes().await?).unwrap_or(Value::Null);
        if status == StatusCode::NOT_FOUND && body.is_null() {
            bail!("this hub does not answer POST /devices/query; target groups or devices instead");
        }
        let rows = Reply { status, body }.ok(&format!("query \"{query}\""))?;
        Ok(QueryPage {
            items: rows.as_array().cloned().unwrap_or_default(),
            item_type,
            continuation,
        })
    }

    /// Device ids a hub query selects (`POST /devices/query`, following continuation tokens).
    pub async fn query_ids(&self, query: &str) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let mut continuation: Option<String> = None;
        loop {
            let page = self
                .query_page(query, Some(1000), continuation.as_deref())
                .await?;
            ids.extend(
                page.items
                    .iter()
                    .filter_map(|row| row["deviceId"].as_str().map(str::to_string)),
            );
            continuation = page.continuation;
            if continuation.is_none() {
                return Ok(ids);
            }
        }
    }
}
