//! Configurations (IoT Hub automatic device management): create, update with an etag, show,
//! list and delete, over `/configurations`.

use crate::{ClientError, HubClient};
use reqwest::Method;
use serde_json::Value;

/// A configuration id as one path segment (ids may hold `%`, `+`, `'`, `*` and `!`).
fn segment(id: &str) -> String {
    crate::firmware::query_value(id)
}

impl HubClient {
    /// Creates a configuration (`etag` `None`; a taken id is refused) or updates one (`etag`
    /// the one last read, or `*`); answers it as stored, with its metrics.
    pub async fn put_configuration(
        &self,
        id: &str,
        configuration: &Value,
        etag: Option<&str>,
    ) -> Result<Value, ClientError> {
        let path = format!("/configurations/{}", segment(id));
        let quoted = etag.map(|e| format!("\"{e}\""));
        let headers: Vec<(&str, &str)> = quoted.iter().map(|e| ("If-Match", e.as_str())).collect();
        let token = self.token()?;
        let reply = self
            .call_as(
                Method::PUT,
                &path,
                Some(configuration),
                &headers,
                Some(&token),
            )
            .await?;
        reply.ok(&format!("PUT {path}"))
    }

    /// One configuration with its metrics counted now; `None` when it does not exist.
    pub async fn configuration(&self, id: &str) -> Result<Option<Value>, ClientError> {
        self.get_optional(&format!("/configurations/{}", segment(id)))
            .await
    }

    /// Up to `top` configurations (all, up to the hub's 100, when `None`), in id order.
    pub async fn list_configurations(&self, top: Option<u64>) -> Result<Value, ClientError> {
        let path = match top {
            Some(n) => format!("/configurations?top={n}"),
            None => "/configurations".to_string(),
        };
        self.json(Method::GET, &path, None).await
    }

    /// Deletes a configuration; its devices lose its settings and get the next one's.
    pub async fn delete_configuration(&self, id: &str) -> Result<(), ClientError> {
        let path = format!("/configurations/{}", segment(id));
        let reply = self.call(Method::DELETE, &path, None).await?;
        reply.ok(&format!("DELETE {path}")).map(drop)
    }
}
