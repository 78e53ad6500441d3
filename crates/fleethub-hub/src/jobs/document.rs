//! The job document the hub stores in `jobs.body`, and [`Job`], what it answers with
//! (`fleethub-api` writes it as IoT Hub's `JobResponse`).

use super::rate::{Pace, RateControl};
use fleethub_core::{HubError, HubResult};
use fleethub_store::{JobDeviceCounts, JobRow};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

pub use fleethub_core::jobs::JobStatus;

/// What a job does to each device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobType {
    /// Merge-patches tags and desired properties.
    #[serde(rename = "scheduleUpdateTwin")]
    UpdateTwin,
    /// Invokes a direct method.
    #[serde(rename = "scheduleDeviceMethod")]
    DeviceMethod,
    /// Brings each device's twin in line with the configurations that target it (FleetHub's
    /// own operation; REST job requests cannot ask for it).
    #[serde(rename = "applyConfigurations")]
    ApplyConfigurations,
    /// Sets each device's `desired.firmware` to its latest push in a rollout (the rollout
    /// engine's own operation, `rollout_id` in the document).
    #[serde(rename = "pushFirmware")]
    PushFirmware,
}

impl JobType {
    /// The name IoT Hub uses (`type`, `jobType`).
    pub fn as_str(self) -> &'static str {
        match self {
            JobType::UpdateTwin => "scheduleUpdateTwin",
            JobType::DeviceMethod => "scheduleDeviceMethod",
            JobType::ApplyConfigurations => "applyConfigurations",
            JobType::PushFirmware => "pushFirmware",
        }
    }

    /// Parses IoT Hub's name (the REST job types only).
    pub fn parse(s: &str) -> Option<JobType> {
        match s {
            "scheduleUpdateTwin" => Some(JobType::UpdateTwin),
            "scheduleDeviceMethod" => Some(JobType::DeviceMethod),
            _ => None,
        }
    }
}

/// A method job's call, checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MethodCall {
    pub method_name: String,
    pub payload: Value,
    pub response_timeout_in_seconds: u64,
    pub connect_timeout_in_seconds: u64,
}

/// A twin job's patch, checked: tags and desired merge-patches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TwinUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<Map<String, Value>>,
}

/// `deviceJobStatistics`: how many of the job's devices are where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Statistics {
    pub device_count: u64,
    /// Failed devices, canceled ones included.
    pub failed_count: u64,
    pub succeeded_count: u64,
    pub running_count: u64,
    pub pending_count: u64,
    /// Of `failedCount`, the devices canceled before they were processed (FleetHub extension).
    pub canceled_count: u64,
}

impl From<JobDeviceCounts> for Statistics {
    fn from(c: JobDeviceCounts) -> Self {
        Statistics {
            device_count: c.total(),
            failed_count: c.failed + c.canceled,
            succeeded_count: c.completed,
            running_count: c.running,
            pending_count: c.pending + c.scheduled,
            canceled_count: c.canceled,
        }
    }
}

/// Everything the hub keeps about a job, stored as `jobs.body`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobDocument {
    pub job_id: String,
    #[serde(rename = "type")]
    pub job_type: JobType,
    pub query_condition: String,
    pub created_time: String,
    pub start_time: String,
    pub max_execution_time_in_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_to_device_method: Option<MethodCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_twin: Option<TwinUpdate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_control: Option<RateControl>,
    pub status: JobStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// When the job began running, in Unix milliseconds (its execution deadline counts from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<i64>,
    /// Whether the device snapshot is complete.
    #[serde(default)]
    pub snapshot_done: bool,
    /// The last device id added to the snapshot so far (the next chunk starts after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_after: Option<String>,
    /// Statistics frozen when the job finished (its device rows no longer change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_statistics: Option<Statistics>,
    /// For an operation whose devices were listed instead of selected by `query_condition`
    /// (which is then empty): how many distinct ids the list held. Its rows were written when
    /// it was created, so its snapshot is done from the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listed_devices: Option<u64>,
    /// The pace set through the typed operation API (a REST job has `rate_control` instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pace: Option<Pace>,
    /// For a `pushFirmware` operation: the rollout whose pushes it delivers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_id: Option<String>,
}

/// The `error` of a device row: `{"code": name, "description": message}`.
pub(super) fn device_error(code: &str, description: impl Into<String>) -> Value {
    json!({ "code": code, "description": description.into() })
}

impl JobDocument {
    /// The pace devices start at, if any: the typed one, else the REST `rateControl`'s.
    pub fn pace(&self) -> Option<Pace> {
        self.pace
            .clone()
            .or_else(|| self.rate_control.as_ref().map(RateControl::pace))
    }

    /// Decodes a stored job.
    pub fn from_row(row: &JobRow) -> HubResult<JobDocument> {
        JobDocument::deserialize(&row.body).map_err(|e| {
            HubError::server(format!("stored job '{}' is unreadable: {e}", row.job_id))
        })
    }

    /// The document as stored.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The job as the service sees it, with the given statistics.
    pub fn into_job(self, statistics: Statistics) -> Job {
        Job {
            job_id: self.job_id,
            job_type: self.job_type,
            query_condition: self.query_condition,
            created_time: self.created_time,
            start_time: self.start_time,
            max_execution_time_in_seconds: self.max_execution_time_in_seconds,
            status: self.status,
            statistics,
            method: self.cloud_to_device_method,
            update_twin: self.update_twin,
            rate_control: self.rate_control,
            end_time: self.end_time,
            failure_reason: self.failure_reason,
            status_message: self.status_message,
        }
    }
}

/// A job as the service sees it (`GET /jobs/v2/{id}` and the others): what it does, to which
/// devices, when, and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub job_id: String,
    pub job_type: JobType,
    /// The condition that selects its devices (empty for a listed device set).
    pub query_condition: String,
    pub created_time: String,
    pub start_time: String,
    pub max_execution_time_in_seconds: u64,
    pub status: JobStatus,
    /// Live counts while it runs, frozen once it ends.
    pub statistics: Statistics,
    /// A method job's call.
    pub method: Option<MethodCall>,
    /// A twin job's patch.
    pub update_twin: Option<TwinUpdate>,
    /// The pace a REST job asked for.
    pub rate_control: Option<RateControl>,
    pub end_time: Option<String>,
    pub failure_reason: Option<String>,
    pub status_message: Option<String>,
}
