//! The firmware store's REST calls (`/v1/firmware`): upload streamed from a file, list, show,
//! delete, the signing key and per-device download URLs.

use crate::{ClientError, HubClient};
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::path::Path;

/// What an upload says about its image.
#[derive(Debug, Clone, Default)]
pub struct FirmwareUpload {
    /// The semantic version.
    pub version: String,
    /// The compatible models.
    pub models: Vec<String>,
    /// Free text.
    pub notes: Option<String>,
    /// A detached signature (base64 DER) made offline over the manifest.
    pub signature: Option<String>,
    /// The SHA-256 the uploader expects the bytes to have.
    pub sha256: Option<String>,
}

/// `text` percent-encoded for a query value or one path segment (unreserved bytes kept).
pub(crate) fn query_value(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl HubClient {
    /// Uploads the image at `file`, read and sent a chunk at a time; `(created, artifact)`,
    /// `created` false when the same version and bytes were already stored.
    pub async fn upload_firmware(
        &self,
        file: &Path,
        upload: &FirmwareUpload,
    ) -> Result<(bool, Value), ClientError> {
        let mut query = format!(
            "version={}&model={}",
            query_value(&upload.version),
            query_value(&upload.models.join(","))
        );
        for (name, value) in [
            ("notes", &upload.notes),
            ("signature", &upload.signature),
            ("sha256", &upload.sha256),
        ] {
            if let Some(v) = value {
                query.push_str(&format!("&{name}={}", query_value(v)));
            }
        }
        let path = format!("/v1/firmware?{query}");
        let what = format!("POST {path}");
        let opened = tokio::fs::File::open(file).await;
        let handle = opened.map_err(|e| ClientError::Local(format!("{}: {e}", file.display())))?;
        let length = handle.metadata().await.map(|m| m.len()).ok();
        let chunks = crate::registry_files::read_chunks(handle, None).boxed();
        let token = self.token()?;
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Authorization", token)
            .body(reqwest::Body::wrap_stream(chunks));
        if let Some(length) = length {
            req = req.header("Content-Length", length);
        }
        let reply = crate::send_request(req, &what).await?;
        let created = reply.status == StatusCode::CREATED;
        Ok((created, reply.ok(&what)?))
    }

    /// Every artifact, in version order.
    pub async fn list_firmware(&self) -> Result<Value, ClientError> {
        self.json(Method::GET, "/v1/firmware", None).await
    }

    /// One artifact by SHA-256 or version, with its downloads.
    pub async fn firmware(&self, id: &str) -> Result<Value, ClientError> {
        let path = format!("/v1/firmware/{}", query_value(id));
        self.json(Method::GET, &path, None).await
    }

    /// Deletes an artifact nothing points at.
    pub async fn delete_firmware(&self, id: &str) -> Result<(), ClientError> {
        let path = format!("/v1/firmware/{}", query_value(id));
        let reply = self.call(Method::DELETE, &path, None).await?;
        reply.ok(&format!("DELETE {path}")).map(|_| ())
    }

    /// The hub's firmware signing key (public half).
    pub async fn firmware_key(&self) -> Result<Value, ClientError> {
        self.json(Method::GET, "/v1/firmware/key", None).await
    }

    /// A download URL for one device, and the `desired.firmware` object carrying it.
    pub async fn firmware_url(
        &self,
        id: &str,
        device_id: &str,
        expires_in_seconds: Option<u64>,
    ) -> Result<Value, ClientError> {
        let mut path = format!(
            "/v1/firmware/{}/url?deviceId={}",
            query_value(id),
            query_value(device_id)
        );
        if let Some(s) = expires_in_seconds {
            path.push_str(&format!("&expiresInSeconds={s}"));
        }
        self.json(Method::POST, &path, None).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_escape_everything_but_unreserved_characters() {
        assert_eq!(super::query_value("a+b/c=d e,f"), "a%2Bb%2Fc%3Dd%20e%2Cf");
        assert_eq!(super::query_value("2.1.0-rc.1"), "2.1.0-rc.1");
    }
}
