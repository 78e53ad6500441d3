//! `fleethub`: the hub (`serve`) and its tools.

use anyhow::Result;
use clap::{Parser, Subcommand};
use fleethub::ServeConfig;

/// mimalloc for Rust and, through its `override` feature, for SQLite's C allocations too: glibc's
/// allocator spent over a third of the hub's time in malloc/free (with fragmentation work)
/// under bulk import and twin updates.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// FleetHub: a self-hosted device-management hub that speaks Azure IoT Hub's protocols.
#[derive(Parser)]
#[command(name = "fleethub", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub: MQTT/TLS on 8883, HTTPS (REST, WebSocket, metrics) on 443 (8443 when 443
    /// cannot be bound).
    Serve(ServeConfig),
    /// Run a benchmark against a fresh hub on this machine and print its figures.
    Bench(fleethub_bench::BenchArgs),
    /// One load process of a benchmark (started by `bench`).
    #[command(hide = true)]
    BenchWorker(fleethub_bench::WorkerArgs),
    /// Run a query (IoT Hub's query language) against a hub and print the results as JSON.
    Query(fleethub::query_cli::QueryArgs),
    /// The firmware store: upload, list, show, delete, key, url.
    Firmware(fleethub::firmware_cli::FirmwareArgs),
    /// Configurations (automatic device management): create, list, show, delete.
    Config(fleethub::config_cli::ConfigArgs),
    /// Phased firmware rollouts: plan, rehearse, create, list, show, watch, and operator
    /// commands.
    Rollout(fleethub::rollout_cli::RolloutArgs),
    /// The night a security fix ships: an embedded hub, 2,500 simulated sensors and a phased
    /// rollout in which Boston's Wi-Fi breaks, in under three minutes. Exits 0 when the story
    /// came out as told.
    Demo(fleethub::demo::DemoArgs),
    /// Simulate a fleet of virtual devices against a hub, or run a scenario file.
    Simulate(Box<fleethub::simulate::SimulateArgs>),
    /// One device process of a simulation (started by `simulate --processes`).
    #[command(hide = true)]
    SimulateWorker,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // The simulator's live view owns the terminal: only warnings interrupt it.
    let default_filter = match cli.command {
        Command::Simulate(_) | Command::SimulateWorker | Command::Demo(_) => "warn",
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
        Command::Query(args) => runtime.block_on(fleethub::query_cli::run(args)),
        Command::Firmware(args) => runtime.block_on(fleethub::firmware_cli::run(args)),
        Command::Config(args) => runtime.block_on(fleethub::config_cli::run(args)),
        Command::Rollout(args) => runtime.block_on(fleethub::rollout_cli::run(args)),
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
