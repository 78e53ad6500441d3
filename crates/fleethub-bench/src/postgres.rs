//! The reference database of `bench query`: PostgreSQL 15 (Debian package) in a temporary
//! directory on its own port, holding the same twins the way a team building this themselves
//! would store them (one JSONB document per device, without `$metadata`, a GIN index), asked
//! the same questions in hand-written SQL with parallel workers on.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;
use tokio_postgres::{Client, NoTls};

/// Where Debian's package puts the server's programs.
const BIN: &str = "/usr/lib/postgresql/15/bin";
/// The package, for `apt-get install`.
const PACKAGE: &str = "postgresql-15";
/// Rows per COPY chunk.
const COPY_CHUNK: usize = 10_000;

/// A running cluster; stopped (fast shutdown) and its directory removed when dropped, so an
/// error anywhere in the benchmark leaves no server behind.
pub struct Postgres {
    pg_ctl: PathBuf,
    data: PathBuf,
    /// `runuser -u postgres --` when running as root (PostgreSQL refuses to run as root).
    run_as: Option<String>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Postgres {
    /// initdb and start a cluster in a new directory under `tmp`, listening on 127.0.0.1 only.
    /// `shared_buffers` as PostgreSQL spells it ("2GB").
    pub fn start(tmp: &Path, shared_buffers: &str) -> Result<Postgres> {
        let bin = Path::new(BIN);
        if !bin.join("initdb").exists() {
            install()?;
        }
        let dir = tempfile::tempdir_in(tmp)?;
        let run_as = running_as_root().then(|| "postgres".to_string());
        if let Some(user) = &run_as {
            hand_over(dir.path(), user)?;
        }
        let data = dir.path().join("data");
        let port = super::ports::free_loopback_port()?;
        let mut initdb = command(&run_as, &bin.join("initdb"));
        initdb.arg("-D").arg(&data).args([
            "-U",
            "bench",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-instructions",
        ]);
        run(initdb, "initdb")?;
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {sock} -c shared_buffers={shared_buffers} \
             -c max_parallel_workers_per_gather=2 -c max_parallel_workers=2 \
             -c maintenance_work_mem=512MB -c max_wal_size=4GB",
            sock = dir.path().display()
        );
        let pg_ctl = bin.join("pg_ctl");
        let mut start = command(&run_as, &pg_ctl);
        start
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(&data)
            .arg("-l")
            .arg(dir.path().join("server.log"))
            .args(["-o", &options]);
        let postgres = Postgres {
            pg_ctl,
            data,
            run_as,
            port,
            dir,
        };
        // From here on, Drop stops whatever pg_ctl managed to start.
        run(start, "pg_ctl start").map_err(|e| {
            let log =
                std::fs::read_to_string(postgres.dir.path().join("server.log")).unwrap_or_default();
            e.context(format!("server log:\n{log}"))
        })?;
        Ok(postgres)
    }

    /// A connection as the cluster's superuser.
    pub async fn connect(&self) -> Result<Client> {
        let (client, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=bench dbname=postgres",
                self.port
            ),
            NoTls,
        )
        .await
        .context("connecting to the benchmark's PostgreSQL")?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("  PostgreSQL connection ended: {e}");
            }
        });
        Ok(client)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let mut stop = command(&self.run_as, &self.pg_ctl);
        stop.args(["stop", "-w", "-m", "fast", "-D"])
            .arg(&self.data);
        let _ = stop.stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // The owner of /proc/self is this process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Gives `dir` to `user`, who runs the server.
fn hand_over(dir: &Path, user: &str) -> Result<()> {
    let mut chown = Command::new("chown");
    chown.arg(format!("{user}:")).arg(dir);
    run(chown, "chown").with_context(|| {
        format!("the '{user}' user that Debian's {PACKAGE} package creates is missing")
    })
}

fn command(run_as: &Option<String>, program: &Path) -> Command {
    match run_as {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn run(mut cmd: Command, what: &str) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Installs the Debian package as scripts/test.sh installs what it needs, or says how.
fn install() -> Result<()> {
    let how = format!("PostgreSQL 15 is not installed: apt-get install {PACKAGE}");
    if !running_as_root() || which("apt-get").is_none() {
        bail!("{how} (or pass --no-postgres)");
    }
    println!("  installing {PACKAGE} (apt-get)");
    run(
        {
            let mut c = Command::new("apt-get");
            c.args(["update", "-qq"]);
            c
        },
        "apt-get update",
    )
    .context(how.clone())?;
    let mut c = Command::new("apt-get");
    c.args(["install", "-y", "-qq", PACKAGE])
        .env("DEBIAN_FRONTEND", "noninteractive");
    run(c, "apt-get install").context(how)
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.exists())
    })
}

/// The twin as a team would store it: id, tags and properties, without `$metadata`, from a
/// bulk-import entry.
pub fn twin_document(entry: &Value) -> Value {
    serde_json::json!({
        "deviceId": entry["id"],
        "tags": entry["tags"],
        "properties": entry["properties"],
    })
}

/// Creates the table, COPYs `count` twins from `twin(i)` in, builds the GIN index and ANALYZEs;
/// returns the seconds each of COPY and index + ANALYZE took.
pub async fn load(
    client: &Client,
    count: usize,
    twin: impl Fn(usize) -> (String, Value),
) -> Result<(f64, f64)> {
    use futures_util::SinkExt;
    client
        .batch_execute(
            "DROP TABLE IF EXISTS twins; \
             CREATE TABLE twins (device_id text PRIMARY KEY, twin jsonb NOT NULL);",
        )
        .await?;
    let started = Instant::now();
    let sink = client
        .copy_in("COPY twins (device_id, twin) FROM STDIN")
        .await?;
    let mut sink = std::pin::pin!(sink);
    let mut chunk = String::new();
    for i in 0..count {
        let (id, doc) = twin(i);
        copy_text_row(&mut chunk, &id, &doc.to_string());
        if (i + 1) % COPY_CHUNK == 0 || i + 1 == count {
            sink.send(bytes::Bytes::from(std::mem::take(&mut chunk)))
                .await?;
        }
    }
    sink.as_mut().finish().await?;
    let copy_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    client
        .batch_execute("CREATE INDEX twins_gin ON twins USING gin (twin); ANALYZE twins;")
        .await?;
    Ok((copy_secs, started.elapsed().as_secs_f64()))
}

/// One row of COPY's text format: tab between columns, backslash, tab and newline escaped.
fn copy_text_row(out: &mut String, id: &str, json: &str) {
    for (n, field) in [id, json].into_iter().enumerate() {
        if n > 0 {
            out.push('\t');
        }
        for c in field.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
        }
    }
    out.push('\n');
}

/// Runs `sql` `runs` times; the latencies in milliseconds and the rows of the last run.
pub async fn time_sql(client: &Client, sql: &str, runs: usize) -> Result<(Vec<f64>, usize)> {
    let statement = client.prepare(sql).await?;
    let mut samples = Vec::with_capacity(runs);
    let mut rows = 0;
    for _ in 0..runs {
        let started = Instant::now();
        rows = client.query(&statement, &[]).await?.len();
        samples.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok((samples, rows))
}

/// The size of the table with its indexes, in bytes.
pub async fn size_bytes(client: &Client) -> Result<i64> {
    let row = client
        .query_one("SELECT pg_total_relation_size('twins')", &[])
        .await?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_rows_escape_what_the_text_format_reserves() {
        let mut out = String::new();
        copy_text_row(&mut out, "d-1", "{\"a\":\"b\\c\td\"}\n");
        assert_eq!(out, format!("d-1\t{}\n", r#"{"a":"b\\c\td"}\n"#));
    }

    #[test]
    fn the_stored_twin_has_no_import_fields() {
        let entry = serde_json::json!({"id": "d", "importMode": "create", "authentication": {},
            "tags": {"t": 1}, "properties": {"desired": {}, "reported": {"r": 2}}});
        assert_eq!(
            twin_document(&entry),
            serde_json::json!({"deviceId": "d", "tags": {"t": 1},
                "properties": {"desired": {}, "reported": {"r": 2}}})
        );
    }
}
