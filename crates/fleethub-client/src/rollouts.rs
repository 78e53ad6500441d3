//! Phased firmware rollouts over `/v1/rollouts` (docs/rollouts.md): create from a spec, list,
//! show, the audit trail read by cursor, and the operator's commands.

use crate::{ClientError, HubClient};
use reqwest::Method;
use serde_json::{json, Value};

/// An operator's command on a rollout, as `POST /v1/rollouts/{id}/{verb}` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutCommand {
    Pause,
    /// Resume; with a query condition, only for the failed and flagged devices matching it
    /// (`tags.city = 'boston'`), which get fresh retries.
    Resume {
        query: Option<String>,
    },
    Abort,
    /// Roll one wave back, or everything the rollout changed.
    Rollback {
        wave: Option<String>,
    },
    /// Push failed and flagged devices again: these, or all.
    Retry {
        devices: Option<Vec<String>>,
    },
}

impl RolloutCommand {
    /// The path's last segment and the body.
    fn request(&self) -> (&'static str, Value) {
        match self {
            RolloutCommand::Pause => ("pause", json!({})),
            RolloutCommand::Resume { query } => ("resume", json!({ "query": query })),
            RolloutCommand::Abort => ("abort", json!({})),
            RolloutCommand::Rollback { wave } => ("rollback", json!({ "wave": wave })),
            RolloutCommand::Retry { devices } => ("retry", json!({ "devices": devices })),
        }
    }
}

impl HubClient {
    /// Creates rollout `id` from its spec (docs/rollouts.md's fields); with `supersedes`, it
    /// takes over that rollout in the same commit. Answers the rollout as created.
    pub async fn create_rollout(
        &self,
        id: &str,
        spec: &Value,
        supersedes: Option<&str>,
    ) -> Result<Value, ClientError> {
        let body = json!({ "id": id, "spec": spec, "supersedes": supersedes });
        self.json(Method::POST, "/v1/rollouts", Some(&body)).await
    }

    /// Every rollout, newest first, with its waves' counters.
    pub async fn rollouts(&self) -> Result<Value, ClientError> {
        self.json(Method::GET, "/v1/rollouts", None).await
    }

    /// One rollout: status, waves with their gates, compliance; `None` when there is none.
    pub async fn rollout(&self, id: &str) -> Result<Option<Value>, ClientError> {
        self.get_optional(&format!("/v1/rollouts/{}", segment(id)))
            .await
    }

    /// Every device the rollout tracks: its wave (an index into the spec's waves), state,
    /// attempts and last report.
    pub async fn rollout_devices(&self, id: &str) -> Result<Value, ClientError> {
        let path = format!("/v1/rollouts/{}/devices", segment(id));
        self.json(Method::GET, &path, None).await
    }

    /// Up to `top` audit events after cursor `after` (from the start when `None`), with the
    /// cursor to read on from (`next`, null at the end).
    pub async fn rollout_events(
        &self,
        id: &str,
        after: Option<i64>,
        top: Option<u32>,
    ) -> Result<Value, ClientError> {
        let mut path = format!("/v1/rollouts/{}/events", segment(id));
        let mut sep = '?';
        if let Some(a) = after {
            path.push_str(&format!("{sep}after={a}"));
            sep = '&';
        }
        if let Some(t) = top {
            path.push_str(&format!("{sep}top={t}"));
        }
        self.json(Method::GET, &path, None).await
    }

    /// Carries out an operator's command; answers the rollout after it.
    pub async fn rollout_command(
        &self,
        id: &str,
        command: &RolloutCommand,
    ) -> Result<Value, ClientError> {
        let (verb, body) = command.request();
        let path = format!("/v1/rollouts/{}/{verb}", segment(id));
        self.json(Method::POST, &path, Some(&body)).await
    }
}

/// A rollout id as one path segment.
fn segment(id: &str) -> String {
    crate::firmware::query_value(id)
}
