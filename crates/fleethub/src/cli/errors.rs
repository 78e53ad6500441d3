//! Failures as sentences that say what to do: the hub's refusal (its IoT Hub error code and
//! message) or the transport's, followed by a hint chosen from the status and the call.

use fleethub_client::{ClientError, StatusCode};

/// `err` with a hint line when one applies.
pub fn explain(err: anyhow::Error) -> anyhow::Error {
    let Some(client) = err.downcast_ref::<ClientError>() else {
        return err;
    };
    // The client's message names the call; the root cause (e.g. `UnknownIssuer`) says why.
    let mut text = err.to_string();
    let root = err.root_cause().to_string();
    if !text.contains(&root) {
        text = format!("{text}: {root}");
    }
    match hint(client, &text) {
        Some(hint) => anyhow::anyhow!("{text}\n  hint: {hint}"),
        None => anyhow::anyhow!("{text}"),
    }
}

/// What to do about a failed call, when there is something to say.
pub fn hint(err: &ClientError, text: &str) -> Option<String> {
    match err {
        ClientError::Transport { .. } => Some(transport_hint(text).into()),
        ClientError::Hub {
            what,
            status,
            error_code,
            ..
        } => status_hint(*status, *error_code, what),
        _ => None,
    }
}

fn transport_hint(text: &str) -> &'static str {
    let lower = text.to_ascii_lowercase();
    if lower.contains("certificate") || lower.contains("unknownissuer") || lower.contains("tls") {
        "the hub's certificate is not trusted: pass the CA it chains to with --ca \
         (`fleethub serve` prints its path), or save it with `fleethub login --ca …`"
    } else if lower.contains("refused") || lower.contains("dns") || lower.contains("resolve") {
        "nothing answers at that address: is `fleethub serve` running, and are the host and \
         HTTPS port in HostName (or --https-port) the ones it printed?"
    } else if lower.contains("timed out") || lower.contains("timeout") {
        "the hub did not answer in time: check that it is running and reachable, then retry"
    } else {
        "the request did not reach the hub: check the address in --hub (or `fleethub login`)"
    }
}

fn status_hint(status: StatusCode, error_code: Option<u64>, what: &str) -> Option<String> {
    let hint = match status.as_u16() {
        401 => "the hub refused the credentials: check SharedAccessKeyName and SharedAccessKey \
                in --hub, or run `fleethub login` again with the connection string \
                `fleethub serve` printed"
            .to_string(),
        403 => "this policy lacks the right for this call: use a policy that has it \
                (iothubowner has every right)"
            .to_string(),
        404 => return not_found_hint(what),
        409 => return Some(conflict_hint(error_code).into()),
        412 => {
            "it changed since it was read: show it again and retry with the new etag".to_string()
        }
        429 => "the hub is throttling requests: retry in a few seconds".to_string(),
        503 => "the hub cannot take this now (busy, or its store is full): retry shortly, and \
                see the hub's log"
            .to_string(),
        504 => "the device did not answer in time: is it connected (`fleethub devices show \
                <id>`)? A longer --response-timeout gives it more time"
            .to_string(),
        _ => return None,
    };
    Some(hint)
}

/// A 409 is one of three refusals; the hub's error code tells which.
fn conflict_hint(error_code: Option<u64>) -> &'static str {
    match error_code {
        // FirmwareInUse
        Some(409021) => {
            "the message names what still uses it: point those at another image, or abort the \
             rollouts (`fleethub rollout abort <id>`), then delete again"
        }
        // RolloutStateConflict
        Some(409031) => {
            "the rollout's state does not take this command now: `fleethub rollout show <id>` \
             shows its state"
        }
        _ => "it already exists: choose another id, or change the existing one",
    }
}

/// Where to look for what exists, from the path the call named.
fn not_found_hint(what: &str) -> Option<String> {
    let list = if what.contains("/methods") {
        return Some(
            "a method call needs the device registered and connected: \
             `fleethub devices show <id>` shows its connection state"
                .into(),
        );
    } else if what.contains("/jobs/") {
        "fleethub jobs list"
    } else if what.contains("/configurations") {
        "fleethub configurations list"
    } else if what.contains("/v1/firmware") {
        "fleethub firmware list"
    } else if what.contains("/v1/rollouts") {
        "fleethub rollout list"
    } else if what.contains("/devices/") || what.contains("/twins/") {
        "fleethub devices list"
    } else {
        return None;
    };
    Some(format!("`{list}` shows the ones that exist"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(status: u16, what: &str) -> ClientError {
        ClientError::Hub {
            what: what.into(),
            status: StatusCode::from_u16(status).unwrap(),
            error_code: Some(404001),
            message: "ErrorCode:DeviceNotFound;Device nope not found".into(),
        }
    }

    #[test]
    fn a_refusal_keeps_the_hubs_message_and_says_what_to_do() {
        let err = explain(refusal(404, "GET /devices/nope").into()).to_string();
        assert!(err.contains("Device nope not found"), "{err}");
        assert!(err.contains("hint: `fleethub devices list`"), "{err}");
        let err = explain(refusal(401, "GET /devices/nope").into()).to_string();
        assert!(err.contains("fleethub login"), "{err}");
        let err = explain(refusal(404, "GET /jobs/v2/j1").into()).to_string();
        assert!(err.contains("fleethub jobs list"), "{err}");
    }

    #[test]
    fn an_error_not_from_the_hub_passes_unchanged() {
        let err = explain(anyhow::anyhow!("--set 'x' must be NAME=VALUE")).to_string();
        assert_eq!(err, "--set 'x' must be NAME=VALUE");
    }
}
