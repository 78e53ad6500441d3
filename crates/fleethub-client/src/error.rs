//! What can go wrong talking to a hub.

use reqwest::StatusCode;
use serde_json::Value;

/// A failed call: the hub's refusal (with IoT Hub's `errorCode` and message), a transport
/// failure, or credentials that cannot sign.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The hub answered with an error status.
    #[error("{what}: HTTP {status} {message}", status = .status.as_u16())]
    Hub {
        /// The call, e.g. `GET /twins/d1`.
        what: String,
        status: StatusCode,
        /// IoT Hub's numeric code (e.g. 404001), when the body has one.
        error_code: Option<u64>,
        /// The hub's message, or the body when it has none.
        message: String,
    },
    /// The request did not complete (connect, TLS, timeout, reading the body).
    #[error("{what}: {source}")]
    Transport {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    /// The hub answered 2xx with a body not in the expected shape, or refused part of a bulk call.
    #[error("{what}: {detail}")]
    Unexpected { what: String, detail: String },
    /// The connection string or key cannot sign tokens.
    #[error("{0}")]
    Credentials(String),
    /// A local file the call needs cannot be read.
    #[error("{0}")]
    Local(String),
    /// The client's concurrency limit was closed.
    #[error("the REST client is closed")]
    Closed,
}

impl ClientError {
    /// The error for a non-2xx answer to `what`.
    pub(crate) fn from_reply(what: &str, status: StatusCode, body: &Value) -> ClientError {
        let message = body["message"]
            .as_str()
            .or_else(|| body["Message"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| body.to_string());
        ClientError::Hub {
            what: what.to_string(),
            status,
            error_code: body["errorCode"].as_u64(),
            message,
        }
    }

    /// The HTTP status, when the hub answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Hub { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// IoT Hub's numeric error code, when the hub answered with one.
    pub fn error_code(&self) -> Option<u64> {
        match self {
            ClientError::Hub { error_code, .. } => *error_code,
            _ => None,
        }
    }
}
