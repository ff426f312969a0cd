//! Three nodes on loopback with replicated streams, for the replication tests.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::cluster::{info, node, node_dialing, payloads, wait_for_one_leader};
use super::proxy::Links;
use super::{Broker, DataDir, Ports, ReferenceNats};
use sluice::api::{shard_for, GroupInfo, StreamConfig};

pub const NAMES: [&str; 3] = ["n1", "n2", "n3"];

/// Three nodes listing each other, with an agreed meta leader.
pub struct Cluster {
    pub dirs: [DataDir; 3],
    pub ports: [Ports; 3],
    pub nodes: Vec<Option<Broker>>,
    /// With `proxied`: the proxies every link goes through.
    links: Option<Links>,
}

impl Cluster {
    pub fn start() -> Cluster {
        Cluster::start_with(false)
    }

    /// Three nodes; with `proxied`, every link between two goes through a proxy that can cut it.
    pub fn start_with(proxied: bool) -> Cluster {
        let dirs = [DataDir::new(), DataDir::new(), DataDir::new()];
        let ports = [Ports::fixed(), Ports::fixed(), Ports::fixed()];
        let links = proxied.then(|| Links::new(&ports.each_ref().map(|p| p.cluster.as_str())));
        let mut cluster = Cluster {
            dirs,
            ports,
            nodes: Vec::new(),
            links,
        };
        cluster.nodes = (0..3).map(|i| Some(cluster.start_node(i))).collect();
        wait_for_one_leader(&cluster.live());
        cluster
    }

    /// Three nodes with a replicated stream (its partition on `shard`), added through node 0;
    /// the stream's name and the node leading its group.
    pub fn with_stream(prefix: &str, shard: u32, proxied: bool) -> (Cluster, String, usize) {
        let cluster = Cluster::start_with(proxied);
        let stream = stream_on_shard(prefix, shard);
        cluster
            .node(0)
            .client()
            .stream_add(&replicated(&stream))
            .expect("a replicated stream");
        let leader = wait_for_group_leader(&cluster, &stream);
        let leader_at = cluster.at(&leader);
        (cluster, stream, leader_at)
    }

    pub fn start_node(&self, i: usize) -> Broker {
        if let Some(links) = &self.links {
            return node_dialing(&self.dirs[i], &self.ports[i], NAMES[i], &links.routes_of(i));
        }
        let all = [&self.ports[0], &self.ports[1], &self.ports[2]];
        node(&self.dirs[i], &self.ports[i], NAMES[i], &all)
    }

    /// Cuts (or heals) the links between nodes `i` and `j`.
    pub fn cut_between(&self, i: usize, j: usize, cut: bool) {
        self.links
            .as_ref()
            .expect("links through proxies")
            .cut_between(i, j, cut);
    }

    /// Cuts (or heals) every link between node `i` and the others.
    pub fn isolate(&self, i: usize, cut: bool) {
        self.links
            .as_ref()
            .expect("links through proxies")
            .isolate(i, cut);
    }

    pub fn live(&self) -> Vec<&Broker> {
        self.nodes.iter().flatten().collect()
    }

    pub fn at(&self, name: &str) -> usize {
        NAMES
            .iter()
            .position(|n| *n == name)
            .expect("a node's name")
    }

    /// Every node's messages of the stream, once each holds at least `want`.
    pub fn logs(&self, stream: &str, want: u64) -> Vec<Vec<String>> {
        (0..3)
            .map(|i| read_all(self.node(i), stream, want))
            .collect()
    }

    pub fn node(&self, i: usize) -> &Broker {
        self.nodes[i].as_ref().expect("a live node")
    }
}

/// Waits until node `i` and every other live node see each other up.
pub fn wait_for_peers_of(cluster: &Cluster, i: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let sees = |from: usize, name: &str| {
        info(cluster.node(from))
            .peers
            .iter()
            .any(|p| p.name == name && p.up)
    };
    let others: Vec<usize> = (0..3)
        .filter(|&j| j != i && cluster.nodes[j].is_some())
        .collect();
    while !others
        .iter()
        .all(|&j| sees(i, NAMES[j]) && sees(j, NAMES[i]))
    {
        assert!(
            Instant::now() < deadline,
            "{} and the others never saw each other up",
            NAMES[i]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A stream name whose only partition is owned by `shard` on a node of two shards: shard 1 has
/// its group's messages pass between shard 0 (which keeps the links) and itself.
pub fn stream_on_shard(prefix: &str, shard: u32) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|name| shard_for(name, 0, 2) == shard)
        .expect("some name")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

pub fn replicated(name: &str) -> StreamConfig {
    StreamConfig {
        replicas: 3,
        ..StreamConfig::new(name, vec![format!("{name}.>")])
    }
}

/// The group of the stream's partition 0 as `broker` sees it.
pub fn group(broker: &Broker, stream: &str) -> Option<GroupInfo> {
    info(broker)
        .groups
        .into_iter()
        .find(|g| g.stream == stream && g.partition == 0)
}

/// Waits until every live node names the same leader of the stream's group, which sees itself
/// leading; returns the leader's name.
pub fn wait_for_group_leader(cluster: &Cluster, stream: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let groups: Vec<Option<GroupInfo>> =
            cluster.live().iter().map(|n| group(n, stream)).collect();
        let leaders: HashSet<Option<String>> = groups
            .iter()
            .map(|g| g.as_ref().and_then(|g| g.leader.clone()))
            .collect();
        if let [Some(leader)] = &leaders.into_iter().collect::<Vec<_>>()[..] {
            let leading = groups
                .iter()
                .flatten()
                .any(|g| g.role == "leader" && g.leader.as_deref() == Some(leader.as_str()));
            if leading {
                return leader.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no agreed group leader: {groups:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every payload of the stream's partition 0 on `broker`, in offset order, once it holds at
/// least `want` messages.
pub fn read_all(broker: &Broker, stream: &str, want: u64) -> Vec<String> {
    let client = broker.client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = client.stream_info(stream).expect("stream info");
        let messages = info.partitions[0].messages;
        if messages >= want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{stream} holds {messages} messages, {want} wanted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    payloads(broker, stream)
}

/// Three nats-server processes on loopback routed to each other, started one at a time.
pub struct ReferenceCluster {
    ports: Vec<u16>,
    routes: String,
}

impl ReferenceCluster {
    pub fn new() -> ReferenceCluster {
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        ReferenceCluster {
            ports,
            routes: routes.join(","),
        }
    }

    /// Starts all three nodes with JetStream; `None` where nats-server is not installed.
    pub fn start_all(&self) -> Option<Vec<ReferenceNats>> {
        (0..3).map(|i| self.start(i, true)).collect()
    }

    /// Starts node `i`, with JetStream if asked; `None` where nats-server is not installed.
    pub fn start(&self, i: usize, jetstream: bool) -> Option<ReferenceNats> {
        let cluster = format!("nats://127.0.0.1:{}", self.ports[i]);
        let args = [
            "--cluster_name",
            "reference",
            "--server_name",
            NAMES[i],
            "--cluster",
            cluster.as_str(),
            "--routes",
            self.routes.as_str(),
        ];
        if jetstream {
            ReferenceNats::start_jetstream_with(&args)
        } else {
            ReferenceNats::start_with(&args)
        }
    }
}
