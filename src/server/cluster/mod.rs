//! The links between the nodes of a cluster, kept by shard 0, which also keeps the stream
//! registry.
//!
//! Shard 0 listens on the cluster address (`--cluster`) and dials every route (`--routes`). A link
//! opens with the dialer's `Hello`, answered by the other node's own (`Welcome`) or a refusal: a
//! route back to the node itself, another protocol version, another shard count (a partition's
//! replicas live on the same shard of every node), or a name already linked under another address.
//! Both sides then send a ping every second; a link that brings nothing for five seconds is
//! closed, and its dialer dials again, backing off up to two seconds between tries. A peer is up
//! while at least one link to it is open.

mod link;
pub mod meta;
mod reader;

pub use link::run;
pub use meta::MetaOp;
use meta::Waiter;
use reader::LinkReader;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::future::or;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use protobuf::Message as _;
use raft::eraftpb::Message;
use sluice_protocol::cluster::{
    ClusterFrame, ClusterFrameError, Hello, Refusal, CLUSTER_PROTOCOL_VERSION,
};
use sluice_storage::wake::{Event, Notify};

use super::core::shard::Shard;
use super::core::socket::{Half, Socket};
use crate::api::{ClusterInfo, MetaInfo, PeerInfo, RouteInfo};

/// How often each side of an open link pings the other.
const PING_INTERVAL: Duration = Duration::from_secs(1);
/// A link that brings nothing for this long is down.
const LINK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a new link may take to say hello, and a dial to connect.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait between two dials of a route that does not answer.
const DIAL_BACKOFF_MAX: Duration = Duration::from_secs(2);
const DIAL_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Most consensus messages waiting for a link to one peer, or for the meta group from all of
/// them: past it the oldest go (consensus retries what is lost).
const RAFT_QUEUE_MAX: usize = 4096;
/// Most bytes of frames waiting for a link to one peer: past it the oldest go, as above (a
/// forwarded publish lost this way is answered by its timeout).
const OUTBOX_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Most partition-group items read from the links and not yet taken by the streams: past it the
/// links stop reading, which slows the peers sending them.
const GROUP_INBOX_MAX: usize = 8192;
/// Bytes a link reads at a time: a consensus message with a batch of entries comes in a few reads.
const LINK_READ_BYTES: usize = 64 * 1024;
/// Bytes of queued frames a link writes at once.
const LINK_WRITE_BYTES: usize = 1024 * 1024;

/// A node's place in its cluster, from its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster.
    pub name: String,
    /// Where this node listens for its peers.
    pub listen: SocketAddr,
    /// The other nodes' cluster addresses.
    pub routes: Vec<String>,
    /// A secret every node of the cluster knows: a link whose hello does not prove it is refused.
    pub secret: Option<String>,
    /// The address peers are told this node is at; the bound cluster address if not set.
    pub advertise: Option<String>,
}

/// Shard 0's view of the cluster: the peers it has linked with, and each route's state.
pub struct Cluster {
    name: String,
    secret: Option<String>,
    /// This node's proof of the secret, sent in its hellos.
    proof: Vec<u8>,
    /// Random for this start: tells a hello of its own from another node's of the same name.
    instance: u64,
    addr: String,
    shards: u16,
    routes: Vec<String>,
    peers: RefCell<BTreeMap<String, Peer>>,
    route_states: RefCell<Vec<RouteState>>,
    /// The name behind each route, once a link through it said.
    route_names: RefCell<Vec<Option<String>>>,
    /// Woken when a peer's outbox gets a message.
    outbox_filled: Event,
    /// Consensus messages for the meta group, and its driver's wake-up.
    meta_inbox: RefCell<VecDeque<Message>>,
    meta_wake: Notify,
    /// What the meta group's driver last saw.
    meta_status: RefCell<Option<MetaInfo>>,
    /// Registry changes asked for on this node, waiting to be proposed.
    proposals: RefCell<VecDeque<MetaOp>>,
    next_proposal: Cell<u64>,
    /// Those asked for here and not yet decided, by id.
    waiters: RefCell<HashMap<u64, Rc<Waiter>>>,
    /// Decided changes, in log order, for the registry to apply.
    decided: RefCell<VecDeque<(u64, MetaOp)>>,
    decided_ready: Notify,
    /// The last change the registry applied, and the last one whose application is durable.
    applied: Cell<u64>,
    applied_durable: Cell<u64>,
    applied_written: Event,
    /// What the links brought for the partitions' groups, for the streams to take.
    group_inbox: RefCell<VecDeque<GroupIn>>,
    group_ready: Notify,
    group_taken: Event,
    /// Where this node's clients connect: native, NATS and Kafka (empty if off).
    clients: ClientAddrs,
    /// Notified when a peer says where its clients connect.
    clients_changed: Notify,
}

/// A frame for a partition's group, from a peer.
#[derive(Debug)]
pub enum GroupIn {
    /// A consensus message for the group of `stream`'s `partition`.
    Group {
        stream: String,
        partition: u32,
        message: Vec<u8>,
    },
    /// A publish for a partition this node leads, to be answered with `Forwarded`.
    Forward {
        from: String,
        stream: String,
        partition: u32,
        id: u64,
        count: u32,
        deadline_ms: u64,
        body: Bytes,
    },
    /// The outcome of a publish this node forwarded.
    Forwarded {
        id: u64,
        result: Result<u64, (u16, String)>,
    },
    /// A consumer's state in a replicated partition, as saved where it runs (empty: deleted),
    /// from node `from`, which numbered it `seq`.
    Consumer {
        from: String,
        stream: String,
        partition: u32,
        consumer: String,
        seq: u64,
        state: Vec<u8>,
    },
    /// Node `from` holds a consumer's state this node sent, numbered `seq` or later.
    Held {
        from: String,
        stream: String,
        partition: u32,
        consumer: String,
        seq: u64,
    },
    /// Node `from` asks which state of a consumer this node keeps.
    Ask {
        from: String,
        stream: String,
        partition: u32,
        consumer: String,
    },
    /// A Kafka group's committed offsets, as saved by its coordinator.
    Offsets { group: String, saved: Vec<u8> },
}

struct Peer {
    /// Encoded frames for it, sent by whichever link to it writes next.
    outbox: VecDeque<Bytes>,
    outbox_bytes: usize,
    /// Where its NATS and Kafka clients connect, once it said (empty if that port is off).
    nats: String,
    kafka: String,
    /// The address it gave as its cluster address.
    addr: String,
    /// Open links to it (a dialed one and an accepted one at most, normally).
    links: u32,
    /// When it last came up, or went down.
    since: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RouteState {
    Dialing {
        failures: u32,
        last_error: Option<String>,
    },
    Linked(String),
    Itself,
}

/// Why a link ended.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Frame(#[from] ClusterFrameError),
    #[error("nothing for {0:?}")]
    Silent(Duration),
    #[error("the peer closed the link")]
    Closed,
    #[error("unexpected {0} frame")]
    Unexpected(&'static str),
    #[error("refused: {0}")]
    Refused(String),
    #[error("the route leads to this node")]
    Itself,
}

/// A frame read off a link, owning its strings.
enum Received {
    Hello(Introduction),
    Welcome(Introduction),
    Refuse(Option<String>),
    Ping,
    Raft(Vec<u8>),
    Group(GroupIn),
    Clients { nats: String, kafka: String },
}

/// Where a node's clients connect, each empty if that port is off.
#[derive(Debug, Clone, Default)]
pub struct ClientAddrs {
    pub native: String,
    pub nats: String,
    pub kafka: String,
}

#[derive(Debug, Clone)]
struct Introduction {
    version: u16,
    node: String,
    cluster_addr: String,
    shards: u16,
    proof: Vec<u8>,
    instance: u64,
}

impl From<&Hello<'_>> for Introduction {
    fn from(hello: &Hello<'_>) -> Introduction {
        Introduction {
            version: hello.version,
            node: hello.node.to_string(),
            cluster_addr: hello.cluster_addr.to_string(),
            shards: hello.shards,
            proof: hello.proof.to_vec(),
            instance: hello.instance,
        }
    }
}

impl Cluster {
    /// `native`, `nats` and `kafka` are where this node's clients connect, to be told to its
    /// peers; `kafka_advertise`, if set, is the Kafka address clients are told instead.
    pub fn new(
        config: &ClusterConfig,
        bound: SocketAddr,
        shards: usize,
        native: SocketAddr,
        nats: Option<SocketAddr>,
        kafka: (Option<SocketAddr>, Option<&str>),
    ) -> Cluster {
        let addr = config
            .advertise
            .clone()
            .unwrap_or_else(|| bound.to_string());
        let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
        let reachable = |a: SocketAddr| {
            if a.ip().is_unspecified() {
                format!("{host}:{}", a.port())
            } else {
                a.to_string()
            }
        };
        let clients = ClientAddrs {
            native: reachable(native),
            nats: nats.map(reachable).unwrap_or_default(),
            kafka: match kafka {
                (Some(_), Some(advertised)) => advertised.to_string(),
                (listen, _) => listen.map(reachable).unwrap_or_default(),
            },
        };
        Cluster {
            name: config.name.clone(),
            secret: config.secret.clone(),
            proof: proof(config.secret.as_deref(), &config.name),
            instance: fastrand::u64(..),
            addr,
            shards: shards as u16,
            routes: config.routes.clone(),
            peers: RefCell::default(),
            route_states: RefCell::new(vec![
                RouteState::Dialing {
                    failures: 0,
                    last_error: None
                };
                config.routes.len()
            ]),
            route_names: RefCell::new(vec![None; config.routes.len()]),
            outbox_filled: Event::default(),
            meta_inbox: RefCell::default(),
            meta_wake: Notify::default(),
            meta_status: RefCell::default(),
            proposals: RefCell::default(),
            next_proposal: Cell::new(1),
            waiters: RefCell::default(),
            decided: RefCell::default(),
            decided_ready: Notify::default(),
            applied: Cell::new(0),
            applied_durable: Cell::new(0),
            applied_written: Event::default(),
            group_inbox: RefCell::default(),
            group_ready: Notify::default(),
            group_taken: Event::default(),
            clients,
            clients_changed: Notify::default(),
        }
    }

    fn hello(&self) -> Hello<'_> {
        Hello {
            version: CLUSTER_PROTOCOL_VERSION,
            node: &self.name,
            cluster_addr: &self.addr,
            shards: self.shards,
            proof: &self.proof,
            instance: self.instance,
        }
    }

    /// Whether `peer` proved it knows the cluster's secret (always, without one).
    fn knows_secret(&self, peer: &Introduction) -> bool {
        match &self.secret {
            None => true,
            Some(secret) => {
                crate::server::auth::same_secret(&peer.proof, &proof(Some(secret), &peer.node))
            }
        }
    }

    /// Why this node will not link with `peer`, if it will not.
    fn refusal(&self, peer: &Introduction) -> Option<Refusal<'static>> {
        if !sluice_protocol::cluster::valid_node_name(&peer.node) {
            return Some(Refusal::Other("not a valid node name"));
        }
        if peer.instance == self.instance {
            return Some(Refusal::Itself);
        }
        if peer.node == self.name {
            return Some(Refusal::Other(
                "another node has this node's name: every node needs its own",
            ));
        }
        if !self.knows_secret(peer) {
            return Some(Refusal::Other(
                "the hello does not prove the cluster secret",
            ));
        }
        if peer.version != CLUSTER_PROTOCOL_VERSION {
            return Some(Refusal::Other("another cluster protocol version"));
        }
        if peer.shards != self.shards {
            return Some(Refusal::Other(
                "another shard count: every node of a cluster runs as many shards",
            ));
        }
        let peers = self.peers.borrow();
        match peers.get(&peer.node) {
            Some(known) if known.links > 0 && known.addr != peer.cluster_addr => Some(
                Refusal::Other("a node of that name is linked from another address"),
            ),
            _ => None,
        }
    }

    fn link_up(&self, peer: &Introduction) {
        let mut peers = self.peers.borrow_mut();
        let entry = peers.entry(peer.node.clone()).or_insert_with(|| Peer {
            outbox: VecDeque::new(),
            outbox_bytes: 0,
            nats: String::new(),
            kafka: String::new(),
            addr: peer.cluster_addr.clone(),
            links: 0,
            since: Instant::now(),
        });
        if entry.links == 0 {
            entry.since = Instant::now();
            entry.addr = peer.cluster_addr.clone();
            tracing::info!(node = %self.name, peer = %peer.node, addr = %peer.cluster_addr,
                "cluster peer up");
            self.clients_changed.notify();
        }
        entry.links += 1;
    }

    fn link_down(&self, peer: &str, why: &LinkError) {
        let mut peers = self.peers.borrow_mut();
        if let Some(entry) = peers.get_mut(peer) {
            entry.links = entry.links.saturating_sub(1);
            if entry.links == 0 {
                entry.since = Instant::now();
                tracing::warn!(node = %self.name, %peer, reason = %why, "cluster peer down");
                self.clients_changed.notify();
            }
        }
    }

    fn set_route(&self, route: usize, state: RouteState) {
        let name = match &state {
            RouteState::Linked(name) => Some(name.clone()),
            RouteState::Itself => Some(self.name.clone()),
            RouteState::Dialing { .. } => None,
        };
        if let (Some(name), Some(slot)) = (name, self.route_names.borrow_mut().get_mut(route)) {
            *slot = Some(name);
        }
        if let Some(slot) = self.route_states.borrow_mut().get_mut(route) {
            *slot = state;
        }
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The nodes a new cluster starts with: this one and every route's, once each route has
    /// been linked (or found to be this node) at least once.
    fn initial_members(&self) -> Option<Vec<String>> {
        let names = self.route_names.borrow();
        let mut members: Vec<String> = names.iter().cloned().collect::<Option<_>>()?;
        members.push(self.name.clone());
        members.sort();
        members.dedup();
        Some(members)
    }

    /// Queues a meta group's consensus message for the peer of that name; false if no such peer
    /// is known.
    fn send_raft(&self, to: &str, message: &Message) -> bool {
        let Ok(bytes) = message.write_to_bytes() else {
            return false;
        };
        self.send_frame(to, &ClusterFrame::Raft(&bytes))
    }

    /// Queues a frame for the peer of that name; false if no such peer is known.
    pub fn send_frame(&self, to: &str, frame: &ClusterFrame<'_>) -> bool {
        let mut out = BytesMut::new();
        frame.encode(&mut out);
        self.send_encoded(to, out.freeze())
    }

    /// Queues an encoded frame for the peer of that name; false if no such peer is known. Past
    /// the outbox's bounds the oldest frames go.
    pub fn send_encoded(&self, to: &str, frame: Bytes) -> bool {
        let mut peers = self.peers.borrow_mut();
        let Some(peer) = peers.get_mut(to) else {
            return false;
        };
        while peer.outbox.len() >= RAFT_QUEUE_MAX
            || (peer.outbox_bytes + frame.len() > OUTBOX_BYTES_MAX && !peer.outbox.is_empty())
        {
            let dropped = peer.outbox.pop_front().map_or(0, |f| f.len());
            peer.outbox_bytes -= dropped;
        }
        peer.outbox_bytes += frame.len();
        peer.outbox.push_back(frame);
        drop(peers);
        self.outbox_filled.notify_all();
        true
    }

    /// Takes what waits for the peer of that name, up to about `bytes_max` (at least one frame).
    fn take_outbox(&self, peer: &str, bytes_max: usize) -> Vec<Bytes> {
        let mut peers = self.peers.borrow_mut();
        let Some(peer) = peers.get_mut(peer) else {
            return Vec::new();
        };
        let mut taken = Vec::new();
        let mut bytes = 0;
        while let Some(frame) = peer.outbox.front() {
            if !taken.is_empty() && bytes + frame.len() > bytes_max {
                break;
            }
            bytes += frame.len();
            taken.extend(peer.outbox.pop_front());
        }
        peer.outbox_bytes -= bytes;
        taken
    }

    /// Whether a peer of that name is linked now.
    pub fn is_up(&self, peer: &str) -> bool {
        self.peers.borrow().get(peer).is_some_and(|p| p.links > 0)
    }

    /// The next frame the links brought for the partitions' groups.
    pub async fn next_group_item(&self) -> GroupIn {
        loop {
            let item = self.group_inbox.borrow_mut().pop_front();
            if let Some(item) = item {
                self.group_taken.notify_all();
                return item;
            }
            self.group_ready.wait().await;
        }
    }

    /// Hands a partition group's frame to the streams, once there is room.
    async fn received_group(&self, item: GroupIn) {
        self.group_taken
            .wait_until(|| self.group_inbox.borrow().len() < GROUP_INBOX_MAX)
            .await;
        self.group_inbox.borrow_mut().push_back(item);
        self.group_ready.notify();
    }

    /// A peer said where its NATS and Kafka clients connect.
    fn peer_clients(&self, peer: &str, nats: &str, kafka: &str) {
        if let Some(p) = self.peers.borrow_mut().get_mut(peer) {
            p.nats = nats.to_string();
            p.kafka = kafka.to_string();
        }
        self.clients_changed.notify();
    }

    /// Where Kafka clients reach the nodes of the cluster that are up now, by node name: this
    /// node, then every peer linked now that said.
    pub fn kafka_addrs(&self) -> Vec<(String, String)> {
        let own = (self.name.clone(), self.clients.kafka.clone());
        let peers = self.peers.borrow();
        let peers = peers
            .iter()
            .filter(|(_, p)| p.links > 0)
            .map(|(name, p)| (name.clone(), p.kafka.clone()));
        std::iter::once(own)
            .chain(peers)
            .filter(|(_, addr)| !addr.is_empty())
            .collect()
    }

    /// Where NATS clients reach the nodes of the cluster: this node, then every peer that said.
    pub fn nats_urls(&self) -> Vec<String> {
        let own = Some(self.clients.nats.clone());
        let peers = self.peers.borrow();
        let peers = peers.values().map(|p| p.nats.clone());
        own.into_iter()
            .chain(peers)
            .filter(|url| !url.is_empty())
            .collect()
    }

    /// Waits until a peer says where its clients connect, or comes up or goes down.
    pub async fn clients_changed(&self) {
        self.clients_changed.wait().await;
    }

    /// The voting members of the meta group, once it has started: the nodes of the cluster.
    pub fn members(&self) -> Option<Vec<String>> {
        Some(self.meta_status.borrow().as_ref()?.voters.clone())
    }

    fn outbox_empty(&self, peer: &str) -> bool {
        self.peers
            .borrow()
            .get(peer)
            .is_none_or(|p| p.outbox.is_empty())
    }

    /// A consensus message from a peer, for the meta group.
    fn received_raft(&self, from: &str, bytes: &[u8]) {
        match Message::parse_from_bytes(bytes) {
            Ok(message) => {
                let mut inbox = self.meta_inbox.borrow_mut();
                if inbox.len() >= RAFT_QUEUE_MAX {
                    inbox.pop_front();
                }
                inbox.push_back(message);
                drop(inbox);
                self.meta_wake.notify();
            }
            Err(e) => tracing::warn!(peer = %from, error = %e, "unreadable consensus message"),
        }
    }

    /// The meta group's leader, if this node knows of one.
    pub fn meta_leader(&self) -> Option<String> {
        self.meta_status.borrow().as_ref()?.leader.clone()
    }

    /// The cluster's figures for `/metrics`: peers known and up, each peer's state, and the meta
    /// group's term and whether this node leads it.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        if let Some(meta) = self.meta_status.borrow().as_ref() {
            let leads = meta.leader.as_deref() == Some(self.name.as_str());
            let _ = writeln!(out, "# TYPE sluice_cluster_meta_term gauge");
            let _ = writeln!(out, "sluice_cluster_meta_term {}", meta.term);
            let _ = writeln!(out, "# TYPE sluice_cluster_meta_leader gauge");
            let _ = writeln!(out, "sluice_cluster_meta_leader {}", u8::from(leads));
        }
        let peers = self.peers.borrow();
        let up = peers.values().filter(|p| p.links > 0).count();
        let _ = writeln!(out, "# TYPE sluice_cluster_peers gauge");
        let _ = writeln!(out, "sluice_cluster_peers {}", peers.len());
        let _ = writeln!(out, "# TYPE sluice_cluster_peers_up gauge");
        let _ = writeln!(out, "sluice_cluster_peers_up {up}");
        let _ = writeln!(out, "# TYPE sluice_cluster_peer_up gauge");
        for (name, peer) in peers.iter() {
            let _ = writeln!(
                out,
                "sluice_cluster_peer_up{{peer=\"{name}\"}} {}",
                u8::from(peer.links > 0)
            );
        }
    }

    /// What `sluice cluster info` shows.
    pub fn info(&self) -> ClusterInfo {
        let now = Instant::now();
        let peers = self
            .peers
            .borrow()
            .iter()
            .map(|(name, peer)| PeerInfo {
                name: name.clone(),
                addr: peer.addr.clone(),
                up: peer.links > 0,
                links: peer.links,
                since_ms: now.duration_since(peer.since).as_millis() as u64,
            })
            .collect();
        let routes = self
            .routes
            .iter()
            .zip(self.route_states.borrow().iter())
            .map(|(route, state)| {
                let (state, error) = match state {
                    RouteState::Dialing {
                        failures,
                        last_error,
                    } => (format!("dialing ({failures} failed)"), last_error.clone()),
                    RouteState::Linked(node) => (format!("linked to {node}"), None),
                    RouteState::Itself => ("this node".to_string(), None),
                };
                RouteInfo {
                    route: route.clone(),
                    state,
                    error,
                }
            })
            .collect();
        ClusterInfo {
            clustered: true,
            name: self.name.clone(),
            cluster_addr: self.addr.clone(),
            peers,
            routes,
            meta: self.meta_status.borrow().clone(),
            groups: Vec::new(),
        }
    }
}

/// A node's proof of the cluster secret: a hash of the secret and its name, so that the secret
/// itself never crosses the network. Empty without a secret.
fn proof(secret: Option<&str>, node: &str) -> Vec<u8> {
    use blake2::Digest;
    let Some(secret) = secret else {
        return Vec::new();
    };
    let mut hash = blake2::Blake2b512::new();
    hash.update(b"sluice cluster hello\0");
    hash.update(secret.as_bytes());
    hash.update(b"\0");
    hash.update(node.as_bytes());
    hash.finalize()[..32].to_vec()
}
