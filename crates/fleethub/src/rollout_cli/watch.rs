//! `fleethub rollout watch ID`: per-wave progress bars redrawn in place on a terminal (a fresh
//! block every ten seconds otherwise), with each audit event printed as it happens, until the
//! rollout completes, is aborted or is superseded.

use super::view;
use anyhow::{bail, Result};
use fleethub_client::HubClient;
use serde_json::Value;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often the bars are printed again when stdout is not a terminal.
const PLAIN_PERIOD: Duration = Duration::from_secs(10);

/// Statuses after which nothing more happens.
pub fn finished(view: &Value) -> bool {
    matches!(
        view["status"].as_str(),
        Some("completed" | "aborted" | "superseded")
    )
}

/// The block drawn each time: a heading, then a bar per wave.
pub fn frame(v: &Value) -> String {
    let c = &v["compliance"];
    let mut out = format!(
        "rollout {} to {}: {}{}  ({} of {} updated)\n",
        crate::cli::table::text(&v["id"]),
        crate::cli::table::text(&v["spec"]["artifact"]["version"]),
        crate::cli::table::text(&v["status"]),
        v["reason"]
            .as_str()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default(),
        view::n(c, "updated"),
        view::n(c, "targeted"),
    );
    out.push_str(&view::progress(v));
    out
}

/// Watches until the rollout ends.
pub async fn watch(rest: &HubClient, id: &str, interval: f64, json: bool) -> Result<()> {
    let tty = !json && std::io::stdout().is_terminal();
    let period = Duration::from_secs_f64(interval.clamp(0.1, 60.0));
    let mut cursor: Option<i64> = None;
    let mut drawn_lines = 0usize;
    let mut last_plain: Option<Instant> = None;
    let mut stdout = std::io::stdout();
    loop {
        let Some(v) = rest.rollout(id).await? else {
            bail!("rollout '{id}' does not exist");
        };
        let mut events = Vec::new();
        loop {
            let page = rest.rollout_events(id, cursor, Some(500)).await?;
            let got = page["events"].as_array().cloned().unwrap_or_default();
            if let Some(last) = got.last().and_then(|e| e["seq"].as_i64()) {
                cursor = Some(last);
            }
            events.extend(got);
            if page["next"].is_null() {
                break;
            }
        }
        let done = finished(&v);
        let mut out = String::new();
        if tty && drawn_lines > 0 {
            // Up over the last block and clear to the end of the screen.
            out.push_str(&format!("\x1b[{drawn_lines}A\x1b[J"));
        }
        for e in &events {
            if json {
                out.push_str(&format!("{e}\n"));
            } else {
                out.push_str(&format!(
                    "{}  {}\n",
                    crate::cli::table::text(&e["at"]),
                    crate::cli::table::text(&e["message"])
                ));
            }
        }
        let plain_due = last_plain.is_none_or(|t| t.elapsed() >= PLAIN_PERIOD);
        if !json && (tty || plain_due || done) {
            let block = frame(&v);
            drawn_lines = block.lines().count();
            out.push_str(&block);
            last_plain = Some(Instant::now());
        }
        if json && done {
            out.push_str(&format!("{v}\n"));
        }
        stdout.write_all(out.as_bytes())?;
        stdout.flush()?;
        if done {
            return Ok(());
        }
        tokio::time::sleep(period).await;
    }
}
