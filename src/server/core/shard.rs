//! One shard: the state one executor owns, and every change to it.
//!
//! Connections, the mesh receivers and timers all change shard state through the methods here, so the
//! rules (who is told about interest, how a queue member is chosen, what a slow consumer costs) live
//! in one place. Nothing here is shared with another thread.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use sluice_protocol::op::{ErrorFrame, Op};
use sluice_protocol::{ArchivedOp, ErrorCode, Frame, FrameEncoder};

use super::backlog::Backlog;
use super::client::Client;
use super::interest::{Entry, Interest, LocalSub, Route};
use super::mesh::{CoreItem, Peer};
use super::outbound::Push;
use super::stats::{add, Stats};
use crate::server::{ServerConfig, ShardId};
use sluice_storage::wake::{Event, Latch};

/// The state of one shard.
pub struct Shard {
    pub id: ShardId,
    pub shards: usize,
    pub config: Arc<ServerConfig>,
    pub stats: Stats,
    pub stopping: Latch,
    interest: RefCell<Interest>,
    peers: Vec<Rc<dyn Peer>>,
    /// Woken whenever a peer queue drains, for connections waiting for room.
    room: Event,
    conns: RefCell<HashMap<u64, Rc<Client>>>,
    /// Admitted connections still in their TLS handshake.
    pub handshakes: Cell<usize>,
    /// Where NATS clients reach the nodes of this node's cluster (empty for a single node): told
    /// to NATS clients as `connect_urls`, so that they reconnect to another node.
    connect_urls: RefCell<Vec<String>>,
    /// Bumped, and `connect_urls_changed` notified, each time they change.
    connect_urls_version: Cell<u64>,
    pub connect_urls_changed: Event,
    /// Open connections of ports that keep no `Client` here (the Kafka port).
    unregistered: Cell<usize>,
    next_conn_id: Cell<u64>,
    barriers: RefCell<HashMap<u64, usize>>,
    barrier_done: Event,
    next_barrier_id: Cell<u64>,
    encoder: RefCell<FrameEncoder>,
    /// Where frames the shard encodes itself are cut from, a 64 KiB buffer at a time.
    frame_pool: RefCell<BytesMut>,
    /// Subscriptions that reached their message limit, to be removed after the current delivery.
    expired: RefCell<Vec<Rc<LocalSub>>>,
    /// Connections whose output passed its high-water mark during the current delivery. Whoever fed
    /// them (a publishing connection, a mesh receiver) takes the list right after routing and waits
    /// for them before reading more.
    congested: RefCell<Vec<Backlog>>,
}

impl Shard {
    /// Where NATS clients reach the nodes of this node's cluster.
    pub fn connect_urls(&self) -> std::cell::Ref<'_, Vec<String>> {
        self.connect_urls.borrow()
    }

    /// Which change of `connect_urls` this is (0: none yet).
    pub fn connect_urls_version(&self) -> u64 {
        self.connect_urls_version.get()
    }

    /// Sets where NATS clients reach the cluster's nodes, and tells those waiting if it changed.
    pub fn set_connect_urls(&self, urls: Vec<String>) {
        if *self.connect_urls.borrow() == urls {
            return;
        }
        *self.connect_urls.borrow_mut() = urls;
        self.connect_urls_version
            .set(self.connect_urls_version.get() + 1);
        self.connect_urls_changed.notify_all();
    }

    /// A shard with no connections; `peers` has one queue per shard (its own slot unused).
    pub fn new(id: ShardId, config: Arc<ServerConfig>, peers: Vec<Rc<dyn Peer>>) -> Shard {
        Shard {
            id,
            shards: peers.len(),
            config,
            stats: Stats::default(),
            stopping: Latch::default(),
            interest: RefCell::new(Interest::default()),
            peers,
            room: Event::default(),
            conns: RefCell::new(HashMap::new()),
            handshakes: Cell::new(0),
            connect_urls: RefCell::new(Vec::new()),
            connect_urls_version: Cell::new(0),
            connect_urls_changed: Event::default(),
            unregistered: Cell::new(0),
            next_conn_id: Cell::new(1),
            barriers: RefCell::new(HashMap::new()),
            barrier_done: Event::default(),
            next_barrier_id: Cell::new(1),
            encoder: RefCell::new(FrameEncoder::new()),
            frame_pool: RefCell::new(BytesMut::new()),
            expired: RefCell::new(Vec::new()),
            congested: RefCell::new(Vec::new()),
        }
    }

    /// Queues an item for another shard.
    pub fn push_to(&self, to: ShardId, item: CoreItem) {
        debug_assert_ne!(to, self.id, "a shard does not send to itself");
        self.peers[to.0 as usize].push_core(item);
    }

    /// A connection of this shard by id.
    pub fn client(&self, id: u64) -> Option<Rc<Client>> {
        self.conns.borrow().get(&id).cloned()
    }

    fn other_peers(&self) -> impl Iterator<Item = (usize, &Rc<dyn Peer>)> {
        let own = self.id.0 as usize;
        self.peers
            .iter()
            .enumerate()
            .filter(move |(i, _)| *i != own)
    }

    /// Wakes connections waiting for room in the peer queues.
    pub fn on_peer_sent(&self) {
        self.room.notify_all();
    }

    /// Waits until every peer queue has room: the backpressure a publishing connection feels.
    pub async fn wait_for_room(&self) {
        self.room
            .wait_until(|| self.peers.iter().all(|p| p.has_room()))
            .await
    }

    /// Encodes one frame into fresh bytes (rare frames: info, errors, message headers).
    pub fn encode(&self, op: &Op<'_>) -> Bytes {
        self.encoder.borrow_mut().encode_to_bytes(op)
    }

    /// Encodes a frame the broker makes itself (a NATS publish, an ack, an advisory), ready to route.
    pub fn encode_frame(&self, op: &Op<'_>) -> Frame {
        self.encoder
            .borrow_mut()
            .encode_frame_pooled(op, &mut self.frame_pool.borrow_mut())
    }

    /// An error frame.
    pub fn error_frame(&self, code: ErrorCode, message: &str) -> Bytes {
        self.encode(&Op::Err(ErrorFrame {
            code: code.as_u16(),
            message,
        }))
    }

    // ---- connections ----

    /// Registers a new connection, or `None` if this shard is at its connection limit.
    /// A connection still in its TLS handshake counts against the limit too (`handshakes`).
    pub fn admit(&self) -> Option<u64> {
        let limit = self.config.connections_max.div_ceil(self.shards);
        let open = self.conns.borrow().len() + self.unregistered.get();
        if open + self.handshakes.get() >= limit {
            add(&self.stats.connections_refused, 1);
            return None;
        }
        let id = self.next_conn_id.get();
        self.next_conn_id.set(id + 1);
        add(&self.stats.connections_accepted, 1);
        Some(id)
    }

    /// An id for a connection the broker holds itself (no socket, not counted against the limit).
    pub fn internal_id(&self) -> u64 {
        let id = self.next_conn_id.get();
        self.next_conn_id.set(id + 1);
        id
    }

    pub fn register(&self, conn: Rc<Client>) {
        self.conns.borrow_mut().insert(conn.id, conn);
        self.count_open();
    }

    fn count_open(&self) {
        let open = self.conns.borrow().len() + self.unregistered.get();
        self.stats.connections_open.set(open as u64);
    }

    /// Counts an open connection a port holds without a `Client` (against the limit, and in the
    /// open connections' figure) until the returned guard drops.
    pub fn hold_unregistered(self: &Rc<Self>) -> Unregistered {
        self.unregistered.set(self.unregistered.get() + 1);
        self.count_open();
        Unregistered(self.clone())
    }

    /// Forgets a connection and every subscription it held.
    pub fn unregister(&self, conn: &Client) {
        self.remove_subs_of(conn);
        self.conns.borrow_mut().remove(&conn.id);
        self.count_open();
    }

    /// Removes every subscription of a connection (it closed, or was cut off as a slow consumer),
    /// so that no queue group picks it again.
    pub fn remove_subs_of(&self, conn: &Client) {
        let subs: Vec<Rc<LocalSub>> = conn.subs.borrow_mut().drain().map(|(_, s)| s).collect();
        for sub in subs {
            self.remove_sub(&sub);
        }
    }

    /// Connections still open.
    pub fn open_connections(&self) -> Vec<Rc<Client>> {
        self.conns.borrow().values().cloned().collect()
    }

    // ---- interest ----

    /// Adds a subscription here and tells every other shard.
    pub fn add_sub(&self, sub: Rc<LocalSub>) {
        for (_, peer) in self.other_peers() {
            peer.push_core(CoreItem::InterestAdd {
                pattern: sub.pattern.clone(),
                queue: sub.queue.clone(),
            });
        }
        let pattern = sub.pattern.clone();
        self.interest
            .borrow_mut()
            .insert(&pattern, Entry::Local(sub));
        add(&self.stats.subscriptions, 1);
    }

    /// Removes a subscription here and tells every other shard. Idempotent.
    pub fn remove_sub(&self, sub: &Rc<LocalSub>) {
        sub.closed.set(true);
        let removed = self
            .interest
            .borrow_mut()
            .remove(&sub.pattern, &Entry::Local(sub.clone()));
        if !removed {
            return;
        }
        let subs = &self.stats.subscriptions;
        subs.set(subs.get().saturating_sub(1));
        for (_, peer) in self.other_peers() {
            peer.push_core(CoreItem::InterestRemove {
                pattern: sub.pattern.clone(),
                queue: sub.queue.clone(),
            });
        }
    }

    /// Waits until every shard has applied everything this shard sent it so far, so that interest
    /// added before is in force everywhere.
    pub async fn barrier(&self) {
        if self.shards == 1 {
            return;
        }
        let id = self.next_barrier_id.get();
        self.next_barrier_id.set(id + 1);
        self.barriers.borrow_mut().insert(id, self.shards - 1);
        for (_, peer) in self.other_peers() {
            peer.push_core(CoreItem::Barrier { id });
        }
        self.barrier_done
            .wait_until(|| !self.barriers.borrow().contains_key(&id) || self.stopping.is_set())
            .await;
        self.barriers.borrow_mut().remove(&id);
    }

    // ---- routing ----

    /// Makes a message (an answer on a reply subject, an advisory, a status) and routes it.
    /// When only NATS subscriptions of this shard want it (a publish ack on its publisher's reply
    /// inbox), it goes out from its parts with no frame made.
    pub fn route_made(&self, subject: &str, headers: &[u8], payload: &[u8]) {
        let route = self.route_of(subject);
        if route.is_nats_only() {
            let parts = Parts {
                subject,
                reply: None,
                headers,
                payload,
            };
            self.route_parts(&route, &parts, None);
            self.congested.borrow_mut().clear();
            return;
        }
        let frame = self.encode_frame(&Op::Pub(sluice_protocol::op::Publish {
            subject,
            reply: None,
            headers,
            payload,
            ack: false,
        }));
        self.route_along(&frame, &route, subject, None);
        self.congested.borrow_mut().clear();
    }

    /// Routes a publish that arrived on this shard: local subscribers, one member of each queue
    /// group wherever it is, and every peer shard with plain interest, skipping the local
    /// subscriptions of connection `no_echo` (a NATS client that connected with `echo: false`).
    /// Returns whether anyone was interested. The publisher then takes `take_congested`.
    pub fn route_from(&self, frame: &Frame, subject: &str, no_echo: Option<u64>) -> bool {
        let route = self.route_of(subject);
        self.route_by(frame, &route, subject, no_echo, None)
    }

    /// As `route_from`, along a route already looked up with [`Shard::route_of`].
    pub fn route_along(
        &self,
        frame: &Frame,
        route: &Route,
        subject: &str,
        no_echo: Option<u64>,
    ) -> bool {
        self.route_by(frame, route, subject, no_echo, None)
    }

    /// Who wants `subject`: from the route cache when it is there.
    pub fn route_of(&self, subject: &str) -> Rc<Route> {
        self.interest.borrow_mut().route(subject)
    }

    /// Routes a message the broker made by a subject other than its own (`to`): the subscribers
    /// of `to` get it with its own subject, as a JetStream push consumer delivers to its deliver
    /// subject. Returns whether anyone was interested.
    pub fn route_to(&self, frame: &Frame, to: &Arc<str>) -> bool {
        let route = self.route_of(to);
        let interested = self.route_by(frame, &route, to, None, Some(to));
        self.congested.borrow_mut().clear();
        interested
    }

    /// Whether anyone, on any shard, subscribes to what `subject` matches.
    pub fn has_interest(&self, subject: &str) -> bool {
        self.route_of(subject).is_wanted()
    }

    fn route_by(
        &self,
        frame: &Frame,
        route: &Route,
        subject: &str,
        no_echo: Option<u64>,
        to: Option<&Arc<str>>,
    ) -> bool {
        for sub in &route.local {
            if no_echo != Some(sub.conn.id) {
                self.deliver(sub, frame);
            }
        }
        let interested = route.is_wanted();
        let mut picks: Vec<(ShardId, Arc<str>)> = Vec::new();
        for group in &route.groups {
            let total = group.local.len() + group.remote.len();
            if total == 0 {
                continue;
            }
            let pick = fastrand::usize(..total);
            let local = if pick < group.local.len() {
                pick_member(&group.local, pick)
            } else {
                None
            };
            match local {
                // A congested member here would make the publisher wait: a member elsewhere may not.
                Some(sub) if !sub.conn.out.is_congested() || group.remote.is_empty() => {
                    self.deliver(sub, frame)
                }
                _ if !group.remote.is_empty() => {
                    let remote = pick.checked_sub(group.local.len()).unwrap_or(pick);
                    picks.push((
                        group.remote[remote % group.remote.len()],
                        group.name.clone(),
                    ));
                }
                _ => self.drop_queued(&group.name, subject),
            }
        }
        if route.remote == 0 && picks.is_empty() {
            self.expire();
            return interested;
        }
        for (index, peer) in self.other_peers() {
            let plain = route.remote & (1 << index) != 0;
            let queues: Vec<Arc<str>> = picks
                .iter()
                .filter(|(shard, _)| shard.0 as usize == index)
                .map(|(_, name)| name.clone())
                .collect();
            if plain || !queues.is_empty() {
                add(&self.stats.forwards_out, 1);
                peer.push_core(CoreItem::Forward {
                    frame: frame.clone(),
                    plain,
                    queues,
                    hops: 0,
                    to: to.cloned(),
                });
            }
        }
        self.expire();
        interested
    }

    /// What became congested while routing and storing since the last call.
    pub fn take_congested(&self) -> Vec<Backlog> {
        std::mem::take(&mut *self.congested.borrow_mut())
    }

    /// Waits until each of `backlog` has drained, or the shard stops.
    pub async fn wait_drained(&self, backlog: Vec<Backlog>) {
        for backlog in backlog {
            futures_lite::future::or(backlog.drained(), self.stopping.wait()).await;
        }
    }

    /// Remembers something the current publish made too full, for its feeder to wait on.
    pub fn note_backlog(&self, backlog: Backlog) {
        let mut congested = self.congested.borrow_mut();
        if !congested.iter().any(|b| b.is(&backlog)) {
            congested.push(backlog);
        }
    }

    /// Counts a queue-group message that no member could take.
    fn drop_queued(&self, group: &str, subject: &str) {
        add(&self.stats.queue_drops, 1);
        tracing::debug!(
            shard = self.id.0,
            group,
            subject,
            "no queue member left for a message"
        );
    }

    /// The subscriptions of connection `conn` that match `subject` (to answer a NATS request that
    /// nobody else will: "no responders").
    pub fn subs_of(&self, conn: u64, subject: &str) -> Vec<Rc<LocalSub>> {
        let route = self.interest.borrow_mut().route(subject);
        route
            .local
            .iter()
            .filter(|s| s.conn.id == conn)
            .cloned()
            .collect()
    }

    /// Delivers a message that another shard forwarded here. A queue group whose members here all
    /// left (or reached their maximum) on the way has the message picked again among its members
    /// elsewhere, at most once per shard.
    fn deliver_forward(
        &self,
        frame: &Frame,
        plain: bool,
        queues: &[Arc<str>],
        hops: u8,
        route_as: Option<Arc<str>>,
    ) {
        add(&self.stats.forwards_in, 1);
        let ArchivedOp::Pub(publish) = frame.op() else {
            return;
        };
        let subject = route_as.as_deref().unwrap_or(publish.subject());
        let route: Rc<Route> = self.interest.borrow_mut().route(subject);
        if plain {
            for sub in &route.local {
                self.deliver(sub, frame);
            }
        }
        for name in queues {
            let group = route.group(name);
            let member =
                group.and_then(|g| pick_member(&g.local, fastrand::usize(..=g.local.len())));
            match (member, group) {
                (Some(sub), _) => self.deliver(sub, frame),
                (None, Some(g)) if !g.remote.is_empty() && (hops as usize) + 1 < self.shards => {
                    let to = g.remote[fastrand::usize(..g.remote.len())];
                    add(&self.stats.forwards_out, 1);
                    self.push_to(
                        to,
                        CoreItem::Forward {
                            frame: frame.clone(),
                            plain: false,
                            queues: vec![name.clone()],
                            hops: hops + 1,
                            to: route_as.clone(),
                        },
                    );
                }
                _ => self.drop_queued(name, publish.subject()),
            }
        }
        self.expire();
    }

    /// Writes one message to one subscription's connection.
    fn deliver(&self, sub: &Rc<LocalSub>, frame: &Frame) {
        if sub.closed.get() {
            return;
        }
        let pushed = match &sub.nats_sid {
            None => sub.conn.out.push2(&sub.header, frame.bytes()),
            Some(sid) => {
                let ArchivedOp::Pub(p) = frame.op() else {
                    return;
                };
                let parts = Parts {
                    subject: p.subject(),
                    reply: p.reply(),
                    headers: p.headers(),
                    payload: p.payload(),
                };
                push_msg(sub, sid, &parts)
            }
        };
        self.delivered(sub, pushed, frame.len());
    }

    /// Counts a delivery and notes what it made congested or cut off.
    fn delivered(&self, sub: &Rc<LocalSub>, pushed: Push, bytes: usize) {
        sub.delivered.set(sub.delivered.get() + 1);
        match pushed {
            Push::Queued => {
                add(&self.stats.msgs_out, 1);
                add(&self.stats.bytes_out, bytes as u64);
                if sub.conn.out.is_congested() {
                    self.note_backlog(Backlog::Subscriber(sub.conn.clone()));
                }
            }
            Push::SlowConsumer => {
                add(&self.stats.slow_consumers, 1);
                tracing::warn!(
                    shard = self.id.0,
                    conn = sub.conn.id,
                    "slow consumer: outbound buffer over its limit, disconnecting"
                );
            }
            Push::Closed => {}
        }
        let remaining = sub.remaining.get();
        if remaining != u64::MAX {
            sub.remaining.set(remaining - 1);
            if remaining == 1 {
                sub.closed.set(true);
                self.expired.borrow_mut().push(sub.clone());
            }
        }
    }

    /// Delivers a NATS publish from its parts along a route that [`Route::is_nats_only`], skipping
    /// connection `no_echo`. Returns whether anyone was interested.
    pub fn route_parts(&self, route: &Route, parts: &Parts<'_>, no_echo: Option<u64>) -> bool {
        let bytes = parts.headers.len() + parts.payload.len();
        for sub in &route.local {
            if no_echo == Some(sub.conn.id) || sub.closed.get() {
                continue;
            }
            let Some(sid) = &sub.nats_sid else {
                continue;
            };
            let pushed = push_msg(sub, sid, parts);
            self.delivered(sub, pushed, bytes);
        }
        self.expire();
        !route.local.is_empty()
    }

    /// Removes the subscriptions that reached their message limit.
    fn expire(&self) {
        if self.expired.borrow().is_empty() {
            return;
        }
        let expired = std::mem::take(&mut *self.expired.borrow_mut());
        for sub in expired {
            sub.conn.subs.borrow_mut().remove(&sub.sid);
            self.remove_sub(&sub);
        }
    }

    // ---- the mesh ----

    /// Applies a core item from another shard.
    pub fn receive_core(&self, from: ShardId, item: CoreItem) {
        match item {
            CoreItem::Forward {
                frame,
                plain,
                queues,
                hops,
                to,
            } => self.deliver_forward(&frame, plain, &queues, hops, to),
            CoreItem::Consumed { bytes } => {
                self.peers[from.0 as usize].consumed(bytes);
                self.room.notify_all();
            }
            CoreItem::InterestAdd { pattern, queue } => {
                self.interest
                    .borrow_mut()
                    .insert(&pattern, Entry::Remote { shard: from, queue });
            }
            CoreItem::InterestRemove { pattern, queue } => {
                self.interest
                    .borrow_mut()
                    .remove(&pattern, &Entry::Remote { shard: from, queue });
            }
            CoreItem::Barrier { id } => {
                self.peers[from.0 as usize].push_core(CoreItem::BarrierAck { id });
            }
            CoreItem::BarrierAck { id } => {
                let mut barriers = self.barriers.borrow_mut();
                if let Some(left) = barriers.get_mut(&id) {
                    *left -= 1;
                    if *left == 0 {
                        barriers.remove(&id);
                        drop(barriers);
                        self.barrier_done.notify_all();
                    }
                }
            }
        }
    }
}

/// The member to give a queue-group message to, looking from `start` (wrapping): one that can take
/// it without waiting if there is one, else any that can take it at all. A member that left, reached
/// its maximum, or was cut off is never picked.
/// A NATS message in parts.
pub struct Parts<'a> {
    pub subject: &'a str,
    pub reply: Option<&'a str>,
    pub headers: &'a [u8],
    pub payload: &'a [u8],
}

/// Writes a message to a NATS subscription as a `MSG` (or `HMSG`) line.
fn push_msg(sub: &LocalSub, sid: &[u8], parts: &Parts<'_>) -> Push {
    let len = parts.subject.len()
        + parts.reply.map_or(0, str::len)
        + parts.headers.len()
        + parts.payload.len()
        + sid.len()
        + 48;
    sub.conn.out.push_with(len, |buf| {
        sluice_protocol::nats::encode_msg(
            buf,
            parts.subject.as_bytes(),
            sid,
            parts.reply.map(str::as_bytes),
            parts.headers,
            parts.payload,
        )
    })
}

fn pick_member(members: &[Rc<LocalSub>], start: usize) -> Option<&Rc<LocalSub>> {
    let n = members.len();
    let open = |s: &&Rc<LocalSub>| !s.closed.get() && s.conn.out.is_open();
    let ring = || (0..n).map(|i| &members[(start + i) % n]);
    ring()
        .filter(open)
        .find(|s| !s.conn.out.is_congested())
        .or_else(|| ring().find(open))
}

/// An open connection counted by [`Shard::hold_unregistered`]; dropping it uncounts it.
pub struct Unregistered(Rc<Shard>);

impl Drop for Unregistered {
    fn drop(&mut self) {
        let shard = &self.0;
        shard
            .unregistered
            .set(shard.unregistered.get().saturating_sub(1));
        shard.count_open();
    }
}
