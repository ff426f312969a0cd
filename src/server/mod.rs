//! The broker: one shard per core, each a glommio executor pinned to its CPU.
//!
//! `run` binds the port, starts the shards, waits for them to join the channel mesh, prints the ready
//! line, and waits for SIGINT/SIGTERM. Each shard accepts on the same address (SO_REUSEPORT) and
//! serves the connections the kernel hands it.

pub mod auth;
mod auth_pool;
mod bind;
pub mod cluster;
mod core;
mod dispatch;
mod files;
#[cfg(test)]
mod layers;
mod ports;
mod session;
mod streams;
pub mod tls;
mod trim;

use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use sluice_protocol::limits::PAYLOAD_BYTES_MAX_DEFAULT;
use sluice_storage::FsyncPolicy;
use thiserror::Error;

pub use self::cluster::ClusterConfig;
use self::core::mesh::{self, MeshBatch, PeerQueue, MESH_CHANNEL_BATCHES};
use self::core::shard::Shard;
use dispatch::MeshItem;
use ports::{conn, http};
use session::SessionShard;
use streams::StreamShard;

/// Most shards one server runs: interest is tracked per shard in a 64-bit set.
pub const SHARDS_MAX: usize = 64;

/// I/O memory each shard's executor registers with io_uring (glommio's default is 10 MiB). The
/// kernel pins it, so it is resident from the start whether or not the shard ever stores a byte; and
/// it counts against `ulimit -l` once per ring (three per executor). It only makes direct I/O skip
/// pinning its buffer: a buffer that does not fit is taken from the heap and works the same. 1 MiB
/// holds two of a partition's four group-commit rounds of 512 KiB in flight.
pub const IO_MEMORY_BYTES_PER_SHARD: usize = 1024 * 1024;

/// How often a shard looks at the process-wide stop flag set by the signal handler.
const STOP_POLL: Duration = Duration::from_millis(20);

/// How long a stopping shard waits for its connections to flush and close.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Identity of a shard: its index in the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShardId(pub u32);

/// Everything a server is started with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Native protocol address.
    pub listen: SocketAddr,
    /// NATS protocol address, if the NATS port is on.
    pub nats_listen: Option<SocketAddr>,
    /// Kafka protocol address, if the Kafka port is on.
    pub kafka_listen: Option<SocketAddr>,
    /// The `host:port` Kafka clients are told to connect to; the Kafka address if not set.
    pub kafka_advertise: Option<String>,
    /// Whether a Kafka client asking for a topic that does not exist creates it.
    pub kafka_auto_create: bool,
    /// HTTP address for /metrics, /healthz and /readyz, if on.
    pub http_listen: Option<SocketAddr>,
    /// This node's place in a cluster, if it is in one.
    pub cluster: Option<ClusterConfig>,
    /// How often the server pings a NATS client; after `NATS_PINGS_OUT_MAX` unanswered pings the
    /// connection is stale and closed.
    pub nats_ping_interval: Duration,
    /// The CPU each shard is pinned to, one entry per shard.
    pub cpus: Vec<usize>,
    /// Largest payload of one publish.
    pub payload_bytes_max: u32,
    /// Outbound bytes a connection may have buffered before it is a slow consumer.
    pub pending_bytes_max: usize,
    /// How long a write to a client may make no progress before it is a slow consumer.
    pub write_deadline: Duration,
    /// With users configured: how long a client has to authenticate.
    pub auth_timeout: Duration,
    /// A bearer token the HTTP port requires, if any.
    pub http_token: Option<String>,
    /// Most subscriptions one connection may hold.
    pub subscriptions_max: usize,
    /// Most streams on the server.
    pub streams_max: usize,
    /// Most consumers of one stream.
    pub consumers_max: usize,
    /// Most partitions of one stream.
    pub partitions_max: u32,
    /// Most unacked messages one consumer may hold per partition (its `max_ack_pending`).
    pub ack_pending_max: u32,
    /// Most pulls with an expiry one consumer member may have waiting.
    pub waiting_pulls_max: u32,
    /// Most client connections over all shards.
    pub connections_max: usize,
    /// Identity announced in the server info.
    pub server_id: String,
    /// Where streams keep their data.
    pub data_dir: std::path::PathBuf,
    /// When a stored publish counts as durable.
    pub fsync: FsyncPolicy,
    /// Users and their permissions; with none, clients connect without credentials.
    pub users: Arc<auth::Users>,
    /// Threads that check password and token hashes for all shards (with users only).
    pub auth_threads: usize,
    /// With a certificate, both client ports speak TLS only.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// A client that sends no credentials is the user its (verified) certificate names.
    pub tls_map: bool,
}

impl ServerConfig {
    /// Defaults for everything but the address and CPUs.
    pub fn new(listen: SocketAddr, cpus: Vec<usize>) -> ServerConfig {
        ServerConfig {
            listen,
            nats_listen: None,
            kafka_listen: None,
            kafka_advertise: None,
            kafka_auto_create: true,
            http_listen: None,
            cluster: None,
            nats_ping_interval: NATS_PING_INTERVAL_DEFAULT,
            cpus,
            payload_bytes_max: PAYLOAD_BYTES_MAX_DEFAULT,
            pending_bytes_max: PENDING_BYTES_MAX_DEFAULT,
            write_deadline: WRITE_DEADLINE_DEFAULT,
            auth_timeout: AUTH_TIMEOUT_DEFAULT,
            http_token: None,
            subscriptions_max: SUBSCRIPTIONS_MAX_DEFAULT,
            streams_max: STREAMS_MAX_DEFAULT,
            consumers_max: CONSUMERS_MAX_DEFAULT,
            partitions_max: PARTITIONS_MAX_DEFAULT,
            ack_pending_max: ACK_PENDING_MAX_DEFAULT,
            waiting_pulls_max: WAITING_PULLS_MAX_DEFAULT,
            connections_max: CONNECTIONS_MAX_DEFAULT,
            server_id: format!("{:016x}", fastrand::u64(..)),
            data_dir: std::path::PathBuf::from(DATA_DIR_DEFAULT),
            fsync: FsyncPolicy::Always,
            users: Arc::default(),
            auth_threads: auth_pool::auth_threads_default(),
            tls: None,
            tls_map: false,
        }
    }
}

/// Default interval between server pings of a NATS client (nats-server's default).
pub const NATS_PING_INTERVAL_DEFAULT: Duration = Duration::from_secs(120);

/// Default data directory, relative to where the server starts.
pub const DATA_DIR_DEFAULT: &str = "./sluice-data";

/// How often each shard applies its partitions' retention limits.
const RETENTION_INTERVAL: Duration = Duration::from_secs(1);

/// Default outbound limit per connection (64 MiB, as nats-server's default pending limit).
pub const PENDING_BYTES_MAX_DEFAULT: usize = 64 * 1024 * 1024;

/// Default write deadline (nats-server's): a client whose socket takes nothing for this long is a
/// slow consumer, and no publisher waits on it longer.
pub const WRITE_DEADLINE_DEFAULT: Duration = Duration::from_secs(10);

/// Default time a client has to authenticate on a server with users (nats-server's is 2 s too):
/// an unauthenticated socket holds a connection slot and a read buffer, so it may not linger.
pub const AUTH_TIMEOUT_DEFAULT: Duration = Duration::from_secs(2);

/// Default bound on one connection's subscriptions: far more than a client multiplexing many
/// streams needs, and each costs an entry on every shard, so one client cannot grow them all.
pub const SUBSCRIPTIONS_MAX_DEFAULT: usize = 64 * 1024;

/// Default bound on streams: room for a stream per user of a large service (the broker's first
/// use), while a runaway client cannot create streams until memory or disk runs out.
pub const STREAMS_MAX_DEFAULT: usize = 200_000;

/// Default bound on one stream's consumers: each has state and tasks in every partition and a
/// dead-letter stream, so the count is bounded like any other per-client resource.
pub const CONSUMERS_MAX_DEFAULT: usize = 1000;

/// Default bound on one stream's partitions: each is a directory of segments, a log with its
/// committer task and an entry per consumer, so a client cannot ask for millions.
pub const PARTITIONS_MAX_DEFAULT: u32 = 1024;

/// Default bound on the unacked messages one consumer may hold per partition: each is an entry in
/// its state, written at every save, so a client cannot ask for billions.
pub const ACK_PENDING_MAX_DEFAULT: u32 = 100_000;

/// Default bound on the pulls with an expiry one member may have waiting (JetStream's default
/// `max_waiting`): each holds a timer, so a client cannot make the shard keep an unbounded number.
pub const WAITING_PULLS_MAX_DEFAULT: u32 = 512;

/// Default connection limit: well above the 1,000s of streams per box the broker is for.
pub const CONNECTIONS_MAX_DEFAULT: usize = 64 * 1024;

/// Why the server could not start or stopped with an error.
#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot start the hashing threads: {0}")]
    AuthThreads(std::io::Error),
    #[error("cannot resolve listen address {0}")]
    Resolve(String),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "cannot bind {addr}: another process listens on it (it still answered after {waited:?})"
    )]
    Taken { addr: SocketAddr, waited: Duration },
    #[error("{count} shards requested; between 1 and {SHARDS_MAX} are supported")]
    ShardCount { count: usize },
    #[error("cannot start shard {shard} on CPU {cpu}: {reason}")]
    Executor {
        shard: usize,
        cpu: usize,
        reason: String,
    },
    #[error("cannot install the signal handler: {0}")]
    Signals(std::io::Error),
    #[error("shard {0} failed before it was ready")]
    ShardFailed(usize),
}

/// The addresses a running server listens on.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub native: SocketAddr,
    pub nats: Option<SocketAddr>,
    pub kafka: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub cluster: Option<SocketAddr>,
}

/// A TLS configuration from PEM files: the certificate chain and its private key; with a client
/// verifier (`tls::client_verifier`), clients present certificates it accepts.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
    clients: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("key `tls_cert`: {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "key `tls_cert`: {}: no certificate",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("key `tls_key`: {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match clients {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(certs, key)
        .map(Arc::new)
        .map_err(|e| format!("key `tls_key`: {e}"))
}

/// Resolves a `host:port` string.
pub fn resolve(addr: &str) -> Result<SocketAddr, ServerError> {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| ServerError::Resolve(addr.to_string()))
}

/// Reserves a concrete port for an address whose port is 0, so that every shard binds the same one,
/// and holds a fixed one while the shards start. The returned socket is bound (with SO_REUSEADDR and
/// SO_REUSEPORT) but not listening: it takes no connections, and it is dropped once the shards
/// listen.
fn reserve_port(addr: SocketAddr) -> Result<(SocketAddr, socket2::Socket), ServerError> {
    let socket = bind::bind(addr, false)?;
    let local = socket
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?
        .as_socket()
        .ok_or_else(|| ServerError::Resolve(addr.to_string()))?;
    Ok((local, socket))
}

/// A listening socket for a port only shard 0 serves, and the address it is bound to.
fn listen_for_shard_zero(
    addr: SocketAddr,
) -> Result<(SocketAddr, std::net::TcpListener), ServerError> {
    let listener: std::net::TcpListener = bind::bind(addr, true)?.into();
    let local = listener
        .set_nonblocking(true)
        .and_then(|()| listener.local_addr())
        .map_err(|source| ServerError::Bind { addr, source })?;
    Ok((local, listener))
}

/// Runs the server until SIGINT or SIGTERM; `on_ready` is called once every shard listens.
pub fn run(config: ServerConfig, on_ready: impl FnOnce(Bound)) -> Result<(), ServerError> {
    let shards = config.cpus.len();
    if shards == 0 || shards > SHARDS_MAX {
        return Err(ServerError::ShardCount { count: shards });
    }
    raise_open_files_limit();
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).map_err(ServerError::Signals)?;
    }
    // A fixed address something still answers on is either a killed broker's lingering socket,
    // which goes within moments, or a live process, which this one must not share it with.
    for addr in [
        Some(config.listen),
        config.nats_listen,
        config.kafka_listen,
        config.http_listen,
        config.cluster.as_ref().map(|c| c.listen),
    ]
    .into_iter()
    .flatten()
    {
        bind::wait_until_unanswered(addr)?;
    }
    let (listen, reservation) = reserve_port(config.listen)?;
    let nats = config.nats_listen.map(reserve_port).transpose()?;
    let kafka = config.kafka_listen.map(reserve_port).transpose()?;
    // The HTTP port is served by shard 0 alone: bound here, so that its address is known. So is
    // the cluster port: shard 0 keeps the links to the other nodes.
    let mut http = config.http_listen.map(listen_for_shard_zero).transpose()?;
    let http_addr = http.as_ref().map(|(addr, _)| *addr);
    let mut cluster = config
        .cluster
        .as_ref()
        .map(|c| listen_for_shard_zero(c.listen))
        .transpose()?;
    let cluster_addr = cluster.as_ref().map(|(addr, _)| *addr);
    let mut config = config;
    config.listen = listen;
    config.nats_listen = nats.as_ref().map(|(addr, _)| *addr);
    config.kafka_listen = kafka.as_ref().map(|(addr, _)| *addr);
    let config = Arc::new(config);
    let auth = match config.users.required() {
        true => Some(Arc::new(
            auth_pool::AuthPool::start(config.users.clone(), config.auth_threads)
                .map_err(ServerError::AuthThreads)?,
        )),
        false => None,
    };

    let mesh = MeshBuilder::<MeshBatch<MeshItem>, _>::full(shards, MESH_CHANNEL_BATCHES);
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let mut handles = Vec::with_capacity(shards);
    for (index, &cpu) in config.cpus.iter().enumerate() {
        let config = config.clone();
        let auth = auth.clone();
        let mesh = mesh.clone();
        let stop = stop.clone();
        let ready = ready_tx.clone();
        let (http, cluster) = if index == 0 {
            (http.take().map(|(_, l)| l), cluster.take())
        } else {
            (None, None)
        };
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("shard-{index}"))
            .io_memory(IO_MEMORY_BYTES_PER_SHARD)
            .spawn(move || run_shard(config, auth, mesh, stop, ready, http, cluster))
            .map_err(|e| ServerError::Executor {
                shard: index,
                cpu,
                reason: e.to_string(),
            })?;
        handles.push(handle);
    }
    drop(ready_tx);
    for index in 0..shards {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => {
                tracing::error!(%reason, "shard failed to start");
                stop.store(true, Ordering::SeqCst);
                return Err(ServerError::ShardFailed(index));
            }
            Err(_) => return Err(ServerError::ShardFailed(index)),
        }
    }
    drop(reservation);
    let nats = nats.map(|(addr, _reservation)| addr);
    let kafka = kafka.map(|(addr, _reservation)| addr);
    on_ready(Bound {
        native: listen,
        nats,
        kafka,
        http: http_addr,
        cluster: cluster_addr,
    });
    tracing::info!(%listen, shards, "sluice ready");
    for handle in handles {
        if let Err(e) = handle.join() {
            tracing::error!(error = %e, "shard exited with an error");
        }
    }
    tracing::info!("sluice stopped");
    Ok(())
}

/// Raises the soft open-file limit to the hard one: partition logs and connections each hold a
/// file, and the shards size their share of open logs by this limit.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) and setrlimit(2) only read and write the struct they are given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                tracing::debug!(
                    soft = limit.rlim_cur,
                    "the open-file limit could not be raised"
                );
            }
        }
    }
}

async fn run_shard(
    config: Arc<ServerConfig>,
    auth: Option<Arc<auth_pool::AuthPool>>,
    mesh: MeshBuilder<MeshBatch<MeshItem>, glommio::channels::channel_mesh::Full>,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<Result<(), String>>,
    http: Option<std::net::TcpListener>,
    cluster: Option<(SocketAddr, std::net::TcpListener)>,
) {
    let listener = match bind::listen_on_shard(config.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    let mut optional = Vec::with_capacity(2);
    for addr in [config.nats_listen, config.kafka_listen] {
        match addr.map(bind::listen_on_shard) {
            None => optional.push(None),
            Some(listening) => match listening.await {
                Ok(listener) => optional.push(Some(listener)),
                Err(e) => {
                    let _ = ready.send(Err(e.to_string()));
                    return;
                }
            },
        }
    }
    let kafka_listener = optional.pop().flatten();
    let nats_listener = optional.pop().flatten();
    let (senders, receivers) = match mesh.join().await {
        Ok(joined) => joined,
        Err(e) => {
            let _ = ready.send(Err(format!("could not join the shard mesh: {e}")));
            return;
        }
    };
    let id = ShardId(senders.peer_id() as u32);
    let nr_peers = senders.nr_consumers();
    let peers: Vec<Rc<PeerQueue<MeshItem>>> = (0..nr_peers).map(|_| Rc::default()).collect();
    let core_peers = peers
        .iter()
        .map(|p| p.clone() as Rc<dyn mesh::Peer>)
        .collect();
    let core = Rc::new(Shard::new(id, config.clone(), core_peers));
    let stream_peers = peers
        .iter()
        .map(|p| p.clone() as Rc<dyn streams::Peer>)
        .collect();
    let streams = Rc::new(StreamShard::new(core.clone(), stream_peers));
    let shard = Rc::new(SessionShard::new(core.clone(), streams.clone(), auth));
    ports::jetstream::install(&shard);
    let senders = Rc::new(senders);
    for (peer, queue) in peers.iter().enumerate() {
        if peer == id.0 as usize {
            continue;
        }
        let core = core.clone();
        glommio::spawn_local(mesh::run_sender(
            id,
            peer,
            queue.clone(),
            senders.clone(),
            move || core.on_peer_sent(),
        ))
        .detach();
    }
    {
        let mut receivers = receivers;
        for (_peer, stream) in receivers.streams() {
            glommio::spawn_local(dispatch::receive_from(shard.clone(), stream)).detach();
        }
    }
    {
        let core = core.clone();
        glommio::spawn_local(async move {
            while !stop.load(Ordering::Relaxed) {
                glommio::timer::sleep(STOP_POLL).await;
            }
            core.stopping.set();
        })
        .detach();
    }
    if let Some(listener) = http {
        use std::os::unix::io::{FromRawFd, IntoRawFd};
        // SAFETY: the descriptor comes from a listening socket this shard now owns alone.
        let listener = unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) };
        glommio::spawn_local(http::serve(streams.clone(), listener)).detach();
    }
    if let (Some((bound, listener)), Some(settings)) = (cluster, &config.cluster) {
        use std::os::unix::io::{FromRawFd, IntoRawFd};
        // SAFETY: the descriptor comes from a listening socket this shard now owns alone.
        let listener = unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) };
        let links = Rc::new(cluster::Cluster::new(
            settings,
            bound,
            config.cpus.len(),
            config.listen,
            config.nats_listen,
            (config.kafka_listen, config.kafka_advertise.as_deref()),
        ));
        let _ = streams.cluster.set(links.clone());
        glommio::spawn_local(streams::apply_decided(streams.clone(), links.clone())).detach();
        glommio::spawn_local(streams::replica::route_from_links(
            streams.clone(),
            links.clone(),
        ))
        .detach();
        glommio::spawn_local(streams::share_client_addrs(streams.clone(), links.clone())).detach();
        glommio::spawn_local(cluster::run(core.clone(), links, listener)).detach();
    }
    if id.0 == 0 {
        match streams::Registry::load(&config.data_dir) {
            Ok(registry) => {
                *streams.registry.borrow_mut() = Some(registry);
                streams::publish_registry(&streams);
            }
            Err(e) => {
                let _ = ready.send(Err(format!("stream registry: {e}")));
                return;
            }
        }
    }
    {
        let streams = streams.clone();
        glommio::spawn_local(async move {
            while !streams.core.stopping.is_set() {
                glommio::timer::sleep(RETENTION_INTERVAL).await;
                streams::apply_retention(&streams).await;
                streams::close_idle_logs_now(&streams);
            }
        })
        .detach();
    }
    glommio::spawn_local(trim::run(core.clone())).detach();
    // Ready only once the streams are known here: a publish or a Kafka request taken before
    // shard 0's list arrives would find no stream.
    while !streams.streams_known.get() && !core.stopping.is_set() {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    let _ = ready.send(Ok(()));
    tracing::debug!(shard = id.0, "accepting");
    let nats_accept = nats_listener.map(|listener| {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            accept_loop(&shard, &listener, conn::Protocol::Nats).await;
        })
    });
    let kafka_accept = kafka_listener.map(|listener| {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            accept_until_stopped(&shard.core, &listener, |stream| {
                ports::kafka::serve(shard.clone(), stream)
            })
            .await;
        })
    });
    accept_loop(&shard, &listener, conn::Protocol::Native).await;
    drop(listener);
    if let Some(task) = nats_accept {
        task.await;
    }
    if let Some(task) = kafka_accept {
        task.await;
    }
    drain(&core).await;
    streams::close_all(&streams).await;
    let stats = &core.stats;
    tracing::info!(
        shard = id.0,
        accepted = stats.connections_accepted.get(),
        msgs_in = stats.msgs_in.get(),
        msgs_out = stats.msgs_out.get(),
        forwards_out = stats.forwards_out.get(),
        slow_consumers = stats.slow_consumers.get(),
        protocol_errors = stats.protocol_errors.get(),
        "shard stopped"
    );
}

async fn accept_loop(shard: &Rc<SessionShard>, listener: &TcpListener, protocol: conn::Protocol) {
    accept_until_stopped(&shard.core, listener, |stream| {
        conn::serve(shard.clone(), stream, protocol)
    })
    .await;
}

/// Accepts connections until the shard stops, serving each in a task of its own.
pub(crate) async fn accept_until_stopped<F>(
    shard: &Rc<Shard>,
    listener: &TcpListener,
    serve: impl Fn(glommio::net::TcpStream) -> F,
) where
    F: std::future::Future<Output = ()> + 'static,
{
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            shard.stopping.wait().await;
            None
        })
        .await;
        match accepted {
            None => return,
            Some(Ok(stream)) => {
                glommio::spawn_local(serve(stream)).detach();
            }
            Some(Err(e)) => {
                tracing::warn!(shard = shard.id.0, error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Waits, up to the grace period, for every connection to flush and close.
async fn drain(shard: &Rc<Shard>) {
    let deadline = std::time::Instant::now() + STOP_GRACE;
    while !shard.open_connections().is_empty() && std::time::Instant::now() < deadline {
        glommio::timer::sleep(STOP_POLL).await;
    }
}
