//! `fleethub`: the hub (`serve`) and its tools.

use anyhow::Result;
use clap::Parser;
use fleethub::cli::{Cli, Command};
use fleethub::ServeConfig;

/// mimalloc for Rust and, through its `override` feature, for SQLite's C allocations too: glibc's
/// allocator spent over a third of the hub's time in malloc/free (with fragmentation work)
/// under bulk import and twin updates.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    // No transparent huge pages for this process. mimalloc returns freed memory to the kernel
    // (`MADV_DONTNEED`) after a short delay, and with huge pages each later touch of such memory
    // faults in and zeroes a whole 2 MiB page: under `bench reported` the kernel's page clearing
    // was 9% of the hub's samples and the writer thread's allocations paid most of it (22% fewer
    // acknowledged reports, p99 at 5,000/s 3.7 times longer than with them off). The flag
    // belongs to the whole process and is checked at each fault, so setting it here covers the
    // memory mimalloc reserved before `main`. A kernel without the call just keeps huge pages.
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let cli = Cli::parse();
    // The simulator's live view owns the terminal: only warnings interrupt it.
    let default_filter = match cli.command {
        Command::Simulate(_) | Command::SimulateWorker | Command::Demo(_) => "warn",
        // The CLI's stdout and stderr are for the person (or script) that ran it.
        Command::Noun(_) | Command::Completions { .. } => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(cfg) => runtime.block_on(serve(cfg)),
        Command::Bench(args) => runtime.block_on(fleethub_bench::run(args)),
        Command::Noun(noun) => {
            let result = runtime.block_on(fleethub::cli::run(noun));
            drop(runtime);
            // A sentence for the operator, not a backtrace.
            if let Err(e) = result {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Completions { shell } => fleethub::cli::completions(shell),
        Command::BenchWorker(args) => runtime.block_on(fleethub_bench::run_worker(args)),
        Command::Simulate(args) => {
            let passed = runtime.block_on(fleethub::simulate::run(*args))?;
            drop(runtime);
            // A failed expectation fails the run, for CI.
            if !passed {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Demo(args) => {
            let told = runtime.block_on(fleethub::demo::run(args))?;
            drop(runtime);
            if !told {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::SimulateWorker => runtime.block_on(fleethub::simulate::run_worker()),
    }
}

async fn serve(cfg: ServeConfig) -> Result<()> {
    let data_dir = cfg.data_dir.clone();
    let running = fleethub::start(cfg).await?;
    println!("FleetHub is ready.");
    println!("  data directory      {}", data_dir.display());
    println!("  owner connection    {}", running.owner_connection_string);
    match &running.ca_file {
        Some(ca) => println!(
            "  CA certificate      {} (trust this in clients)",
            ca.display()
        ),
        None => println!("  CA certificate      (supplied server certificate)"),
    }
    println!("  MQTT over TLS       {}", running.mqtt_addr);
    if let Some(plain) = running.plain_mqtt_addr {
        println!("  MQTT (plain)        {plain}");
    }
    println!(
        "  HTTPS               {}  (REST API, /$iothub/websocket, /metrics, /healthz)",
        running.https_addr
    );
    println!("  dashboard           {}", running.dashboard_url);
    println!(
        "  sign-in link        {}  (one use, 15 minutes)",
        running.sign_in_link
    );
    println!(
        "  device connection   HostName={};DeviceId=<id>;SharedAccessKey=<device key>",
        running.host_name
    );
    if let Some(note) = &running.https_note {
        println!("\n  note: {note}");
    }
    fleethub::stop_signal::stop_signal().await?;
    eprintln!("shutting down: committing queued writes");
    running.shutdown();
    Ok(())
}
