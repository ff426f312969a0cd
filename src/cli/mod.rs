//! The `sluice` command line: `serve` runs the broker; `pub`, `sub`, `request` and `reply` talk to it.

mod bench;
mod consume;
mod cpus;
mod streams;
mod talk;
mod tune;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::server::{self, ServerConfig};

/// Default native protocol address.
pub const NATIVE_ADDR_DEFAULT: &str = "127.0.0.1:4280";

/// Default NATS protocol address.
pub const NATS_ADDR_DEFAULT: &str = "127.0.0.1:4222";

#[derive(Parser, Debug)]
#[command(name = "sluice", version, about = "A thread-per-core message broker")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the broker.
    Serve(ServeArgs),
    /// Publish messages to a subject.
    Pub(talk::PubArgs),
    /// Print messages on a subject, one line each: SUBJECT<TAB>PAYLOAD.
    Sub(talk::SubArgs),
    /// Send a request and print the reply's payload.
    Request(talk::RequestArgs),
    /// Answer requests on a subject (echoes the request unless RESPONSE is given).
    Reply(talk::ReplyArgs),
    /// Manage persistent streams.
    Stream(streams::StreamArgs),
    /// Read a stream through a durable consumer: PARTITION<TAB>OFFSET<TAB>SUBJECT<TAB>PAYLOAD.
    Consume(consume::ConsumeArgs),
    /// Inspect consumers.
    Consumer(consume::ConsumerArgs),
    /// Measure a server: throughput and latency percentiles of a load scenario.
    Bench(bench::BenchArgs),
    /// Report this machine's CPUs, NUMA nodes, NIC queues, limits and I/O support, with advice.
    Tune(tune::TuneArgs),
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Native protocol address; port 0 picks a free port (the ready line names it).
    #[arg(long, default_value = NATIVE_ADDR_DEFAULT)]
    listen: String,
    /// NATS protocol address, for existing NATS clients; `off` disables it.
    #[arg(long, default_value = NATS_ADDR_DEFAULT)]
    nats: String,
    /// How often NATS clients are pinged; two unanswered pings close the connection as stale.
    #[arg(long, default_value_t = server::NATS_PING_INTERVAL_DEFAULT.as_millis() as u64)]
    nats_ping_interval_ms: u64,
    /// Number of shards, one per CPU (default: every CPU this process may use).
    #[arg(long, conflicts_with = "cpuset")]
    shards: Option<usize>,
    /// CPUs to run shards on, e.g. `0-3,6`.
    #[arg(long)]
    cpuset: Option<String>,
    /// Largest payload of one message, in bytes.
    #[arg(long, default_value_t = sluice_protocol::limits::PAYLOAD_BYTES_MAX_DEFAULT)]
    max_payload: u32,
    /// Outbound bytes a connection may have buffered before it is cut off as a slow consumer.
    #[arg(long, default_value_t = server::PENDING_BYTES_MAX_DEFAULT)]
    max_pending: usize,
    /// Most client connections.
    #[arg(long, default_value_t = server::CONNECTIONS_MAX_DEFAULT)]
    max_connections: usize,
    /// Where streams keep their data.
    #[arg(long, default_value = server::DATA_DIR_DEFAULT)]
    data_dir: std::path::PathBuf,
    /// When a stored publish is acknowledged: always (after fdatasync, with group commit), never
    /// (after the write; survives a process crash only), or interval:MS.
    #[arg(long, default_value = "always")]
    fsync: sluice_storage::FsyncPolicy,
}

/// Runs the command line; the exit code is 0 on success.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Pub(args) => talk::publish(args),
        Command::Sub(args) => talk::subscribe(args),
        Command::Request(args) => talk::request(args),
        Command::Reply(args) => talk::reply(args),
        Command::Stream(args) => streams::run(args),
        Command::Consume(args) => consume::consume(args),
        Command::Consumer(args) => consume::consumer(args),
        Command::Tune(args) => tune::run(args),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sluice: {message}");
            ExitCode::FAILURE
        }
    }
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let listen = server::resolve(&args.listen).map_err(|e| e.to_string())?;
    let cpus = match (&args.cpuset, args.shards) {
        (Some(list), _) => cpus::parse_list(list)?,
        (None, shards) => {
            let allowed = cpus::allowed();
            let n = shards.unwrap_or(allowed.len());
            if n == 0 {
                return Err("--shards must be at least 1".into());
            }
            // More shards than CPUs share CPUs round-robin: useful on small machines and in tests.
            (0..n).map(|i| allowed[i % allowed.len()]).collect()
        }
    };
    let mut config = ServerConfig::new(listen, cpus);
    config.nats_ping_interval = std::time::Duration::from_millis(args.nats_ping_interval_ms.max(1));
    if args.nats != "off" {
        config.nats_listen = Some(server::resolve(&args.nats).map_err(|e| e.to_string())?);
    }
    config.payload_bytes_max = args.max_payload;
    config.pending_bytes_max = args.max_pending;
    config.connections_max = args.max_connections;
    config.data_dir = args.data_dir;
    config.fsync = args.fsync;
    let shards = config.cpus.len();
    server::run(config, |bound| {
        // The ready line: scripts and tests wait for it and read the address from it.
        match bound.nats {
            Some(nats) => println!(
                "sluice ready native={} nats={nats} shards={shards}",
                bound.native
            ),
            None => println!("sluice ready native={} shards={shards}", bound.native),
        }
    })
    .map_err(|e| e.to_string())
}

/// Parses a duration in milliseconds from the command line.
fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}
