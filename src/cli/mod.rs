//! The `sluice` command line: `serve` runs the broker; `pub`, `sub`, `request` and `reply` talk to it.

mod bench;
mod cluster;
mod config;
mod consume;
mod cpus;
mod streams;
mod talk;
mod tune;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use self::config::Settings;
use crate::server::{self, ServerConfig};

/// Default native protocol address.
pub const NATIVE_ADDR_DEFAULT: &str = "127.0.0.1:4280";

/// Default NATS protocol address.
pub const NATS_ADDR_DEFAULT: &str = "127.0.0.1:4222";
/// Default Kafka protocol address (Kafka's).
pub const KAFKA_ADDR_DEFAULT: &str = "127.0.0.1:9092";

#[derive(Parser, Debug)]
#[command(name = "sluice", version, about = "A thread-per-core message broker")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the broker.
    // Boxed: its many flags make it far larger than the other commands.
    Serve(Box<ServeArgs>),
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
    /// Inspect the cluster a node is in.
    Cluster(cluster::ClusterArgs),
    /// Print an argon2 hash of a password or token read from stdin, for the config file's users.
    Passwd,
    /// Measure a server: throughput and latency percentiles of a load scenario.
    Bench(bench::BenchArgs),
    /// Report this machine's CPUs, NUMA nodes, NIC queues, limits and I/O support, with advice.
    Tune(tune::TuneArgs),
}

/// `sluice serve` flags. Each overrides the same key of the `--config` file; the defaults apply to
/// what neither gives (`--print-config` shows the result).
#[derive(Args, Debug)]
struct ServeArgs {
    /// A TOML file with any of the settings below (same names, with `_` for `-`).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Print the effective settings as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Native protocol address; port 0 picks a free port (the ready line names it)
    /// [default: 127.0.0.1:4280].
    #[arg(long)]
    listen: Option<String>,
    /// NATS protocol address, for existing NATS clients; `off` disables it [default: 127.0.0.1:4222].
    #[arg(long)]
    nats: Option<String>,
    /// How often NATS clients are pinged; two unanswered pings close the connection as stale
    /// [default: 120000].
    #[arg(long)]
    nats_ping_interval_ms: Option<u64>,
    /// Kafka protocol address, for Kafka clients; `off` disables it [default: 127.0.0.1:9092].
    #[arg(long)]
    kafka: Option<String>,
    /// The `host:port` Kafka clients are told to connect to [default: the Kafka address].
    #[arg(long)]
    kafka_advertise: Option<String>,
    /// Whether a Kafka client asking for a topic that does not exist creates it, as Kafka's
    /// `auto.create.topics.enable` [default: true].
    #[arg(long)]
    kafka_auto_create: Option<bool>,
    /// HTTP address for /metrics, /healthz and /readyz; `off` disables it [default: 127.0.0.1:8280].
    #[arg(long)]
    http: Option<String>,
    /// This node's name in a cluster, unique among its nodes [default: HOSTNAME:CLUSTER_PORT].
    #[arg(long)]
    name: Option<String>,
    /// Where this node listens for the other nodes of its cluster, e.g. `127.0.0.1:6222`; without
    /// it the server is a single node.
    #[arg(long)]
    cluster: Option<String>,
    /// The other nodes' cluster addresses, comma-separated.
    #[arg(long, value_delimiter = ',')]
    routes: Vec<String>,
    /// The `host:port` peers are told this node is at [default: the cluster address].
    #[arg(long)]
    cluster_advertise: Option<String>,
    /// Number of shards, one per CPU [default: every CPU this process may use].
    #[arg(long, conflicts_with = "cpuset")]
    shards: Option<usize>,
    /// CPUs to run shards on, e.g. `0-3,6`.
    #[arg(long)]
    cpuset: Option<String>,
    /// Largest payload of one message, in bytes [default: 8 MiB].
    #[arg(long)]
    max_payload: Option<u32>,
    /// Outbound bytes a connection may have buffered before it is cut off as a slow consumer
    /// [default: 64 MiB].
    #[arg(long)]
    max_pending: Option<usize>,
    /// How long a write to a client may make no progress before the client is cut off as a slow
    /// consumer; publishers feeding a full client wait for it at most this long [default: 10000].
    #[arg(long)]
    write_deadline_ms: Option<u64>,
    /// With users configured: how long a client has to authenticate before it is disconnected
    /// [default: 2000].
    #[arg(long)]
    auth_timeout_ms: Option<u64>,
    /// A bearer token the HTTP port requires (`Authorization: Bearer <token>`) [default: none].
    #[arg(long)]
    http_token: Option<String>,
    /// Most subscriptions one connection may hold [default: 65536].
    #[arg(long)]
    max_subscriptions: Option<usize>,
    /// Most streams on the server [default: 200000].
    #[arg(long)]
    max_streams: Option<usize>,
    /// Most consumers of one stream [default: 1000].
    #[arg(long)]
    max_consumers: Option<usize>,
    /// Most partitions of one stream [default: 1024].
    #[arg(long)]
    max_partitions: Option<u32>,
    /// Most unacked messages a consumer may ask to hold per partition (its max_ack_pending)
    /// [default: 100000].
    #[arg(long)]
    max_ack_pending: Option<u32>,
    /// Most pulls with an expiry one consumer member may have waiting [default: 512].
    #[arg(long)]
    max_waiting_pulls: Option<u32>,
    /// Most client connections [default: 65536].
    #[arg(long)]
    max_connections: Option<usize>,
    /// Where streams keep their data [default: ./sluice-data].
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// When a stored publish is acknowledged: always (after fdatasync, with group commit), never
    /// (after the write; survives a process crash only), or interval:MS [default: always].
    #[arg(long)]
    fsync: Option<String>,
    /// Log lines as `text` or `json` [default: text].
    #[arg(long)]
    log_format: Option<String>,
    /// Log filter, e.g. `info` or `sluice=debug` (SLUICE_LOG overrides it) [default: info].
    #[arg(long)]
    log_level: Option<String>,
    /// PEM certificate chain; with --tls-key, the native and NATS ports speak TLS only.
    #[arg(long)]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long)]
    tls_key: Option<std::path::PathBuf>,
    /// PEM bundle of the CAs that sign client certificates; a client that presents one must be
    /// signed by them.
    #[arg(long)]
    tls_ca: Option<std::path::PathBuf>,
    /// Require a client certificate signed by --tls-ca: a handshake without one fails.
    #[arg(long)]
    tls_verify: bool,
    /// As --tls-verify, and a client that sends no credentials is the user its certificate names:
    /// an e-mail or DNS name of its subject alternative names, or its subject in RFC 2253 form
    /// (`CN=alice,O=Acme`), first match in that order, among users without password or token.
    #[arg(long)]
    tls_map: bool,
}

impl ServeArgs {
    fn settings(&self) -> Settings {
        Settings {
            listen: self.listen.clone(),
            nats: self.nats.clone(),
            nats_ping_interval_ms: self.nats_ping_interval_ms,
            kafka: self.kafka.clone(),
            kafka_advertise: self.kafka_advertise.clone(),
            kafka_auto_create: self.kafka_auto_create,
            http: self.http.clone(),
            name: self.name.clone(),
            cluster: self.cluster.clone(),
            routes: self.routes.clone(),
            cluster_advertise: self.cluster_advertise.clone(),
            cluster_secret: std::env::var("SLUICE_CLUSTER_SECRET")
                .ok()
                .filter(|s| !s.is_empty()),
            shards: self.shards,
            cpuset: self.cpuset.clone(),
            max_payload: self.max_payload,
            max_pending: self.max_pending,
            write_deadline_ms: self.write_deadline_ms,
            auth_timeout_ms: self.auth_timeout_ms,
            http_token: self.http_token.clone(),
            max_subscriptions: self.max_subscriptions,
            max_streams: self.max_streams,
            max_consumers: self.max_consumers,
            max_partitions: self.max_partitions,
            max_ack_pending: self.max_ack_pending,
            max_waiting_pulls: self.max_waiting_pulls,
            max_connections: self.max_connections,
            data_dir: self.data_dir.clone(),
            fsync: self.fsync.clone(),
            log_format: self.log_format.clone(),
            log_level: self.log_level.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_ca: self.tls_ca.clone(),
            tls_verify: self.tls_verify.then_some(true),
            tls_map: self.tls_map.then_some(true),
            users: Vec::new(),
        }
    }
}

/// Runs the command line; the exit code is 0 on success.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        init_logs("text", "info");
    }
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Pub(args) => talk::publish(args),
        Command::Sub(args) => talk::subscribe(args),
        Command::Request(args) => talk::request(args),
        Command::Reply(args) => talk::reply(args),
        Command::Stream(args) => streams::run(args),
        Command::Consume(args) => consume::consume(args),
        Command::Consumer(args) => consume::consumer(args),
        Command::Cluster(args) => cluster::run(args),
        Command::Tune(args) => tune::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Passwd => passwd(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sluice: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr through `tracing`; `SLUICE_LOG` overrides the level filter.
fn init_logs(format: &str, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let flags = args.settings();
    flags.check().map_err(|e| e.replace("key `", "flag `--"))?;
    let file = match &args.config {
        Some(path) => Settings::load(path)?,
        None => Settings::default(),
    };
    let settings = file.overridden_by(flags).effective();
    settings.check_merged().map_err(|e| match &args.config {
        Some(path) => format!("config {} with the flags: {e}", path.display()),
        None => e,
    })?;
    if args.print_config {
        print!("{}", settings.to_toml());
        return Ok(());
    }
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    init_logs(&text(&settings.log_format), &text(&settings.log_level));
    let listen = server::resolve(&text(&settings.listen)).map_err(|e| e.to_string())?;
    let cpus = match (&settings.cpuset, settings.shards) {
        (Some(list), _) => cpus::parse_list(list)?,
        (None, shards) => {
            let allowed = cpus::allowed();
            let n = shards.unwrap_or(allowed.len());
            // More shards than CPUs share CPUs round-robin: useful on small machines and in tests.
            (0..n).map(|i| allowed[i % allowed.len()]).collect()
        }
    };
    let mut config = ServerConfig::new(listen, cpus);
    config.nats_ping_interval =
        Duration::from_millis(settings.nats_ping_interval_ms.unwrap_or(1).max(1));
    let optional_addr = |v: &Option<String>| -> Result<Option<std::net::SocketAddr>, String> {
        match v.as_deref() {
            None | Some("off") => Ok(None),
            Some(a) => server::resolve(a).map(Some).map_err(|e| e.to_string()),
        }
    };
    config.nats_listen = optional_addr(&settings.nats)?;
    config.kafka_listen = optional_addr(&settings.kafka)?;
    config.kafka_advertise = settings.kafka_advertise.clone();
    config.kafka_auto_create = settings.kafka_auto_create.unwrap_or(true);
    config.http_listen = optional_addr(&settings.http)?;
    if let Some(cluster) = &settings.cluster {
        config.cluster = Some(server::ClusterConfig {
            name: settings
                .name
                .clone()
                .unwrap_or_else(|| config::default_node_name(cluster)),
            listen: server::resolve(cluster).map_err(|e| e.to_string())?,
            routes: settings.routes.clone(),
            secret: settings.cluster_secret.clone(),
            advertise: settings.cluster_advertise.clone(),
        });
    }
    config.payload_bytes_max = settings.max_payload.unwrap_or(config.payload_bytes_max);
    config.pending_bytes_max = settings.max_pending.unwrap_or(config.pending_bytes_max);
    if let Some(ms) = settings.write_deadline_ms {
        config.write_deadline = Duration::from_millis(ms.max(1));
    }
    if let Some(ms) = settings.auth_timeout_ms {
        config.auth_timeout = Duration::from_millis(ms.max(1));
    }
    config.http_token = settings.http_token.clone();
    config.subscriptions_max = settings
        .max_subscriptions
        .unwrap_or(config.subscriptions_max);
    config.streams_max = settings.max_streams.unwrap_or(config.streams_max);
    config.consumers_max = settings.max_consumers.unwrap_or(config.consumers_max);
    config.partitions_max = settings.max_partitions.unwrap_or(config.partitions_max);
    config.ack_pending_max = settings.max_ack_pending.unwrap_or(config.ack_pending_max);
    config.waiting_pulls_max = settings
        .max_waiting_pulls
        .unwrap_or(config.waiting_pulls_max);
    config.connections_max = settings.max_connections.unwrap_or(config.connections_max);
    config.data_dir = settings.data_dir.clone().unwrap_or(config.data_dir);
    config.fsync = text(&settings.fsync).parse()?;
    config.users = std::sync::Arc::new(server::auth::Users::new(&settings.users));
    if let (Some(cert), Some(key)) = (&settings.tls_cert, &settings.tls_key) {
        use server::tls::{client_verifier, ClientCerts};
        config.tls_map = settings.tls_map == Some(true);
        let required = config.tls_map || settings.tls_verify == Some(true);
        let certs = match required {
            true => ClientCerts::Required,
            false => ClientCerts::Optional,
        };
        let clients = match &settings.tls_ca {
            Some(ca) => Some(client_verifier(ca, certs)?),
            None => None,
        };
        config.tls = Some(server::tls_config(cert, key, clients)?);
    }
    let shards = config.cpus.len();
    server::run(config, |bound| {
        // The ready line: scripts and tests wait for it and read the addresses from it.
        let mut line = format!("sluice ready native={}", bound.native);
        if let Some(nats) = bound.nats {
            line += &format!(" nats={nats}");
        }
        if let Some(kafka) = bound.kafka {
            line += &format!(" kafka={kafka}");
        }
        if let Some(http) = bound.http {
            line += &format!(" http={http}");
        }
        if let Some(cluster) = bound.cluster {
            line += &format!(" cluster={cluster}");
        }
        println!("{line} shards={shards}");
    })
    .map_err(|e| e.to_string())
}

fn passwd() -> Result<(), String> {
    let mut secret = String::new();
    std::io::stdin()
        .read_line(&mut secret)
        .map_err(|e| format!("reading stdin: {e}"))?;
    let secret = secret.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        return Err("give the password or token on stdin".into());
    }
    println!("{}", server::auth::hash(secret));
    Ok(())
}

/// Client settings of the command line: credentials come from `SLUICE_USER` and
/// `SLUICE_PASSWORD`, or `SLUICE_TOKEN`, so that they stay out of shell history and `ps`.
fn client_options(name: &str) -> crate::client::ClientOptions {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    crate::client::ClientOptions {
        name: name.into(),
        user: var("SLUICE_USER"),
        password: var("SLUICE_PASSWORD"),
        token: var("SLUICE_TOKEN"),
        ..crate::client::ClientOptions::default()
    }
}

/// Connects to the first server of `servers` (comma-separated) that answers.
fn connect(servers: &str, name: &str) -> Result<crate::client::Client, String> {
    crate::client::Client::connect_any(servers, client_options(name))
        .map_err(|e| format!("cannot connect to {servers}: {e}"))
}

/// Parses a duration in milliseconds from the command line.
fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}
