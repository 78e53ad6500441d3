//! `fleethub devices import|export`: the registry as a file. An import streams the file to the
//! hub in one request with a progress bar and prints the failed lines; an export writes IoT Hub's
//! export format (one device per line), which imports back whole.

use super::table::text;
use anyhow::{Context, Result};
use fleethub_client::{HubClient, ImportProgress};
use serde_json::Value;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Imports `file` (`-`: standard input); with failed lines it prints them and fails.
pub async fn import(rest: &HubClient, file: &PathBuf, json: bool) -> Result<()> {
    let progress = Arc::new(ImportProgress::default());
    let stdin = file.as_os_str() == "-";
    let total = if stdin {
        None
    } else {
        Some(
            std::fs::metadata(file)
                .with_context(|| format!("reading {}", file.display()))?
                .len(),
        )
    };
    let bar = std::io::stderr()
        .is_terminal()
        .then(|| tokio::spawn(draw_progress(progress.clone(), total)));
    let report = if stdin {
        rest.import_devices(tokio::io::stdin(), None, progress.clone())
            .await
    } else {
        rest.import_devices_file(file, progress.clone()).await
    };
    if let Some(bar) = bar {
        bar.abort();
        eprint!("\r\x1b[2K");
    }
    let report = report?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", summary(&report));
    }
    let failed = report["failed"].as_u64().unwrap_or_default();
    if failed > 0 {
        anyhow::bail!("{failed} lines failed; the other lines were applied");
    }
    Ok(())
}

/// The report for people: counts, then one line per failed line.
fn summary(report: &Value) -> String {
    let mut out = format!(
        "{} lines: {} created, {} updated, {} unchanged, {} failed\n",
        text(&report["lines"]),
        text(&report["created"]),
        text(&report["updated"]),
        text(&report["unchanged"]),
        text(&report["failed"]),
    );
    let errors = report["errors"].as_array().map_or(&[][..], Vec::as_slice);
    if !errors.is_empty() {
        let columns = ["line", "deviceId", "errorCode", "message"];
        out.push_str(&super::table::columns(&columns, errors, |e, c| text(&e[c])));
    }
    let unlisted = report["errorsNotListed"].as_u64().unwrap_or_default();
    if unlisted > 0 {
        out.push_str(&format!("… and {unlisted} more failed lines not listed\n"));
    }
    out
}

/// Redraws a one-line progress bar on standard error every 200 ms until aborted.
async fn draw_progress(progress: Arc<ImportProgress>, total: Option<u64>) {
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = progress.bytes_sent.load(Ordering::Relaxed);
        let lines = progress.lines_sent.load(Ordering::Relaxed);
        let secs = started.elapsed().as_secs_f64().max(0.001);
        let rate = lines as f64 / secs;
        let line = match total {
            Some(total) if total > 0 => {
                let done = (sent as f64 / total as f64).min(1.0);
                let filled = (done * 30.0) as usize;
                format!(
                    "[{}{}] {:>3.0}%  {lines} lines  {rate:.0} lines/s",
                    "#".repeat(filled),
                    ".".repeat(30 - filled),
                    done * 100.0
                )
            }
            _ => format!("{lines} lines  {rate:.0} lines/s"),
        };
        eprint!("\r\x1b[2K{line}");
        let _ = std::io::stderr().flush();
    }
}

pub async fn export(rest: &HubClient, output: Option<&PathBuf>) -> Result<()> {
    let lines = match output {
        Some(path) => {
            let file = tokio::fs::File::create(path)
                .await
                .with_context(|| format!("creating {}", path.display()))?;
            let mut out = tokio::io::BufWriter::new(file);
            let lines = rest.export_devices(&mut out).await?;
            out.into_inner().sync_all().await?;
            lines
        }
        None => rest.export_devices(&mut tokio::io::stdout()).await?,
    };
    if output.is_some() {
        eprintln!("exported {lines} devices");
    }
    Ok(())
}
