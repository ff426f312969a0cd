//! A history checker for replicated streams: publishers write numbered messages through every
//! node while nodes are killed and restarted, paused and resumed, or cut off from the others by
//! the proxies their links go through and joined again, at random. Afterwards every node's log must hold every acknowledged message, in publish order
//! per subject, and the three logs must agree. The seed is printed; `SLUICE_SEED` replays one,
//! `SLUICE_HISTORY_ROUNDS` runs longer (4 rounds by default).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{info, node_dialing, payloads, signal, wait_for_one_leader};
use common::proxy::Links;
use common::{Broker, DataDir, Ports};
use sluice::api::{shard_for, StreamConfig};
use sluice::client::{Client, ClientError, ClientOptions};

const NAMES: [&str; 3] = ["n1", "n2", "n3"];
const PUBLISHERS: usize = 2;

struct Nodes {
    dirs: [DataDir; 3],
    ports: [Ports; 3],
    live: Vec<Option<Broker>>,
    /// The proxies every link between two nodes goes through.
    links: Links,
}

impl Nodes {
    fn start(&self, i: usize) -> Broker {
        node_dialing(
            &self.dirs[i],
            &self.ports[i],
            NAMES[i],
            &self.links.routes_of(i),
        )
    }

    fn live(&self) -> Vec<&Broker> {
        self.live.iter().flatten().collect()
    }
}

/// What one publisher saw: the payloads acknowledged, in order, and the publishes refused or
/// unanswered (their outcome unknown).
#[derive(Default)]
struct Outcome {
    acked: Vec<String>,
    unknown: u64,
}

/// Publishes `p{id}-N` for N = 0, 1, ... on its own subject, one at a time with acks, through
/// the nodes in turn: a publish that fails moves it to the next node.
fn publisher(id: usize, addrs: Vec<String>, subject: String, stop: Arc<AtomicBool>) -> Outcome {
    let options = || ClientOptions {
        timeout: Duration::from_secs(6),
        ..ClientOptions::default()
    };
    let mut outcome = Outcome::default();
    let mut at = id;
    let mut client: Option<Client> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(conn) = client.as_ref() else {
            at = (at + 1) % addrs.len();
            client = Client::connect_with(addrs[at].as_str(), options()).ok();
            if client.is_none() {
                std::thread::sleep(Duration::from_millis(100));
            }
            continue;
        };
        let payload = format!("p{id}-{n:06}");
        n += 1;
        match conn.publish_durable(&subject, &payload) {
            Ok(_) => outcome.acked.push(payload),
            Err(ClientError::Api { .. }) => outcome.unknown += 1,
            Err(_) => {
                outcome.unknown += 1;
                client = None;
            }
        }
    }
    outcome
}

/// Waits until every node's group commit reaches the same entry as its leader's, with a leader
/// agreed by all.
fn wait_for_agreement(nodes: &Nodes, stream: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let groups: Vec<_> = nodes
            .live()
            .iter()
            .map(|n| info(n).groups.into_iter().find(|g| g.stream == stream))
            .collect();
        let agreed = groups.iter().all(|g| {
            g.as_ref().is_some_and(|g| {
                g.leader.is_some()
                    && g.leader == groups[0].as_ref().and_then(|f| f.leader.clone())
                    && g.commit == groups[0].as_ref().map_or(0, |f| f.commit)
                    && g.last_index == g.commit
            })
        });
        if agreed {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the nodes never agree: {groups:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn kills_restarts_and_pauses_at_random_lose_no_acknowledged_message() {
    let seed: u64 = std::env::var("SLUICE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let rounds: u32 = std::env::var("SLUICE_HISTORY_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    eprintln!("history checker: seed {seed} (SLUICE_SEED={seed} replays it), {rounds} rounds");
    let mut rng = fastrand::Rng::with_seed(seed);

    let ports = [Ports::fixed(), Ports::fixed(), Ports::fixed()];
    let links = Links::new(&ports.each_ref().map(|p| p.cluster.as_str()));
    let mut nodes = Nodes {
        dirs: [DataDir::new(), DataDir::new(), DataDir::new()],
        ports,
        live: Vec::new(),
        links,
    };
    nodes.live = (0..3).map(|i| Some(nodes.start(i))).collect();
    wait_for_one_leader(&nodes.live());
    let stream = (0..)
        .map(|i| format!("history{i}"))
        .find(|name| shard_for(name, 0, 2) == 1)
        .expect("a name");
    nodes.live()[0]
        .client()
        .stream_add(&StreamConfig {
            replicas: 3,
            ..StreamConfig::new(stream.as_str(), vec![format!("{stream}.>")])
        })
        .expect("a replicated stream");
    wait_for_agreement(&nodes, &stream);

    let addrs: Vec<String> = nodes.ports.iter().map(|p| p.native.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|id| {
            let (addrs, stop) = (addrs.clone(), stop.clone());
            let subject = format!("{stream}.p{id}");
            std::thread::spawn(move || publisher(id, addrs, subject, stop))
        })
        .collect();

    for round in 0..rounds {
        std::thread::sleep(Duration::from_millis(rng.u64(500..1500)));
        let victim = rng.usize(0..3);
        let hold = Duration::from_millis(rng.u64(500..3000));
        let fault = match rng.u8(0..4) {
            0 => {
                let mut dead = nodes.live[victim].take().expect("a live node");
                dead.kill();
                std::thread::sleep(hold);
                nodes.live[victim] = Some(nodes.start(victim));
                format!("kill {} for {hold:?}", NAMES[victim])
            }
            1 => {
                nodes.links.isolate(victim, true);
                std::thread::sleep(hold);
                nodes.links.isolate(victim, false);
                format!("cut {} off for {hold:?}", NAMES[victim])
            }
            2 => {
                let paused = nodes.live[victim].as_ref().expect("a live node");
                signal(paused, libc::SIGSTOP);
                std::thread::sleep(hold);
                signal(paused, libc::SIGCONT);
                format!("pause {} for {hold:?}", NAMES[victim])
            }
            _ => {
                // Two nodes paused: the third alone is a minority.
                let other = (victim + 1 + rng.usize(0..2)) % 3;
                for i in [victim, other] {
                    signal(nodes.live[i].as_ref().expect("a live node"), libc::SIGSTOP);
                }
                std::thread::sleep(hold);
                for i in [victim, other] {
                    signal(nodes.live[i].as_ref().expect("a live node"), libc::SIGCONT);
                }
                format!("pause {} and {} for {hold:?}", NAMES[victim], NAMES[other])
            }
        };
        eprintln!("round {round}: {fault}");
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let outcomes: Vec<Outcome> = publishers
        .into_iter()
        .map(|p| p.join().expect("publisher"))
        .collect();
    wait_for_agreement(&nodes, &stream);

    let acked: usize = outcomes.iter().map(|o| o.acked.len()).sum();
    let unknown: u64 = outcomes.iter().map(|o| o.unknown).sum();
    eprintln!("history checker: seed {seed}, {rounds} rounds, {acked} acked, {unknown} unknown");
    let logs: Vec<Vec<String>> = nodes.live().iter().map(|n| payloads(n, &stream)).collect();
    for (i, log) in logs.iter().enumerate() {
        check(NAMES[i], log, &outcomes, seed);
    }
    assert!(
        logs.windows(2).all(|w| w[0] == w[1]),
        "seed {seed}: the nodes' logs differ"
    );
    assert!(acked > 0, "seed {seed}: nothing was acknowledged");
}

/// Fails (naming the seed) if the log misses an acknowledged message or holds one publisher's
/// messages out of order or twice.
fn check(node: &str, log: &[String], outcomes: &[Outcome], seed: u64) {
    let mut last: HashMap<&str, &str> = HashMap::new();
    for payload in log {
        let (publisher, _) = payload.split_once('-').expect("p<id>-<n>");
        if let Some(before) = last.insert(publisher, payload) {
            assert!(
                before < payload.as_str(),
                "seed {seed}: {node} holds {payload} after {before}"
            );
        }
    }
    let held: HashSet<&String> = log.iter().collect();
    for outcome in outcomes {
        let missing: Vec<&String> = outcome.acked.iter().filter(|p| !held.contains(p)).collect();
        assert!(
            missing.is_empty(),
            "seed {seed}: {node} misses acknowledged {missing:?}"
        );
    }
}
