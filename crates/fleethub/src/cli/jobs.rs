//! `fleethub jobs create|list|show|cancel|watch`: jobs v2, a twin update or a method call over
//! the devices a query selects, with a progress bar while one runs.

use super::table::{columns, fields, text};
use super::{json_arg, set_twin_path, Common, Output};
use anyhow::{bail, Result};
use fleethub_client::HubClient;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// `fleethub jobs` arguments.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Example:\n  fleethub jobs create reboot-all --where '*' --method reboot --wait"
)]
pub struct JobsArgs {
    #[command(subcommand)]
    pub command: JobsCommand,
    #[command(flatten)]
    pub common: Common,
}

/// What to do with jobs.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum JobsCommand {
    /// Create a job: a twin update (--set/--tags/--desired) or a method call (--method) on
    /// every device --where selects.
    #[command(
        after_help = "Examples:\n  fleethub jobs create interval-60 --where \"tags.city = 'boston'\" --set desired.config.interval=60 --wait\n  \
                            fleethub jobs create reboot-all --where '*' --method reboot --max-per-second 50\n  \
                            fleethub jobs create night-reboot --where \"deviceId IN ['a','b']\" --method reboot --start-time 2030-01-01T02:00:00Z"
    )]
    Create {
        /// The job's id.
        id: String,
        /// The devices: a query condition, deviceId IN [...], or '*' for every device.
        #[arg(long = "where", value_name = "CONDITION")]
        condition: String,
        #[command(flatten)]
        action: JobAction,
        /// When to start (ISO 8601, UTC) [default: now].
        #[arg(long)]
        start_time: Option<String>,
        /// Seconds the job may run before what is left fails [default: the hub's, an hour].
        #[arg(long)]
        max_execution_time: Option<u64>,
        /// Devices per second at most [default: as fast as the hub goes].
        #[arg(long)]
        max_per_second: Option<u32>,
        /// Wait for the job to finish, with a progress bar, and print it then.
        #[arg(long)]
        wait: bool,
    },
    /// List jobs, newest first.
    #[command(
        after_help = "Examples:\n  fleethub jobs list\n  fleethub jobs list --status running --json"
    )]
    List {
        /// Only jobs of this type: scheduleUpdateTwin or scheduleDeviceMethod.
        #[arg(long = "type", value_name = "TYPE")]
        job_type: Option<String>,
        /// Only jobs in this status: scheduled, queued, running, completed, failed, cancelled.
        #[arg(long)]
        status: Option<String>,
    },
    /// Show a job with its device counts.
    #[command(after_help = "Example:\n  fleethub jobs show interval-60")]
    Show { id: String },
    /// Cancel a job: devices not reached yet are left alone.
    #[command(after_help = "Example:\n  fleethub jobs cancel reboot-all")]
    Cancel { id: String },
    /// Follow a job with a progress bar until it finishes; fails if the job does not complete.
    #[command(after_help = "Example:\n  fleethub jobs watch reboot-all")]
    Watch {
        id: String,
        /// Seconds between looks at the job.
        #[arg(long, default_value_t = 0.5)]
        interval: f64,
    },
}

/// What a job does on each device.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct JobAction {
    /// `tags.PATH=VALUE` or `desired.PATH=VALUE` (VALUE as JSON, else a string); repeat.
    #[arg(long = "set", value_name = "SECTION.PATH=VALUE")]
    pub settings: Vec<String>,
    /// Tags to merge into each twin, as JSON (or @file).
    #[arg(long)]
    pub tags: Option<String>,
    /// Desired properties to merge into each twin, as JSON (or @file).
    #[arg(long)]
    pub desired: Option<String>,
    /// The direct method to call on each device instead of a twin update.
    #[arg(long, conflicts_with_all = ["settings", "tags", "desired"])]
    pub method: Option<String>,
    /// The method's payload, as JSON (or @file).
    #[arg(long, requires = "method")]
    pub payload: Option<String>,
    /// Seconds each device has to answer the method.
    #[arg(long, default_value_t = 30, requires = "method")]
    pub response_timeout: u64,
}

/// Runs one jobs command.
pub async fn run(args: JobsArgs) -> Result<()> {
    let common = args.common.clone();
    common
        .with_hub(|rest, out| command(rest, args.command, out))
        .await
}

async fn command(rest: HubClient, verb: JobsCommand, out: Output) -> Result<()> {
    match verb {
        JobsCommand::Create {
            id,
            condition,
            action,
            start_time,
            max_execution_time,
            max_per_second,
            wait,
        } => {
            let mut body = job_body(&id, &condition, &action)?;
            if let Some(t) = start_time {
                body["startTime"] = json!(t);
            }
            if let Some(s) = max_execution_time {
                body["maxExecutionTimeInSeconds"] = json!(s);
            }
            if let Some(n) = max_per_second {
                body["rateControl"] = json!({ "maxPerSecond": n });
            }
            let job = rest.create_job(&id, &body).await?;
            if wait {
                return watch(&rest, &id, Duration::from_millis(500), out).await;
            }
            out.print(&job, details)
        }
        JobsCommand::List { job_type, status } => {
            let jobs = rest
                .list_jobs(job_type.as_deref(), status.as_deref())
                .await?;
            out.print(&Value::Array(jobs), |v| {
                table(v.as_array().map_or(&[][..], Vec::as_slice))
            })
        }
        JobsCommand::Show { id } => out.print(&must_exist(&rest, &id).await?, details),
        JobsCommand::Cancel { id } => {
            must_exist(&rest, &id).await?;
            out.print(&rest.cancel_job(&id).await?, details)
        }
        JobsCommand::Watch { id, interval } => {
            let interval = Duration::try_from_secs_f64(interval.max(0.05))
                .unwrap_or(Duration::from_millis(500));
            watch(&rest, &id, interval, out).await
        }
    }
}

async fn must_exist(rest: &HubClient, id: &str) -> Result<Value> {
    match rest.job(id).await? {
        Some(job) => Ok(job),
        None => {
            bail!("job '{id}' does not exist: `fleethub jobs list` shows the ones the hub keeps")
        }
    }
}

/// IoT Hub's job request for the flags.
fn job_body(id: &str, condition: &str, action: &JobAction) -> Result<Value> {
    if let Some(method) = &action.method {
        let payload = match &action.payload {
            Some(p) => json_arg("payload", p)?,
            None => Value::Null,
        };
        return Ok(json!({
            "jobId": id,
            "type": "scheduleDeviceMethod",
            "queryCondition": condition,
            "cloudToDeviceMethod": {
                "methodName": method,
                "payload": payload,
                "responseTimeoutInSeconds": action.response_timeout,
            },
        }));
    }
    let mut tags = match &action.tags {
        Some(t) => json_arg("tags", t)?,
        None => Value::Object(Map::new()),
    };
    let mut desired = match &action.desired {
        Some(d) => json_arg("desired", d)?,
        None => Value::Object(Map::new()),
    };
    for s in &action.settings {
        set_twin_path(&mut tags, &mut desired, s)?;
    }
    let empty = |v: &Value| v.as_object().is_some_and(Map::is_empty);
    if empty(&tags) && empty(&desired) {
        bail!("say what the job does: --set/--tags/--desired for a twin update, or --method NAME");
    }
    let mut update = json!({ "etag": "*" });
    if !empty(&tags) {
        update["tags"] = tags;
    }
    if !empty(&desired) {
        update["properties"] = json!({ "desired": desired });
    }
    Ok(json!({
        "jobId": id,
        "type": "scheduleUpdateTwin",
        "queryCondition": condition,
        "updateTwin": update,
    }))
}

/// Whether a job status is final.
fn finished(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "cancelled")
}

/// Looks at the job every `interval` until it is finished, moving a bar of its devices; prints
/// the finished job, and fails unless it completed.
async fn watch(rest: &HubClient, id: &str, interval: Duration, out: Output) -> Result<()> {
    let mut job = must_exist(rest, id).await?;
    let bar = super::progress::bar(0, "devices");
    loop {
        let stats = &job["deviceJobStatistics"];
        let count = |name: &str| stats[name].as_u64().unwrap_or(0);
        bar.set_length(count("deviceCount"));
        bar.set_position(count("succeededCount") + count("failedCount") + count("canceledCount"));
        let status = job["status"].as_str().unwrap_or("").to_string();
        bar.set_message(format!("{status}, {} failed", count("failedCount")));
        if finished(&status) {
            break;
        }
        tokio::time::sleep(interval).await;
        job = must_exist(rest, id).await?;
    }
    bar.finish_and_clear();
    out.print(&job, details)?;
    match job["status"].as_str() {
        Some("completed") => Ok(()),
        other => bail!(
            "job '{id}' {}: {}",
            other.unwrap_or("ended"),
            text(&job["failureReason"])
        ),
    }
}

/// One line per job, in columns.
fn table(jobs: &[Value]) -> String {
    let names = [
        "jobId",
        "type",
        "status",
        "devices",
        "succeeded",
        "failed",
        "startTime",
        "endTime",
    ];
    columns(&names, jobs, |j, name| {
        let stat = |s: &str| text(&j["deviceJobStatistics"][s]);
        match name {
            "devices" => stat("deviceCount"),
            "succeeded" => stat("succeededCount"),
            "failed" => stat("failedCount"),
            other => text(&j[other]),
        }
    })
}

/// One job, a field per line.
fn details(j: &Value) -> String {
    fields(
        j,
        &[
            ("jobId", "/jobId"),
            ("type", "/type"),
            ("status", "/status"),
            ("queryCondition", "/queryCondition"),
            ("method", "/cloudToDeviceMethod/methodName"),
            ("updateTwin", "/updateTwin"),
            ("createdTime", "/createdTime"),
            ("startTime", "/startTime"),
            ("endTime", "/endTime"),
            ("devices", "/deviceJobStatistics/deviceCount"),
            ("succeeded", "/deviceJobStatistics/succeededCount"),
            ("failed", "/deviceJobStatistics/failedCount"),
            ("running", "/deviceJobStatistics/runningCount"),
            ("pending", "/deviceJobStatistics/pendingCount"),
            ("canceled", "/deviceJobStatistics/canceledCount"),
            ("failureReason", "/failureReason"),
            ("statusMessage", "/statusMessage"),
        ],
        16,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_build_iot_hubs_job_requests() {
        let twin = JobAction {
            settings: vec!["desired.config.interval=60".into(), "tags.batch=b7".into()],
            ..JobAction::default()
        };
        assert_eq!(
            job_body("j1", "tags.city = 'boston'", &twin).unwrap(),
            json!({"jobId": "j1", "type": "scheduleUpdateTwin",
                   "queryCondition": "tags.city = 'boston'",
                   "updateTwin": {"etag": "*", "tags": {"batch": "b7"},
                                  "properties": {"desired": {"config": {"interval": 60}}}}})
        );
        let method = JobAction {
            method: Some("reboot".into()),
            payload: Some(r#"{"delay": 5}"#.into()),
            response_timeout: 10,
            ..JobAction::default()
        };
        let body = job_body("j2", "*", &method).unwrap();
        assert_eq!(body["type"], "scheduleDeviceMethod");
        assert_eq!(body["cloudToDeviceMethod"]["payload"], json!({"delay": 5}));
        let err = job_body("j3", "*", &JobAction::default()).unwrap_err();
        assert!(err.to_string().contains("--method"), "{err}");
    }
}
