//! A group's membership and its rebalances: Empty → PreparingRebalance → CompletingRebalance →
//! Stable, as a classic Kafka coordinator runs them.
//!
//! A join, a leave, an expired session or a changed subscription starts a rebalance: the
//! coordinator holds every JoinGroup until each known member has joined again (members learn of
//! the rebalance from their heartbeats) or the longest rebalance timeout passes, drops the
//! members that did not, bumps the generation and answers all the joins at once; the leader's
//! answer carries everyone's subscription. The leader's SyncGroup then brings the assignments,
//! which answer the other members' parked SyncGroups. A group's first rebalance waits a little
//! for more members, so that members starting together share one generation.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;
use sluice_protocol::kafka::code;

use super::offsets::Offsets;
use super::{GroupView, Join, Joined, MemberView, StreamShard, Sync, Synced};

/// The longest session or rebalance timeout a member may ask for (Kafka's
/// `group.max.session.timeout.ms`).
pub const GROUP_TIMEOUT_MAX_MS: i32 = 30 * 60 * 1000;

/// The shortest session timeout (Kafka's `group.min.session.timeout.ms`).
const SESSION_TIMEOUT_MIN_MS: i32 = 6000;

/// How long a group's first rebalance waits for more members, extended by each one that comes
/// (Kafka's `group.initial.rebalance.delay.ms`).
pub const INITIAL_DELAY: Duration = Duration::from_secs(3);

/// How often sessions are checked for expiry.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum State {
    #[default]
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

pub struct Member {
    pub id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    /// Its JoinGroup, held until the rebalance completes.
    joining: Option<oneshot::Sender<Joined>>,
    /// Its SyncGroup, held until the leader's brings the assignments.
    syncing: Option<oneshot::Sender<Synced>>,
    last_heard: Instant,
}

impl Member {
    /// Notes that the member was heard from: its session starts again.
    pub fn heard(&mut self) {
        self.last_heard = Instant::now();
    }

    fn expired(&self, now: Instant) -> bool {
        self.joining.is_none() && now.duration_since(self.last_heard) > self.session_timeout
    }
}

#[derive(Default)]
pub struct Group {
    pub state: State,
    pub generation: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    /// In the order they joined.
    pub members: Vec<Member>,
    /// Member ids handed out and not yet used to join, with when they lapse.
    pending: Vec<(String, Instant)>,
    /// Counts rebalances, so that a timer knows whether the one it was set for is still on.
    rebalance: u64,
    /// When the rebalance under way completes, whoever has joined by then.
    deadline: Option<Instant>,
    /// In the first rebalance's wait for more members: until when it may be extended.
    initial_until: Option<Instant>,
    pub offsets: Offsets,
    /// When the offsets were last committed (ms since the epoch, rising): in a cluster, of two
    /// nodes' offsets of a group the later stamp wins.
    pub stamp: u64,
    /// Commits applied in memory, written to disk, and failed to be written (counts).
    pub version: u64,
    pub written: u64,
    pub failed: u64,
    pub writing: bool,
}

impl Group {
    fn member(&mut self, id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == id)
    }

    fn everyone_joined(&self) -> bool {
        self.members.iter().all(|m| m.joining.is_some())
    }

    /// Whether a member with these protocols fits the others: the same protocol type, and an
    /// assignment protocol every member can use.
    fn accepts(&self, joining: &Join) -> bool {
        if joining.protocol_type.is_empty() || joining.protocols.is_empty() {
            return false;
        }
        let others = || self.members.iter().filter(|m| m.id != joining.member_id);
        if others().any(|m| m.protocol_type != joining.protocol_type) {
            return false;
        }
        joining
            .protocols
            .iter()
            .any(|(name, _)| others().all(|m| m.protocols.iter().any(|(n, _)| n == name)))
    }

    /// The assignment protocol for the generation: among those every member lists, the one
    /// most members prefer.
    fn choose_protocol(&self) -> String {
        let usable = |name: &str| {
            self.members
                .iter()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        };
        let mut votes: Vec<(String, usize)> = Vec::new();
        for member in &self.members {
            if let Some((name, _)) = member.protocols.iter().find(|(n, _)| usable(n)) {
                match votes.iter_mut().find(|(n, _)| n == name) {
                    Some((_, count)) => *count += 1,
                    None => votes.push((name.clone(), 1)),
                }
            }
        }
        let mut best: Option<(String, usize)> = None;
        for (name, count) in votes {
            if best.as_ref().is_none_or(|(_, most)| count > *most) {
                best = Some((name, count));
            }
        }
        best.map(|(name, _)| name)
            .or_else(|| {
                let first = self.members.first()?;
                first.protocols.first().map(|(n, _)| n.clone())
            })
            .unwrap_or_default()
    }
}

fn refused(error: i16, member_id: &str) -> Joined {
    Joined {
        error,
        generation: -1,
        member_id: member_id.to_string(),
        ..Joined::default()
    }
}

fn sync_refused(error: i16) -> Synced {
    Synced {
        error,
        ..Synced::default()
    }
}

/// A new member id: the client's id and a part no other member has had.
fn new_member_id(client_id: &str) -> String {
    let client = if client_id.is_empty() {
        "member"
    } else {
        client_id
    };
    format!(
        "{client}-{:08x}-{:016x}",
        fastrand::u32(..),
        fastrand::u64(..)
    )
}

/// Handles a JoinGroup: answers once the rebalance it joins completes.
pub async fn join(shard: &Rc<StreamShard>, join: Join) -> Joined {
    if join.group.is_empty() {
        return refused(code::INVALID_GROUP_ID, &join.member_id);
    }
    if !(SESSION_TIMEOUT_MIN_MS..=GROUP_TIMEOUT_MAX_MS).contains(&join.session_timeout_ms) {
        return refused(code::INVALID_SESSION_TIMEOUT, &join.member_id);
    }
    let answer = {
        let mut groups = shard.groups.groups.borrow_mut();
        let group = groups.entry(join.group.clone()).or_default();
        if !group.accepts(&join) {
            return refused(code::INCONSISTENT_GROUP_PROTOCOL, &join.member_id);
        }
        let now = Instant::now();
        let member_id = if join.member_id.is_empty() {
            let id = new_member_id(&join.client_id);
            if join.id_round_trip {
                let lapses = now + Duration::from_millis(join.session_timeout_ms as u64);
                group.pending.push((id.clone(), lapses));
                return refused(code::MEMBER_ID_REQUIRED, &id);
            }
            id
        } else {
            let known = group.members.iter().any(|m| m.id == join.member_id);
            let pending = group
                .pending
                .iter()
                .position(|(id, _)| *id == join.member_id);
            match (known, pending) {
                (true, _) => {}
                (false, Some(at)) => {
                    group.pending.swap_remove(at);
                }
                (false, None) => return refused(code::UNKNOWN_MEMBER_ID, &join.member_id),
            }
            join.member_id.clone()
        };
        let (answer, answered) = oneshot::channel();
        let rebalance_ms = if join.rebalance_timeout_ms > 0 {
            join.rebalance_timeout_ms
        } else {
            join.session_timeout_ms
        };
        let new = group.member(&member_id).is_none();
        if new {
            group.members.push(Member {
                id: member_id.clone(),
                instance_id: None,
                client_id: String::new(),
                client_host: String::new(),
                session_timeout: Duration::ZERO,
                rebalance_timeout: Duration::ZERO,
                protocol_type: String::new(),
                protocols: Vec::new(),
                assignment: Bytes::new(),
                joining: None,
                syncing: None,
                last_heard: now,
            });
        }
        if let Some(member) = group.member(&member_id) {
            member.instance_id = join.instance_id;
            member.client_id = join.client_id;
            member.client_host = join.client_host;
            member.session_timeout = Duration::from_millis(join.session_timeout_ms as u64);
            member.rebalance_timeout =
                Duration::from_millis(rebalance_ms.min(GROUP_TIMEOUT_MAX_MS) as u64);
            member.protocol_type = join.protocol_type;
            member.protocols = join.protocols;
            member.joining = Some(answer);
            member.heard();
        }
        tracing::debug!(group = %join.group, member = %member_id, new, "kafka group join");
        match group.state {
            State::PreparingRebalance => {
                if let Some(until) = group.initial_until {
                    if new {
                        group.deadline = Some((now + INITIAL_DELAY).min(until));
                    }
                } else if group.everyone_joined() {
                    complete(&join.group, group);
                }
            }
            state => prepare(shard, &join.group, group, state == State::Empty),
        }
        answered
    };
    answer
        .await
        .unwrap_or_else(|_| refused(code::UNKNOWN_MEMBER_ID, ""))
}

/// Starts a rebalance: parked SyncGroups learn of it, and a timer completes it by the deadline.
fn prepare(shard: &Rc<StreamShard>, name: &str, group: &mut Group, first: bool) {
    let now = Instant::now();
    group.state = State::PreparingRebalance;
    group.rebalance += 1;
    for member in &mut group.members {
        if let Some(parked) = member.syncing.take() {
            let _ = parked.send(sync_refused(code::REBALANCE_IN_PROGRESS));
        }
    }
    let longest = group
        .members
        .iter()
        .map(|m| m.rebalance_timeout)
        .max()
        .unwrap_or(Duration::ZERO);
    if first {
        let until = now + longest.max(INITIAL_DELAY);
        group.initial_until = Some(until);
        group.deadline = Some((now + INITIAL_DELAY).min(until));
    } else {
        group.initial_until = None;
        group.deadline = Some(now + longest);
    }
    // The task may run at once, while the caller holds the groups: it sleeps before it looks.
    let first = group.deadline.unwrap_or(now);
    glommio::spawn_local(complete_by_deadline(
        shard.clone(),
        name.to_string(),
        group.rebalance,
        first,
    ))
    .detach();
}

/// Completes rebalance `rebalance` of a group at its deadline (first expected at `deadline`), if
/// it is still under way.
async fn complete_by_deadline(
    shard: Rc<StreamShard>,
    name: String,
    rebalance: u64,
    mut deadline: Instant,
) {
    loop {
        let stopping = &shard.core.stopping;
        let slept = futures_lite::future::or(
            async {
                glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
                true
            },
            async {
                stopping.wait().await;
                false
            },
        )
        .await;
        if !slept {
            return;
        }
        deadline = {
            let mut groups = shard.groups.groups.borrow_mut();
            let Some(group) = groups.get_mut(&name) else {
                return;
            };
            if group.rebalance != rebalance || group.state != State::PreparingRebalance {
                return;
            }
            let Some(deadline) = group.deadline else {
                return;
            };
            if Instant::now() >= deadline {
                complete(&name, group);
                return;
            }
            deadline
        };
    }
}

/// Completes a rebalance with the members that joined: a new generation, its protocol and
/// leader, and every held JoinGroup answered.
fn complete(name: &str, group: &mut Group) {
    let before = group.members.len();
    group.members.retain(|m| m.joining.is_some());
    let dropped = before - group.members.len();
    group.deadline = None;
    group.initial_until = None;
    group.generation += 1;
    if group.members.is_empty() {
        group.state = State::Empty;
        group.protocol_name = None;
        group.leader = None;
        tracing::debug!(group = %name, generation = group.generation, "kafka group empty");
        return;
    }
    let protocol = group.choose_protocol();
    if !group
        .leader
        .as_ref()
        .is_some_and(|leader| group.members.iter().any(|m| m.id == *leader))
    {
        group.leader = Some(group.members[0].id.clone());
    }
    let leader = group.leader.clone().unwrap_or_default();
    group.protocol_type = Some(group.members[0].protocol_type.clone());
    group.protocol_name = Some(protocol.clone());
    group.state = State::CompletingRebalance;
    let everyone: Vec<(String, Option<String>, Bytes)> = group
        .members
        .iter()
        .map(|m| {
            let metadata = m
                .protocols
                .iter()
                .find(|(n, _)| *n == protocol)
                .map(|(_, meta)| meta.clone())
                .unwrap_or_default();
            (m.id.clone(), m.instance_id.clone(), metadata)
        })
        .collect();
    tracing::info!(group = %name, generation = group.generation, members = everyone.len(),
        dropped, %protocol, %leader, "kafka group rebalanced");
    for member in &mut group.members {
        member.assignment = Bytes::new();
        member.heard();
        let Some(joining) = member.joining.take() else {
            continue;
        };
        let is_leader = member.id == leader;
        let _ = joining.send(Joined {
            error: code::NONE,
            generation: group.generation,
            protocol_type: group.protocol_type.clone(),
            protocol_name: group.protocol_name.clone(),
            leader: leader.clone(),
            member_id: member.id.clone(),
            members: if is_leader {
                everyone.clone()
            } else {
                Vec::new()
            },
        });
    }
}

/// Handles a SyncGroup: the leader's brings the assignments; the others wait for them.
pub async fn sync(shard: &Rc<StreamShard>, sync: Sync) -> Synced {
    let parked = {
        let mut groups = shard.groups.groups.borrow_mut();
        let Some(group) = groups.get_mut(&sync.group) else {
            return sync_refused(code::UNKNOWN_MEMBER_ID);
        };
        let state = group.state;
        let generation = group.generation;
        let protocol_type = group.protocol_type.clone();
        let protocol_name = group.protocol_name.clone();
        let is_leader = group.leader.as_deref() == Some(sync.member_id.as_str());
        let Some(member) = group.member(&sync.member_id) else {
            return sync_refused(code::UNKNOWN_MEMBER_ID);
        };
        if sync.generation != generation {
            return sync_refused(code::ILLEGAL_GENERATION);
        }
        let mismatched = |asked: &Option<String>, current: &Option<String>| {
            asked.as_ref().is_some_and(|a| Some(a) != current.as_ref())
        };
        if mismatched(&sync.protocol_type, &protocol_type)
            || mismatched(&sync.protocol_name, &protocol_name)
        {
            return sync_refused(code::INCONSISTENT_GROUP_PROTOCOL);
        }
        member.heard();
        let answer = |assignment: Bytes| Synced {
            error: code::NONE,
            protocol_type: protocol_type.clone(),
            protocol_name: protocol_name.clone(),
            assignment,
        };
        match state {
            State::Empty => return sync_refused(code::UNKNOWN_MEMBER_ID),
            State::PreparingRebalance => return sync_refused(code::REBALANCE_IN_PROGRESS),
            State::Stable => return answer(member.assignment.clone()),
            State::CompletingRebalance if is_leader => {
                for (id, assignment) in sync.assignments {
                    if let Some(member) = group.member(&id) {
                        member.assignment = assignment;
                    }
                }
                group.state = State::Stable;
                tracing::debug!(group = %sync.group, generation, "kafka group stable");
                let mut own = Bytes::new();
                for member in &mut group.members {
                    if member.id == sync.member_id {
                        own = member.assignment.clone();
                    } else if let Some(parked) = member.syncing.take() {
                        let _ = parked.send(answer(member.assignment.clone()));
                    }
                }
                return answer(own);
            }
            State::CompletingRebalance => {
                let (answer, answered) = oneshot::channel();
                member.syncing = Some(answer);
                answered
            }
        }
    };
    parked
        .await
        .unwrap_or_else(|_| sync_refused(code::REBALANCE_IN_PROGRESS))
}

/// Handles a Heartbeat: whether the member is current, and whether it must join again.
pub fn heartbeat(shard: &StreamShard, name: &str, generation: i32, member_id: &str) -> i16 {
    let mut groups = shard.groups.groups.borrow_mut();
    let Some(group) = groups.get_mut(name) else {
        return code::UNKNOWN_MEMBER_ID;
    };
    let (state, current) = (group.state, group.generation);
    let Some(member) = group.member(member_id) else {
        return code::UNKNOWN_MEMBER_ID;
    };
    member.heard();
    if generation != current {
        return code::ILLEGAL_GENERATION;
    }
    match state {
        State::Empty => code::UNKNOWN_MEMBER_ID,
        State::PreparingRebalance => code::REBALANCE_IN_PROGRESS,
        State::CompletingRebalance | State::Stable => code::NONE,
    }
}

/// Handles a LeaveGroup: an error code per member asked.
pub fn leave(shard: &Rc<StreamShard>, name: &str, members: &[String]) -> Vec<i16> {
    let mut groups = shard.groups.groups.borrow_mut();
    let Some(group) = groups.get_mut(name) else {
        return vec![code::UNKNOWN_MEMBER_ID; members.len()];
    };
    let mut codes = Vec::with_capacity(members.len());
    let mut removed = 0;
    for id in members {
        match group.members.iter().position(|m| m.id == *id) {
            Some(at) => {
                group.members.remove(at);
                removed += 1;
                codes.push(code::NONE);
            }
            None => codes.push(code::UNKNOWN_MEMBER_ID),
        }
    }
    if removed > 0 {
        tracing::debug!(group = %name, removed, "kafka group members left");
        membership_shrank(shard, name, group);
    }
    codes
}

/// After members left or expired: the others rebalance, or the group is empty.
fn membership_shrank(shard: &Rc<StreamShard>, name: &str, group: &mut Group) {
    match group.state {
        State::Empty => {}
        State::Stable | State::CompletingRebalance => {
            if group.members.is_empty() {
                complete(name, group);
            } else {
                prepare(shard, name, group, false);
            }
        }
        State::PreparingRebalance => {
            if group.members.is_empty()
                || (group.initial_until.is_none() && group.everyone_joined())
            {
                complete(name, group);
            }
        }
    }
}

/// Drops members whose sessions expired, and member ids handed out and never used.
fn expire(shard: &Rc<StreamShard>) {
    let now = Instant::now();
    let mut groups = shard.groups.groups.borrow_mut();
    for (name, group) in groups.iter_mut() {
        group.pending.retain(|(_, lapses)| *lapses > now);
        let before = group.members.len();
        group.members.retain(|m| !m.expired(now));
        let expired = before - group.members.len();
        if expired > 0 {
            tracing::info!(group = %name, expired, "kafka group members' sessions expired");
            membership_shrank(shard, name, group);
        }
    }
}

/// Checks sessions for expiry until the server stops.
pub async fn sweep(shard: Rc<StreamShard>) {
    loop {
        let stopped = futures_lite::future::or(
            async {
                glommio::timer::sleep(SWEEP_EVERY).await;
                false
            },
            async {
                shard.core.stopping.wait().await;
                true
            },
        )
        .await;
        if stopped {
            return;
        }
        expire(&shard);
    }
}

fn view(name: &str, group: Option<&Group>) -> GroupView {
    let Some(group) = group else {
        return GroupView {
            group: name.to_string(),
            state: "Dead",
            protocol_type: String::new(),
            protocol_name: String::new(),
            members: Vec::new(),
        };
    };
    let protocol = group.protocol_name.clone().unwrap_or_default();
    GroupView {
        group: name.to_string(),
        state: group.state.name(),
        protocol_type: group.protocol_type.clone().unwrap_or_default(),
        protocol_name: protocol.clone(),
        members: group
            .members
            .iter()
            .map(|m| MemberView {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: m
                    .protocols
                    .iter()
                    .find(|(n, _)| *n == protocol)
                    .map(|(_, meta)| meta.clone())
                    .unwrap_or_default(),
                assignment: m.assignment.clone(),
            })
            .collect(),
    }
}

/// A group as DescribeGroups shows it (`Dead` if this coordinator does not know it).
pub fn describe(shard: &StreamShard, name: &str) -> GroupView {
    view(name, shard.groups.groups.borrow().get(name))
}

/// Every group this coordinator knows.
pub fn list(shard: &StreamShard) -> Vec<GroupView> {
    shard
        .groups
        .groups
        .borrow()
        .iter()
        .map(|(name, group)| view(name, Some(group)))
        .collect()
}
