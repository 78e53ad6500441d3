//! The statuses of a job and of each device's part in it, with IoT Hub's names. One definition
//! for the store's columns, the hub's engine and the REST bodies: IoT Hub spells a job
//! `cancelled` and a device's part `canceled`, and only these types know which is which.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A job's lifecycle, with IoT Hub's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum JobStatus {
    /// Waiting for its start time.
    Scheduled,
    /// Ready to start, waiting for a free slot (`maxConcurrentJobs`).
    Queued,
    /// Working through its devices.
    Running,
    /// Every device was processed (some may have failed; see the statistics).
    Completed,
    /// The job itself could not run (`failureReason` says why).
    Failed,
    /// Cancelled; devices not yet processed were canceled.
    Cancelled,
}

impl JobStatus {
    /// IoT Hub's name, also the `jobs.status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Scheduled => "scheduled",
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Parses IoT Hub's name (`enqueued` is IoT Hub's other word for queued).
    pub fn parse(s: &str) -> Option<JobStatus> {
        Some(match s {
            "scheduled" => JobStatus::Scheduled,
            "queued" | "enqueued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "completed" => JobStatus::Completed,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            _ => return None,
        })
    }

    /// Whether the job will do nothing more on its own.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One device's part in a job, as `devices.jobs` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeviceJobStatus {
    /// In the job's snapshot, not yet worked on.
    Pending,
    /// Waiting for its own not-before time (a maintenance window).
    Scheduled,
    /// A method call is in flight.
    Running,
    /// Done: the patch was written or the method answered.
    Completed,
    /// The device could not be done (offline past the connect timeout, no answer, …).
    Failed,
    /// The job was cancelled before the device was done.
    Canceled,
}

impl DeviceJobStatus {
    /// Every status, in the order of a job's statistics.
    pub const ALL: [DeviceJobStatus; 6] = [
        DeviceJobStatus::Pending,
        DeviceJobStatus::Scheduled,
        DeviceJobStatus::Running,
        DeviceJobStatus::Completed,
        DeviceJobStatus::Failed,
        DeviceJobStatus::Canceled,
    ];

    /// IoT Hub's name, also the `job_devices.status` and `job_counts.status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceJobStatus::Pending => "pending",
            DeviceJobStatus::Scheduled => "scheduled",
            DeviceJobStatus::Running => "running",
            DeviceJobStatus::Completed => "completed",
            DeviceJobStatus::Failed => "failed",
            DeviceJobStatus::Canceled => "canceled",
        }
    }

    /// Whether the device's part is over (completed, failed or canceled).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeviceJobStatus::Completed | DeviceJobStatus::Failed | DeviceJobStatus::Canceled
        )
    }

    /// Parses IoT Hub's name.
    pub fn parse(s: &str) -> Option<DeviceJobStatus> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for DeviceJobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_keep_iot_hubs_two_spellings_of_cancel() {
        for s in DeviceJobStatus::ALL {
            assert_eq!(DeviceJobStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in [
            JobStatus::Scheduled,
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Completed,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ] {
            assert_eq!(JobStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(JobStatus::Cancelled.as_str(), "cancelled");
        assert_eq!(DeviceJobStatus::Canceled.as_str(), "canceled");
        assert_eq!(JobStatus::parse("canceled"), None);
        assert_eq!(DeviceJobStatus::parse("cancelled"), None);
        assert_eq!(JobStatus::parse("enqueued"), Some(JobStatus::Queued));
    }
}
