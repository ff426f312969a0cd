//! The session layer: what a client does (publish, subscribe, unsubscribe, consume, ack), whatever
//! port it speaks. Validation, permissions, statistics and the order of acks are decided here,
//! once; a port (`conn.rs` for the native protocol, `nats_conn.rs` for NATS) only turns its wire
//! format into these calls and a [`Refusal`] back into its wire format.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use sluice_protocol::op::{AckKind, Op, Publish};
use sluice_protocol::subject::{validate_pattern, validate_queue, validate_subject};
use sluice_protocol::{ErrorCode, Frame};

pub mod connection;

use self::connection::Conn;
use crate::api::ConsumerConfig;
use crate::server::auth_pool::AuthPool;
use crate::server::core::interest::LocalSub;
use crate::server::core::shard::{Parts, Shard};
use crate::server::core::stats::add;
use crate::server::streams::{self, AckOutcome, Joins, StreamShard};

/// What the session layer works with on one shard: the core shard, the streams' state beside
/// it, and the hashing threads.
pub struct SessionShard {
    pub core: Rc<Shard>,
    pub streams: Rc<StreamShard>,
    /// The hashing threads shared by all shards, on a server with users.
    pub auth: Option<Arc<AuthPool>>,
    /// The connections of this shard, by id: where acks stored on other shards go.
    conns: RefCell<HashMap<u64, Rc<Conn>>>,
}

impl SessionShard {
    pub fn new(
        core: Rc<Shard>,
        streams: Rc<StreamShard>,
        auth: Option<Arc<AuthPool>>,
    ) -> SessionShard {
        SessionShard {
            core,
            streams,
            auth,
            conns: RefCell::new(HashMap::new()),
        }
    }
}

/// A connection begins: core routes to its client from now on.
pub fn open(shard: &SessionShard, conn: &Rc<Conn>) {
    shard.core.register(conn.client.clone());
    shard
        .conns
        .borrow_mut()
        .insert(conn.client.id, conn.clone());
}

/// A connection ends: it leaves every consumer it attached to (here and on the owners' shards),
/// and the shard forgets it and every subscription it held.
pub fn close(shard: &Rc<SessionShard>, conn: &Conn) {
    if conn.consumer_member.get() {
        streams::member_gone(&shard.streams, shard.core.id, conn.client.id);
    }
    shard.conns.borrow_mut().remove(&conn.client.id);
    shard.core.unregister(&conn.client);
}

/// Why the session refused an operation. The client is told; the connection lives on unless the
/// refusal [`is_fatal`](Refusal::is_fatal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The subject of a publish is not a valid subject.
    InvalidSubject(String),
    /// The reply subject of a publish is not a valid subject.
    InvalidReply(String),
    /// The pattern of a subscription is not a valid pattern.
    InvalidPattern {
        pattern: String,
        why: String,
    },
    InvalidQueue(String),
    /// The user may not publish to this subject.
    PublishDenied(String),
    /// The user may not subscribe to this pattern.
    SubscribeDenied(String),
    PayloadTooLarge {
        bytes: usize,
        max: u32,
    },
    DuplicateSid(u64),
    UnknownSid(u64),
    /// The connection holds its most subscriptions.
    TooManySubscriptions(usize),
    /// Only the server publishes under `$SYS.`.
    SystemSubject(String),
    /// The connection did not attach to the consumer it acks or pulls from.
    NotAMember {
        stream: String,
        consumer: String,
    },
    /// The consumer refused a pull.
    Consumer {
        code: ErrorCode,
        message: String,
    },
}

impl Refusal {
    /// The code a native client receives.
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::InvalidSubject(_)
            | Refusal::InvalidReply(_)
            | Refusal::InvalidPattern { .. }
            | Refusal::InvalidQueue(_) => ErrorCode::InvalidSubject,
            Refusal::PublishDenied(_) | Refusal::SubscribeDenied(_) => ErrorCode::PermissionDenied,
            Refusal::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            Refusal::DuplicateSid(_) => ErrorCode::DuplicateSubscription,
            Refusal::UnknownSid(_) => ErrorCode::UnknownSubscription,
            Refusal::SystemSubject(_) | Refusal::NotAMember { .. } => ErrorCode::PermissionDenied,
            Refusal::Consumer { code, .. } => *code,
            Refusal::TooManySubscriptions(_) => ErrorCode::LimitReached,
        }
    }

    /// Whether the connection is closed after it (as nats-server closes on a payload over the
    /// maximum: the client disregarded what the server announced).
    pub fn is_fatal(&self) -> bool {
        matches!(self, Refusal::PayloadTooLarge { .. })
    }

    /// The text nats-server sends in its `-ERR` for the same refusal.
    pub fn nats_text(&self) -> String {
        match self {
            Refusal::InvalidSubject(_) | Refusal::InvalidReply(_) => {
                "Invalid Publish Subject".into()
            }
            Refusal::InvalidPattern { .. } => "Invalid Subject".into(),
            Refusal::InvalidQueue(_) => "Invalid Queue Name".into(),
            Refusal::PublishDenied(subject) => {
                format!("Permissions Violation for Publish to \"{subject}\"")
            }
            Refusal::SubscribeDenied(pattern) => {
                format!("Permissions Violation for Subscription to \"{pattern}\"")
            }
            Refusal::PayloadTooLarge { .. } => "Maximum Payload Violation".into(),
            Refusal::DuplicateSid(_) => "Duplicate Subscription ID".into(),
            Refusal::UnknownSid(_) => "Invalid Subscription ID".into(),
            Refusal::SystemSubject(subject) => {
                format!("Permissions Violation for Publish to \"{subject}\"")
            }
            Refusal::TooManySubscriptions(_) => "Maximum Subscriptions Exceeded".into(),
            other => other.to_string(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::InvalidSubject(why) => write!(f, "publish: {why}"),
            Refusal::InvalidReply(why) => write!(f, "reply subject: {why}"),
            Refusal::InvalidPattern { pattern, why } => write!(f, "subscribe {pattern:?}: {why}"),
            Refusal::InvalidQueue(why) => write!(f, "queue group: {why}"),
            Refusal::PublishDenied(subject) => {
                write!(f, "permission denied: publish to {subject:?}")
            }
            Refusal::SubscribeDenied(pattern) => {
                write!(f, "permission denied: subscribe to {pattern:?}")
            }
            Refusal::PayloadTooLarge { bytes, max } => {
                write!(f, "payload of {bytes} bytes exceeds max_payload {max}")
            }
            Refusal::DuplicateSid(sid) => write!(f, "subscription id {sid} is in use"),
            Refusal::UnknownSid(sid) => write!(f, "no subscription with id {sid}"),
            Refusal::SystemSubject(subject) => {
                write!(f, "permission denied: {subject:?} is the server's ($SYS.>)")
            }
            Refusal::NotAMember { stream, consumer } => write!(
                f,
                "permission denied: this connection is not attached to consumer {consumer:?} of {stream:?}"
            ),
            Refusal::Consumer { message, .. } => f.write_str(message),
            Refusal::TooManySubscriptions(max) => write!(
                f,
                "the connection holds its most subscriptions ({max}, max_subscriptions)"
            ),
        }
    }
}

/// Subjects only the server publishes on (advisories, dead-letter notices): a client publishing
/// there could forge them.
const SYSTEM_PREFIX: &str = "$SYS.";

/// How a publish wants to hear that a stream stored it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// It does not.
    None,
    /// With an ack in its turn among the connection's acks (native `ack`); a refused publish gets
    /// an error in its slot, so later acks stay with their publishes.
    InTurn,
    /// With a JetStream-style JSON ack published on its reply subject (NATS).
    OnReply,
}

/// The message of a publish as the port read it.
pub enum Body<'a> {
    /// A native publish frame, checked, to be routed and stored byte for byte.
    Frame(&'a Frame),
    /// The parts of a publish from another protocol; the session encodes the native frame once.
    Parts {
        headers: &'a [u8],
        payload: &'a [u8],
    },
}

/// A publish as a port read it.
pub struct Incoming<'a> {
    pub subject: &'a str,
    pub reply: Option<&'a str>,
    pub body: Body<'a>,
    pub ack: AckMode,
}

/// What became of an accepted publish.
#[derive(Debug, Clone, Copy)]
pub struct Published {
    /// Some subscription or queue group matched its subject.
    pub interested: bool,
    /// A stream captured it.
    pub stored: bool,
}

/// Publishes: checks size, subjects and permissions, calls `accepted` (where a port acknowledges
/// before delivery, as NATS's verbose mode does), routes to subscribers, stores it if a stream
/// captures its subject, and notes what it made congested so that the connection waits for it.
pub fn publish(
    shard: &Rc<SessionShard>,
    conn: &Rc<Conn>,
    incoming: Incoming<'_>,
    accepted: impl FnOnce(),
) -> Result<Published, Refusal> {
    add(&shard.core.stats.msgs_in, 1);
    if let Err(refusal) = check_publish(shard, conn, &incoming) {
        refused(shard, conn, &refusal);
        if incoming.ack == AckMode::InTurn {
            streams::refuse_ack(
                &shard.streams,
                &**conn,
                refusal.code(),
                &refusal.to_string(),
            );
        }
        return Err(refusal);
    }
    // A NATS publish that no stream captures and that only NATS subscriptions of this shard
    // want goes out from its parts: no frame is made for it. Its route is looked up once, for
    // either path.
    let route = match incoming.body {
        Body::Parts { .. } => Some(shard.core.route_of(incoming.subject)),
        Body::Frame(_) => None,
    };
    if let (Body::Parts { headers, payload }, Some(route)) = (&incoming.body, &route) {
        if route.is_nats_only() && !streams::captures(&shard.streams, incoming.subject) {
            add(
                &shard.core.stats.bytes_in,
                (headers.len() + payload.len()) as u64,
            );
            accepted();
            let no_echo = (!conn.nats.borrow().echo).then_some(conn.client.id);
            let parts = Parts {
                subject: incoming.subject,
                reply: incoming.reply,
                headers,
                payload,
            };
            let interested = shard.core.route_parts(route, &parts, no_echo);
            conn.client.note_congested(&shard.core);
            return Ok(Published {
                interested,
                stored: false,
            });
        }
    }
    let encoded;
    let frame = match incoming.body {
        Body::Frame(frame) => frame,
        Body::Parts { headers, payload } => {
            encoded = shard.core.encode_frame(&Op::Pub(Publish {
                subject: incoming.subject,
                reply: incoming.reply,
                headers,
                payload,
                ack: false,
            }));
            &encoded
        }
    };
    add(&shard.core.stats.bytes_in, frame.len() as u64);
    accepted();
    let no_echo = (!conn.nats.borrow().echo).then_some(conn.client.id);
    let interested = match &route {
        Some(route) => shard
            .core
            .route_along(frame, route, incoming.subject, no_echo),
        None => shard.core.route_from(frame, incoming.subject, no_echo),
    };
    let stored = match incoming.ack {
        AckMode::OnReply => streams::capture_with_reply(
            &shard.streams,
            frame.bytes(),
            incoming.subject,
            incoming.reply,
        ),
        AckMode::InTurn | AckMode::None => {
            let ack = incoming.ack == AckMode::InTurn;
            streams::capture(&shard.streams, conn, frame.bytes(), incoming.subject, ack)
        }
    };
    conn.client.note_congested(&shard.core);
    Ok(Published { interested, stored })
}

fn check_publish(
    shard: &SessionShard,
    conn: &Conn,
    incoming: &Incoming<'_>,
) -> Result<(), Refusal> {
    let bytes = match &incoming.body {
        Body::Frame(frame) => match frame.op() {
            sluice_protocol::ArchivedOp::Pub(p) => p.payload().len() + p.headers().len(),
            _ => 0,
        },
        Body::Parts { headers, payload } => headers.len() + payload.len(),
    };
    let max = shard.core.config.payload_bytes_max;
    if bytes > max as usize {
        return Err(Refusal::PayloadTooLarge { bytes, max });
    }
    validate_subject(incoming.subject).map_err(|e| Refusal::InvalidSubject(e.to_string()))?;
    if let Some(reply) = incoming.reply {
        validate_subject(reply).map_err(|e| Refusal::InvalidReply(e.to_string()))?;
    }
    if incoming.subject.starts_with(SYSTEM_PREFIX) {
        return Err(Refusal::SystemSubject(incoming.subject.to_string()));
    }
    if !conn.may_publish(shard, incoming.subject) {
        return Err(Refusal::PublishDenied(incoming.subject.to_string()));
    }
    Ok(())
}

/// Counts and logs a refusal.
fn refused(shard: &SessionShard, conn: &Conn, refusal: &Refusal) {
    match refusal {
        // Counted where the permission was checked.
        Refusal::PublishDenied(_) | Refusal::SubscribeDenied(_) => {}
        Refusal::PayloadTooLarge { .. } => {
            tracing::warn!(shard = shard.core.id.0, conn = conn.client.id, %refusal, "refused");
        }
        _ => {
            add(&shard.core.stats.protocol_errors, 1);
            tracing::debug!(shard = shard.core.id.0, conn = conn.client.id, %refusal, "refused");
        }
    }
}

/// A subscription as a port read it.
pub struct NewSub<'a> {
    /// Unique on the connection.
    pub sid: u64,
    pub pattern: &'a str,
    pub queue: Option<&'a str>,
    /// The id as a NATS client wrote it, for its `MSG` lines; `None` on the native protocol.
    pub nats_sid: Option<Bytes>,
}

/// Subscribes: checks the pattern, the queue name and permissions, and adds the subscription here
/// and to every other shard's interest.
pub fn subscribe(
    shard: &Rc<SessionShard>,
    conn: &Rc<Conn>,
    sub: NewSub<'_>,
) -> Result<(), Refusal> {
    let checked = check_subscribe(shard, conn, &sub);
    if let Err(refusal) = &checked {
        refused(shard, conn, refusal);
        return checked;
    }
    let header = match sub.nats_sid {
        None => shard.core.encode(&Op::Msg { sid: sub.sid }),
        Some(_) => Bytes::new(),
    };
    let local = Rc::new(LocalSub {
        conn: conn.client.clone(),
        sid: sub.sid,
        pattern: Arc::from(sub.pattern),
        queue: sub.queue.map(Arc::from),
        header,
        nats_sid: sub.nats_sid,
        remaining: Cell::new(u64::MAX),
        closed: Cell::new(false),
        delivered: Cell::new(0),
    });
    conn.client.subs.borrow_mut().insert(sub.sid, local.clone());
    shard.core.add_sub(local);
    conn.client.interest_changed();
    Ok(())
}

fn check_subscribe(shard: &SessionShard, conn: &Conn, sub: &NewSub<'_>) -> Result<(), Refusal> {
    validate_pattern(sub.pattern).map_err(|e| Refusal::InvalidPattern {
        pattern: sub.pattern.to_string(),
        why: e.to_string(),
    })?;
    if !conn.may_subscribe(shard, sub.pattern) {
        return Err(Refusal::SubscribeDenied(sub.pattern.to_string()));
    }
    if let Some(queue) = sub.queue {
        validate_queue(queue).map_err(|e| Refusal::InvalidQueue(e.to_string()))?;
    }
    if conn.client.subs.borrow().contains_key(&sub.sid) {
        return Err(Refusal::DuplicateSid(sub.sid));
    }
    let max = shard.core.config.subscriptions_max;
    if conn.client.subs.borrow().len() >= max {
        return Err(Refusal::TooManySubscriptions(max));
    }
    Ok(())
}

/// When a subscription ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Now,
    /// After this many more messages (native).
    More(u64),
    /// Once this many messages were delivered since it began (NATS's auto-unsubscribe).
    Total(u64),
}

/// Ends a subscription now or after a number of messages. Once it has had its last message a
/// queue group never picks it again.
pub fn unsubscribe(
    shard: &Rc<SessionShard>,
    conn: &Rc<Conn>,
    sid: u64,
    limit: Limit,
) -> Result<(), Refusal> {
    let Some(sub) = conn.client.subs.borrow().get(&sid).cloned() else {
        let refusal = Refusal::UnknownSid(sid);
        refused(shard, conn, &refusal);
        return Err(refusal);
    };
    let more = match limit {
        Limit::Now => 0,
        Limit::More(more) => more,
        Limit::Total(total) => total.saturating_sub(sub.delivered.get()),
    };
    if more > 0 {
        sub.remaining.set(more);
    } else {
        conn.client.subs.borrow_mut().remove(&sid);
        shard.core.remove_sub(&sub);
        conn.client.interest_changed();
    }
    Ok(())
}

/// Asks a consumer for `count` messages, on behalf of a member: only a connection that attached to
/// the consumer may pull from it.
pub fn consumer_pull(
    shard: &Rc<SessionShard>,
    conn: &Rc<Conn>,
    which: (&str, &str, u64),
    count: u64,
    expires_ms: u64,
) -> Result<(), Refusal> {
    let (stream, consumer, _) = which;
    member_of(shard, conn, stream, consumer)?;
    streams::consumer_pull(&shard.streams, conn.client.id, which, count, expires_ms)
        .map_err(|(code, message)| Refusal::Consumer { code, message })
}

/// Attaches the connection to a consumer (creating it if need be), on behalf of a client that may
/// read the stream: from now on it may pull from the consumer and ack its messages. The answer
/// waits for the returned joins.
pub fn consumer_attach(
    shard: &Rc<SessionShard>,
    conn: &Rc<Conn>,
    config: ConsumerConfig,
    sink: Option<Rc<dyn streams::DeliverySink>>,
) -> Result<Joins, (ErrorCode, String)> {
    let (stream, name) = (config.stream.clone(), config.name.clone());
    let joins = streams::attach_consumer(&shard.streams, conn.client.id, config, sink)?;
    // Noted before anything is awaited: a closing connection that follows tells the owners.
    conn.consumer_member.set(true);
    if !conn.is_member(&stream, &name) {
        conn.consumers.borrow_mut().push((stream, name));
    }
    Ok(joins)
}

/// The outcome of a publish that another shard stored, for connection `conn` of this shard: its
/// ack, in turn.
pub fn appended(shard: &SessionShard, conn: u64, seq: u64, outcome: &AckOutcome) {
    let conn = shard.conns.borrow().get(&conn).cloned();
    if let Some(conn) = conn {
        conn.complete_ack(seq, streams::ack_frame(&shard.streams, outcome));
    }
}

/// The streams a connection may read, by name: all of them without users, else those whose every
/// subject its user may subscribe to. Every port lists streams through this.
pub fn readable_streams(shard: &SessionShard, conn: &Conn) -> Vec<crate::api::StreamConfig> {
    let mut all = shard.streams.streams.borrow().all();
    all.retain(|s| conn.may_read_stream(s));
    all
}

/// Where a consumer's message is, for an ack.
#[derive(Debug, Clone, Copy)]
pub struct AckAt<'a> {
    pub stream: &'a str,
    pub consumer: &'a str,
    pub partition: u32,
    pub offset: u64,
}

/// Acks, naks, marks in progress or terminates a consumer's message: only a connection that
/// attached to the consumer may, so one tenant cannot settle another's work.
pub fn consumer_ack(
    shard: &Rc<SessionShard>,
    conn: &Rc<Conn>,
    at: AckAt<'_>,
    kind: AckKind,
    delay_ms: u64,
) -> Result<(), Refusal> {
    member_of(shard, conn, at.stream, at.consumer)?;
    apply_ack(shard, at, kind, delay_ms);
    Ok(())
}

fn apply_ack(shard: &SessionShard, at: AckAt<'_>, kind: AckKind, delay_ms: u64) {
    streams::consumer_ack(
        &shard.streams,
        at.stream,
        at.consumer,
        at.partition,
        at.offset,
        kind,
        delay_ms,
    );
}

/// Acks through the JetStream API: a connection attached to the consumer may, and so may any
/// other whose user may read the stream (a push consumer's queue workers, as on nats-server, where
/// permission to publish the ack subject decides).
pub fn consumer_ack_as_reader(
    shard: &Rc<SessionShard>,
    conn: &Rc<Conn>,
    at: AckAt<'_>,
    kind: AckKind,
    delay_ms: u64,
) -> Result<(), Refusal> {
    if !conn.is_member(at.stream, at.consumer) {
        let config = shard.streams.streams.borrow().config(at.stream);
        if !config.is_some_and(|config| conn.may_read_stream(&config)) {
            return member_of(shard, conn, at.stream, at.consumer);
        }
    }
    apply_ack(shard, at, kind, delay_ms);
    Ok(())
}

/// Whether the acks sent before for a consumer's partition are kept: in its state written down
/// and, for a replicated stream, on a majority of its copies' nodes. For an ack that asks to know
/// it was applied: it is answered then, as nats-server answers once the ack is replicated.
pub async fn consumer_ack_kept(
    shard: &Rc<SessionShard>,
    stream: &str,
    consumer: &str,
    partition: u32,
) -> bool {
    streams::consumer_ack_kept(&shard.streams, stream, consumer, partition).await
}

fn member_of(
    shard: &SessionShard,
    conn: &Conn,
    stream: &str,
    consumer: &str,
) -> Result<(), Refusal> {
    if conn.is_member(stream, consumer) {
        return Ok(());
    }
    add(&shard.core.stats.permission_errors, 1);
    let refusal = Refusal::NotAMember {
        stream: stream.to_string(),
        consumer: consumer.to_string(),
    };
    tracing::debug!(shard = shard.core.id.0, conn = conn.client.id, %refusal, "refused");
    Err(refusal)
}
