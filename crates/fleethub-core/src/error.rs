//! The one table of errors: every failure a user can see has a numeric IoT Hub-style code, an HTTP
//! status and a name. The REST API and the MQTT gateway both answer from this table.

use std::fmt;

macro_rules! error_codes {
    ($( $(#[doc = $doc:literal])* $variant:ident = ($code:expr, $status:expr) ),+ $(,)?) => {
        /// A numeric error code with its HTTP status; names follow IoT Hub's where one exists.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[doc = $doc])* $variant, )+
        }

        impl ErrorCode {
            /// Every code, for documentation and tests.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)+];

            /// The six-digit code IoT Hub puts in `errorCode` and `iothub-errorcode`.
            pub fn code(self) -> u32 {
                match self { $(ErrorCode::$variant => $code,)+ }
            }

            /// The HTTP status this error answers with.
            pub fn http_status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)+ }
            }

            /// The name, as in the `iothub-errorcode` header.
            pub fn name(self) -> &'static str {
                match self { $(ErrorCode::$variant => stringify!($variant),)+ }
            }

            /// What the code means: its doc comment, as docs/rest-api.md shows it.
            pub fn meaning(self) -> &'static str {
                match self { $(ErrorCode::$variant => concat!($($doc),*).trim_ascii(),)+ }
            }
        }
    };
}

error_codes! {
    /// A request argument is malformed or out of range.
    ArgumentInvalid = (400004, 400),
    /// A required argument is missing.
    ArgumentNull = (400005, 400),
    /// The body is not valid JSON or not of the expected shape.
    IotHubFormatError = (400006, 400),
    /// A device id or other identifier breaks the naming rules.
    InvalidDeviceId = (400008, 400),
    /// A query failed to parse or uses something unsupported.
    InvalidQuery = (400020, 400),
    /// A twin key breaks the key rules ('.', '$', space, control characters, length).
    InvalidTwinKey = (400021, 400),
    /// A twin document is nested deeper than allowed.
    TwinDepthExceeded = (400022, 400),
    /// A single twin value is larger than allowed.
    TwinValueTooLarge = (400023, 400),
    /// A job request is invalid.
    JobInvalid = (400030, 400),
    /// A firmware upload's bytes do not match its declared SHA-256, or its detached signature
    /// does not verify against the hub's firmware signing key.
    FirmwareVerificationFailed = (400040, 400),
    /// A Range header is not `bytes=first-last`, `bytes=first-` or `bytes=-suffix`.
    InvalidRange = (400041, 400),
    /// A rollout spec or command is invalid (the message names the field), or asks for a
    /// downgrade without `allow_downgrade`.
    RolloutInvalid = (400050, 400),
    /// Authorization header or token is missing or malformed.
    IotHubUnauthorizedAccess = (401002, 401),
    /// The token is valid but its signature, expiry or rights do not allow this.
    IotHubUnauthorized = (401003, 401),
    /// The device is disabled.
    DeviceDisabled = (403001, 403),
    /// A hub-wide quota is full (configurations: 100 per hub).
    IotHubQuotaExceeded = (403002, 403),
    /// The device has too many queued cloud-to-device messages.
    DeviceMaximumQueueDepthExceeded = (403004, 403),
    /// A twin section exceeds its size limit.
    TwinSizeExceeded = (403100, 403),
    /// A firmware download URL was altered, has expired, or belongs to another device.
    FirmwareUrlForbidden = (403200, 403),
    /// No REST resource at this path.
    NotFound = (404000, 404),
    /// No device with this id.
    DeviceNotFound = (404001, 404),
    /// No configuration with this id.
    ConfigurationNotFound = (404005, 404),
    /// No job with this id.
    JobNotFound = (404002, 404),
    /// No module with this id.
    ModuleNotFound = (404010, 404),
    /// No certificate with this name.
    CertificateNotFound = (404011, 404),
    /// No firmware artifact with this id (SHA-256) or version.
    FirmwareNotFound = (404020, 404),
    /// No rollout with this id.
    RolloutNotFound = (404030, 404),
    /// The device is not connected (direct methods).
    DeviceNotOnline = (404103, 404),
    /// The device's connection closed before it answered.
    DeviceConnectionClosedRemotely = (404104, 404),
    /// The path exists but does not support this HTTP method.
    MethodNotAllowed = (405000, 405),
    /// A device with this id already exists.
    DeviceAlreadyExists = (409001, 409),
    /// A job with this id already exists.
    JobAlreadyExists = (409003, 409),
    /// A configuration with this id already exists (create without If-Match), or a deleted one
    /// of that id is still being removed from its devices.
    ConfigurationAlreadyExists = (409004, 409),
    /// A firmware version is already stored with other bytes, or these bytes under another
    /// version (artifacts are immutable).
    FirmwareConflict = (409020, 409),
    /// A firmware artifact is still referenced (a twin's desired firmware, a job in flight) and
    /// cannot be deleted.
    FirmwareInUse = (409021, 409),
    /// A rollout with this id already exists.
    RolloutAlreadyExists = (409030, 409),
    /// The rollout's state does not allow this command now (resume a running rollout, command a
    /// finished one).
    RolloutStateConflict = (409031, 409),
    /// The etag in If-Match does not match, or the twin or device changed while the change was
    /// being written; read it again and retry.
    PreconditionFailed = (412001, 412),
    /// The message or payload exceeds its size limit.
    MessageTooLarge = (413001, 413),
    /// The requested byte range starts beyond the end of the artifact.
    RangeNotSatisfiable = (416000, 416),
    /// Too many requests; try again later.
    ThrottlingException = (429001, 429),
    /// The hub is over its ingest backlog; try again later.
    ThrottleBacklogLimitExceeded = (429002, 429),
    /// Too many jobs are running at once.
    ThrottlingMaxActiveJobCountExceeded = (429004, 429),
    /// Something failed inside the hub; the message says what.
    ServerError = (500001, 500),
    /// The request asks for something this hub does not implement (AMQP).
    NotImplemented = (501000, 501),
    /// The hub is shutting down, its store is unavailable or full, or a change kept losing races
    /// with other writers; retry later.
    ServiceUnavailable = (503001, 503),
    /// The device did not answer a direct method in time.
    GatewayTimeout = (504101, 504),
}

impl ErrorCode {
    /// The whole table as Markdown, one row per code: the table docs/rest-api.md shows (a test
    /// keeps the two the same).
    pub fn markdown_table() -> String {
        let mut table = String::from("| code | HTTP | name | meaning |\n|---|---|---|---|\n");
        for c in Self::ALL {
            table.push_str(&format!(
                "| {} | {} | `{}` | {} |\n",
                c.code(),
                c.http_status(),
                c.name(),
                c.meaning()
            ));
        }
        table
    }
}

/// Every failed REST call's body (and the MQTT gateway's error payloads), in IoT Hub's shape.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// The numeric code from the error table, e.g. 404001.
    pub error_code: u32,
    /// What was wrong and what would be right.
    pub message: String,
    /// Always empty: the hub has no request tracking.
    pub tracking_id: String,
    /// The hub clock's time of the answer.
    pub timestamp_utc: String,
    pub info: ErrorInfo,
    /// `ErrorCode:{Name};{message}`, which the service SDKs parse to pick an error class.
    #[serde(rename = "Message")]
    pub sdk_message: String,
    /// IoT Hub's `Tracking ID:…-TimeStamp:…` line.
    #[serde(rename = "ExceptionMessage")]
    pub exception_message: String,
}

/// The error's name, as the `iothub-errorcode` header also carries it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorInfo {
    /// The error's name, e.g. `DeviceNotFound`.
    pub name: String,
}

/// An error a user sees: a code from the table and a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubError {
    pub code: ErrorCode,
    pub message: String,
}

impl HubError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        HubError {
            code,
            message: message.into(),
        }
    }

    /// The IoT Hub-style JSON body: `{"errorCode":…, "message":…}` (plus the name for people),
    /// and IoT Hub's own `Message` (`ErrorCode:{Name};{message}`) and `ExceptionMessage`, which the
    /// service SDKs parse to pick an error class (Node's `DeviceNotFoundError`, …). `now` is the
    /// hub clock's time, stamped as `timestampUtc`.
    pub fn to_json(&self, now: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
        serde_json::to_value(self.to_body(now)).unwrap_or_default()
    }

    /// [`HubError::to_json`]'s body as a typed value (the REST API's OpenAPI document describes it).
    pub fn to_body(&self, now: chrono::DateTime<chrono::Utc>) -> ErrorBody {
        let tracking_id = String::new();
        ErrorBody {
            error_code: self.code.code(),
            message: self.message.clone(),
            timestamp_utc: crate::time::format_timestamp(now),
            info: ErrorInfo {
                name: self.code.name().to_string(),
            },
            sdk_message: self.sdk_message(),
            exception_message: format!(
                "Tracking ID:{tracking_id}-TimeStamp:{}",
                now.format("%m/%d/%Y %H:%M:%S")
            ),
            tracking_id,
        }
    }

    /// `ErrorCode:{Name};{message}`. The Node SDK splits on `;` and keeps only the second part as
    /// the message, so any `;` in the message becomes `,`.
    pub fn sdk_message(&self) -> String {
        format!(
            "ErrorCode:{};{}",
            self.code.name(),
            self.message.replace(';', ",")
        )
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ArgumentInvalid, message)
    }

    pub fn format(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::IotHubFormatError, message)
    }

    pub fn device_not_found(device_id: &str) -> Self {
        Self::new(
            ErrorCode::DeviceNotFound,
            format!("device '{device_id}' does not exist"),
        )
    }

    pub fn server(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ServerError, message)
    }
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code.name(),
            self.code.code(),
            self.message
        )
    }
}

impl std::error::Error for HubError {}

/// Shorthand for results whose error a user sees.
pub type HubResult<T> = Result<T, HubError>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Node's `azure-iothub` reads `Message`, takes the code between `ErrorCode:` and the first
    /// `;` and the text up to the next `;`; without it every failure was a bare `Error`.
    #[test]
    fn error_body_carries_iot_hubs_message_for_the_node_sdk() {
        let e = HubError::new(
            ErrorCode::DeviceNotFound,
            "device 'x' does not exist; create it first",
        );
        let now = chrono::DateTime::parse_from_rfc3339("2031-05-06T07:08:09Z")
            .unwrap()
            .to_utc();
        let body = e.to_json(now);
        assert_eq!(
            body["timestampUtc"],
            crate::time::format_timestamp(now),
            "stamped with the time it is given (the hub clock's), not the system's"
        );
        assert!(body["ExceptionMessage"]
            .as_str()
            .unwrap()
            .ends_with("TimeStamp:05/06/2031 07:08:09"));
        let message = body["Message"].as_str().unwrap();
        let parts: Vec<&str> = message.split(';').collect();
        assert_eq!(parts[0].split(':').nth(1), Some("DeviceNotFound"));
        assert_eq!(parts[1], "device 'x' does not exist, create it first");
        assert_eq!(parts.len(), 2, "a ';' in the message would cut it short");
        assert!(body["ExceptionMessage"]
            .as_str()
            .unwrap()
            .starts_with("Tracking ID:"));
        assert_eq!(body["errorCode"], 404001, "today's fields stay");
        assert_eq!(
            body["message"],
            "device 'x' does not exist; create it first"
        );
    }

    /// docs/rest-api.md shows the error table between two markers; it must be this table, so
    /// the documentation never names a code the hub does not send or misses one it does.
    /// `UPDATE_DOCS=1 cargo test -p fleethub-core` rewrites it.
    #[test]
    fn the_error_table_in_the_rest_docs_is_the_one_the_hub_answers_from() {
        const START: &str = "<!-- error-table: generated from ErrorCode; UPDATE_DOCS=1 cargo test -p fleethub-core -->\n";
        const END: &str = "<!-- error-table end -->";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/rest-api.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let (Some(start), Some(end)) = (doc.find(START), doc.find(END)) else {
            panic!("{} lacks the error-table markers", path.display());
        };
        let shown = &doc[start + START.len()..end];
        let table = ErrorCode::markdown_table();
        if shown != table {
            if std::env::var_os("UPDATE_DOCS").is_some() {
                let updated = format!("{}{table}{}", &doc[..start + START.len()], &doc[end..]);
                std::fs::write(&path, updated).unwrap();
            } else {
                panic!(
                    "docs/rest-api.md shows another error table; run \
                     `UPDATE_DOCS=1 cargo test -p fleethub-core` to rewrite it.\n\
                     expected:\n{table}\nshown:\n{shown}"
                );
            }
        }
        assert!(ErrorCode::ALL.iter().all(|c| !c.meaning().is_empty()));
        assert_eq!(
            ErrorCode::DeviceNotFound.meaning(),
            "No device with this id."
        );
    }

    #[test]
    fn codes_are_unique_and_match_their_status() {
        let mut seen = HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.code()), "duplicate code {}", c.code());
            assert_eq!(
                c.code() / 1000,
                c.http_status() as u32,
                "{} prefix",
                c.name()
            );
        }
    }
}
