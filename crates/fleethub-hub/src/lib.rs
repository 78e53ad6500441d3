//! The application core: the device registry, twins, direct methods, cloud-to-device messages,
//! telemetry, service and device authentication, and the connection registry through which every
//! device is reached. It knows nothing of wire formats: the gateway and the REST API translate.
//!
//! Every change follows one path: validate → one store transaction writing the state and its
//! event → acknowledge → side effects (push to the device) from the committed result.

pub mod auth;
pub mod certificates;
mod concurrency;
pub mod configurations;
pub mod connections;
pub mod device;
pub mod events;
pub mod firmware;
pub mod hub;
pub mod jobs;
pub mod messages;
pub mod methods;
pub mod metrics;
pub mod query;
pub mod quota;
pub mod registry;
pub mod rollouts;
mod startup;
pub mod twin;
pub mod twin_cache;

pub use auth::{AuthFailure, Authenticated, DeviceCredentials, Policy, Right};
pub use certificates::UploadedCertificate;
pub use configurations::{Configuration, ConfigurationContent, PutOutcome, QueryTestResult};
pub use connections::{ConnectionHandle, DeviceCommand};
pub use device::{Authentication, AuthenticationType, Device, DeviceStatus};
pub use events::{ChangeEvent, EventsPage};
pub use firmware::{
    Artifact, ArtifactDetails, DeviceDownloads, DownloadGrant, FirmwareConfig, MintedUrl,
    PublishedKey, Upload, UploadRequest, Uploaded,
};
/// How many devices the registry holds, by status (`GET /statistics/devices`).
pub use fleethub_store::DeviceCounts;
/// How many devices report one firmware version and update status.
pub use fleethub_store::FirmwareCount;
/// One device's row in a job (`devices.jobs`), as the store keeps it.
pub use fleethub_store::JobDeviceRow;
pub use hub::{Hub, HubConfig};
pub use jobs::{JobEngine, JobsConfig};
pub use messages::{C2dQueued, C2dRequest, TelemetryEvent, TelemetryIn};
pub use methods::{MethodRequest, MethodResponse};
pub use query::{QueryItem, QueryResult};
pub use quota::{DeviceQuota, QuotaConfig, Rate};
pub use registry::{BulkError, BulkOutcome};
pub use twin::{ConnectionState, DeviceTwin, Twin};
