//! Push consumers through the JetStream API: messages go to a deliver subject as they come, while
//! someone listens there, with a [`Pusher`] as the member's delivery sink: it holds credit only
//! while someone, on any shard, subscribes to the deliver subject (nats-server delivers only while
//! the deliver subject has interest; clients create the consumer first and subscribe after), tops
//! it up as deliveries go out, sends idle heartbeats, paces itself by the client's answers to flow
//! control requests, and with `headers_only` sends the headers and the size of each message
//! without its body.
//!
//! A durable push consumer delivers for as long as it exists, whoever is connected: its member is
//! a connection the broker holds itself, on the shard that owns the stream's first partition
//! ([`Hosts`]), made when the consumer appears there (created, or found at start) and dropped
//! when it goes. An ephemeral one's member is the connection that created it, and it is deleted
//! when that connection goes.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_protocol::jetstream::headers::{
    HeaderBuilder, CONSUMER_STALLED, LAST_CONSUMER, LAST_STREAM,
};
use sluice_protocol::jetstream::json::{self, ApiError};
use sluice_protocol::op::{Op, Publish};
use sluice_protocol::{ArchivedOp, Frame};

use super::consumers::join_as_member;
use super::pull::{ack_subject, size_only_headers, DeliveryTarget};
use crate::api::{self, ConsumerName};
use crate::server::core::client::Client;
use crate::server::core::outbound::Outbound;
use crate::server::session::connection::Conn;
use crate::server::session::{self, NewSub, SessionShard};
use crate::server::streams::{self, ConsumerHost, Delivered, DeliverySink};

/// Messages a push consumer may have on their way to its connection: refilled as they go out.
const PUSH_WINDOW: u64 = 1024;

/// How often a push consumer looks for interest in its deliver subject and tops up its credit.
const PUSH_TICK: Duration = Duration::from_millis(10);

/// Most bytes a flow-controlled push consumer sends before the client answers (nats-server's);
/// the window starts at a sixteenth of it and doubles with each answer.
const FLOW_BYTES_MAX: u64 = 32 * 1024 * 1024;

/// Where clients answer flow control requests: `$JS.FC.<stream>.<consumer>.<token>`.
pub const FLOW_PREFIX: &str = "$JS.FC.";

/// Subscription ids of the broker's own connections.
const HOSTED_FLOW_SID: u64 = 1;

/// Deletes an ephemeral consumer when the last of its holders goes.
pub struct Ephemeral {
    pub shard: Rc<SessionShard>,
    pub stream: String,
    pub consumer: String,
}

impl Drop for Ephemeral {
    fn drop(&mut self) {
        // A stopping shard is taking its connections down and spawns nothing more; the consumer
        // stays until deleted (as a durable one would).
        if self.shard.core.stopping.is_set() {
            return;
        }
        let shard = self.shard.clone();
        let Ok(body) = serde_json::to_vec(&ConsumerName {
            stream: self.stream.clone(),
            name: self.consumer.clone(),
        }) else {
            return;
        };
        let (stream, consumer) = (self.stream.clone(), self.consumer.clone());
        glommio::spawn_local(async move {
            let (code, _) = streams::call_api(&shard.streams, api::CONSUMER_DELETE, &body).await;
            tracing::debug!(
                stream,
                consumer,
                code,
                "ephemeral consumer deleted with its connection"
            );
        })
        .detach();
    }
}

/// A flow-controlled consumer's window: bytes sent since the client last answered, and the request
/// it has not answered yet.
struct Flow {
    /// Bytes sent and not yet answered for.
    sent: Cell<u64>,
    window: Cell<u64>,
    /// The unanswered request's reply subject, and the bytes its answer accounts for.
    asked: RefCell<Option<(String, u64)>>,
}

impl Flow {
    fn new() -> Flow {
        Flow {
            sent: Cell::new(0),
            window: Cell::new(FLOW_BYTES_MAX / 16),
            asked: RefCell::new(None),
        }
    }

    /// Whether it must wait for an answer before sending more.
    fn stalled(&self) -> bool {
        self.sent.get() >= self.window.get()
    }

    /// Counts `bytes` sent; returns the reply subject of a request to send now, as nats-server
    /// sends one past half the window.
    fn count(&self, bytes: u64, stream: &str, consumer: &str) -> Option<String> {
        let sent = self.sent.get() + bytes;
        self.sent.set(sent);
        let mut asked = self.asked.borrow_mut();
        match &mut *asked {
            None if sent > self.window.get() / 2 => {
                let token: String = (0..4).map(|_| fastrand::alphanumeric()).collect();
                let reply = format!("{FLOW_PREFIX}{stream}.{consumer}.{token}");
                *asked = Some((reply.clone(), sent));
                Some(reply)
            }
            // Far past the request: its answer will account for more.
            Some((_, accounts)) if sent - *accounts >= self.window.get() => {
                *accounts += bytes;
                None
            }
            _ => None,
        }
    }

    /// The unanswered request, if any.
    fn asked(&self) -> Option<String> {
        self.asked.borrow().as_ref().map(|(reply, _)| reply.clone())
    }

    /// An answer to `subject`: frees what it accounts for and widens the window. False if it
    /// answers no request now open (an old one, or a stranger's).
    fn answered(&self, subject: &str) -> bool {
        let accounts = {
            let mut asked = self.asked.borrow_mut();
            if asked.as_ref().is_none_or(|(reply, _)| reply != subject) {
                return false;
            }
            asked.take().map_or(0, |(_, accounts)| accounts)
        };
        self.sent.set(self.sent.get().saturating_sub(accounts));
        self.window.set((self.window.get() * 2).min(FLOW_BYTES_MAX));
        true
    }
}

/// A push consumer's member: where its deliveries go.
pub struct Pusher {
    shard: Rc<SessionShard>,
    conn: Weak<Conn>,
    client: Rc<Client>,
    stream: String,
    consumer: String,
    sid: u64,
    partitions: u32,
    /// Where its deliveries go.
    deliver_to: Arc<str>,
    headers_only: bool,
    heartbeat: Duration,
    /// With `flow_control`.
    flow: Option<Flow>,
    /// Whether its connection is the broker's own: answers to flow control arrive in its output.
    hosted: bool,
    /// Credit granted and not yet spent.
    granted: Cell<u64>,
    /// The consumer and stream sequences of the last delivery, for heartbeats.
    last: Cell<(u64, u64)>,
    active: Cell<Instant>,
    _ephemeral: Option<Ephemeral>,
}

impl Pusher {
    #[allow(clippy::too_many_arguments)]
    fn new(
        shard: &Rc<SessionShard>,
        conn: &Rc<Conn>,
        stream: &str,
        consumer: &str,
        sid: u64,
        partitions: u32,
        config: &json::ConsumerConfig,
        hosted: bool,
    ) -> Pusher {
        let ephemeral = (!config.is_durable()).then(|| Ephemeral {
            shard: shard.clone(),
            stream: stream.to_owned(),
            consumer: consumer.to_owned(),
        });
        Pusher {
            shard: shard.clone(),
            conn: Rc::downgrade(conn),
            client: conn.client.clone(),
            stream: stream.to_owned(),
            consumer: consumer.to_owned(),
            sid,
            partitions,
            deliver_to: Arc::from(config.deliver_subject.as_deref().unwrap_or_default()),
            headers_only: config.headers_only,
            heartbeat: Duration::from_nanos(u64::try_from(config.idle_heartbeat).unwrap_or(0)),
            flow: config.flow_control.then(Flow::new),
            hosted,
            granted: Cell::new(0),
            last: Cell::new((0, 0)),
            active: Cell::new(Instant::now()),
            _ephemeral: ephemeral,
        }
    }

    /// Whether anyone subscribes to the deliver subject, on any shard.
    fn listening(&self) -> bool {
        self.shard.core.has_interest(&self.deliver_to)
    }

    fn stalled(&self) -> bool {
        self.flow.as_ref().is_some_and(Flow::stalled)
    }

    /// An answer to a flow control request.
    pub fn flow_answered(&self, subject: &str) {
        if let Some(flow) = &self.flow {
            flow.answered(subject);
        }
    }

    /// Keeps the credit topped up while the deliver subject has interest and the client is not
    /// behind on flow control, and takes it back otherwise; sends idle heartbeats. Ends with the
    /// pusher or its connection.
    pub async fn run(pusher: Weak<Pusher>) {
        loop {
            glommio::timer::sleep(PUSH_TICK).await;
            let Some(p) = pusher.upgrade() else {
                return;
            };
            let Some(conn) = p.conn.upgrade() else {
                return;
            };
            if p.client.done.is_set() {
                return;
            }
            if p.hosted {
                p.read_answers();
            }
            let listening = p.listening();
            if !listening || p.stalled() {
                p.hold();
            } else {
                let want = PUSH_WINDOW - p.granted.get();
                if want >= PUSH_WINDOW / 2 {
                    let which = (p.stream.as_str(), p.consumer.as_str(), p.sid);
                    if session::consumer_pull(&p.shard, &conn, which, want, 0).is_ok() {
                        p.granted.set(p.granted.get() + want);
                    }
                }
            }
            if listening && !p.heartbeat.is_zero() && p.active.get().elapsed() >= p.heartbeat {
                p.idle_heartbeat();
            }
        }
    }

    /// Takes back the credit it holds: nothing is delivered until it asks again.
    fn hold(&self) {
        let granted = self.granted.replace(0);
        if granted > 0 {
            streams::consumer_take_back(&self.shard.streams, self.client.id, self.sid, granted);
        }
    }

    /// A hosted pusher's output holds what its flow subscription received: the clients' answers.
    fn read_answers(&self) {
        let answers = self.client.out.take();
        let (Some(flow), false) = (&self.flow, answers.is_empty()) else {
            return;
        };
        if let Some(asked) = flow.asked() {
            let subject = asked.as_bytes();
            if answers.windows(subject.len()).any(|w| w == subject) {
                flow.answered(&asked);
            }
        }
    }

    /// A heartbeat: the last delivery's sequences, and the request the client has not answered.
    fn idle_heartbeat(&self) {
        let (consumer_seq, stream_seq) = self.last.get();
        let mut headers = HeaderBuilder::default();
        headers
            .add_u64(LAST_CONSUMER, consumer_seq)
            .add_u64(LAST_STREAM, stream_seq);
        if let Some(asked) = self.flow.as_ref().and_then(Flow::asked) {
            headers.add(CONSUMER_STALLED, &asked);
        }
        let block = headers.build_status(100, "Idle Heartbeat");
        self.shard.core.route_made(&self.deliver_to, &block, b"");
        self.active.set(Instant::now());
    }

    /// Asks the client to answer on `reply` once it has taken what came before.
    fn ask(&self, reply: &str) {
        let message = self.shard.core.encode_frame(&Op::Pub(Publish {
            subject: &self.deliver_to,
            reply: Some(reply),
            headers: b"NATS/1.0 100 FlowControl Request\r\n\r\n",
            payload: b"",
            ack: false,
        }));
        self.shard.core.route_to(&message, &self.deliver_to);
    }
}

impl DeliverySink for Pusher {
    fn deliver(&self, delivery: &Delivered, frame: &Bytes) -> bool {
        // Past its flow control window it still takes what its credit let through (at most
        // `PUSH_WINDOW` messages) rather than hand it back out of order; no more credit comes
        // until the client answers.
        if !self.listening() {
            return false;
        }
        let Ok(frame) = Frame::check(frame.clone(), u32::MAX) else {
            return false;
        };
        let ArchivedOp::Pub(publish) = frame.op() else {
            return false;
        };
        let target = DeliveryTarget {
            stream: &self.stream,
            consumer: &self.consumer,
            partitions: self.partitions,
        };
        let (ack, stream_seq) = ack_subject(&target, delivery);
        let size_only;
        let (headers, payload) = if self.headers_only {
            size_only = size_only_headers(publish.headers(), publish.payload().len());
            (&size_only[..], &b""[..])
        } else {
            (publish.headers(), publish.payload())
        };
        // Its stored subject, routed by the deliver subject: whoever subscribes there gets it,
        // on any shard, one member of a queue group (`deliver_group`) each time.
        let message = self.shard.core.encode_frame(&Op::Pub(Publish {
            subject: publish.subject(),
            reply: Some(&ack),
            headers,
            payload,
            ack: false,
        }));
        if !self.shard.core.route_to(&message, &self.deliver_to) {
            return false;
        }
        self.granted.set(self.granted.get().saturating_sub(1));
        self.last.set((delivery.consumer_seq, stream_seq));
        self.active.set(Instant::now());
        if let Some(flow) = &self.flow {
            let bytes = publish.subject().len() + ack.len() + headers.len() + payload.len();
            if let Some(reply) = flow.count(bytes as u64, &self.stream, &self.consumer) {
                self.ask(&reply);
            }
        }
        true
    }
}

/// The member a creating connection keeps of a hosted consumer: it made the consumer, and takes
/// no deliveries (the broker's own member does).
struct Creator;

impl DeliverySink for Creator {
    fn deliver(&self, _: &Delivered, _: &Bytes) -> bool {
        false
    }
}

/// The durable push consumers this shard delivers itself, by (stream, consumer): each with a
/// connection of its own that no socket reads.
pub struct Hosts {
    shard: Weak<SessionShard>,
    conns: RefCell<HashMap<(String, String), Rc<Conn>>>,
}

impl Hosts {
    pub fn new(shard: &Rc<SessionShard>) -> Hosts {
        Hosts {
            shard: Rc::downgrade(shard),
            conns: RefCell::new(HashMap::new()),
        }
    }
}

impl ConsumerHost for Hosts {
    fn appeared(&self, config: &Arc<api::ConsumerConfig>) {
        let key = (config.stream.clone(), config.name.clone());
        let (Some(shard), Some(js)) = (self.shard.upgrade(), config.jetstream.clone()) else {
            return;
        };
        if shard.core.stopping.is_set() || self.conns.borrow().contains_key(&key) {
            return;
        }
        let out = Outbound::new(
            shard.core.config.pending_bytes_max,
            shard.core.config.write_deadline,
        );
        let client = Rc::new(Client::new(shard.core.internal_id(), out));
        let conn = Rc::new(Conn::new(client, 0, None));
        session::open(&shard, &conn);
        self.conns.borrow_mut().insert(key, conn.clone());
        let config = (**config).clone();
        glommio::spawn_local(async move {
            let (stream, consumer) = (config.stream.clone(), config.name.clone());
            // Answers to its flow control requests, from any shard, land in its output.
            if js.flow_control {
                let pattern = format!("{FLOW_PREFIX}{stream}.{consumer}.*");
                let flow = NewSub {
                    sid: HOSTED_FLOW_SID,
                    pattern: &pattern,
                    queue: None,
                    nats_sid: Some(Bytes::from_static(b"1")),
                };
                let _ = session::subscribe(&shard, &conn, flow);
            }
            let joined = join_as_member(&shard, &conn, &stream, &consumer, config, |sid, parts| {
                Pusher::new(&shard, &conn, &stream, &consumer, sid, parts, &js, true)
            })
            .await;
            match joined {
                Ok(pusher) => {
                    tracing::debug!(
                        shard = shard.core.id.0,
                        stream,
                        consumer,
                        "the broker delivers a durable push consumer"
                    );
                    glommio::spawn_local(Pusher::run(Rc::downgrade(&pusher))).detach();
                }
                Err(e) => tracing::warn!(shard = shard.core.id.0, stream, consumer,
                    error = %e.description, "a durable push consumer could not be delivered"),
            }
        })
        .detach();
    }

    fn gone(&self, stream: &str, consumer: &str) {
        let conn = self
            .conns
            .borrow_mut()
            .remove(&(stream.to_owned(), consumer.to_owned()));
        let (Some(conn), Some(shard)) = (conn, self.shard.upgrade()) else {
            return;
        };
        glommio::spawn_local(async move {
            conn.client.done.set();
            session::close(&shard, &conn);
        })
        .detach();
    }
}

/// Where an answer to a flow control request goes: the creating connection's pusher of an
/// ephemeral consumer, if it is this one. False if it is not (a durable consumer's member then
/// gets the answer as a message).
pub fn flow_answered(conn: &Conn, subject: &str) -> bool {
    let Some(rest) = subject.strip_prefix(FLOW_PREFIX) else {
        return false;
    };
    let mut parts = rest.split('.');
    let (Some(stream), Some(consumer)) = (parts.next(), parts.next()) else {
        return false;
    };
    let pusher = conn
        .pullers
        .borrow()
        .iter()
        .find(|((s, c), _)| s == stream && c == consumer)
        .and_then(|(_, p)| p.clone().downcast::<Pusher>().ok());
    match pusher {
        Some(pusher) => {
            pusher.flow_answered(subject);
            true
        }
        None => false,
    }
}

/// Attaches a connection to a push consumer it creates. An ephemeral one delivers through a
/// pusher of this connection; a durable one through the broker's own member, and this
/// connection only made it.
pub async fn attach(
    shard: &Rc<SessionShard>,
    conn: &Rc<Conn>,
    stream: &str,
    consumer: &str,
    native: api::ConsumerConfig,
    config: &json::ConsumerConfig,
) -> Result<(), ApiError> {
    if conn
        .pullers
        .borrow()
        .iter()
        .any(|((s, c), _)| s == stream && c == consumer)
    {
        return Ok(());
    }
    if config.is_durable() {
        join_as_member(shard, conn, stream, consumer, native, |_, _| Creator).await?;
        return Ok(());
    }
    let pusher = join_as_member(shard, conn, stream, consumer, native, |sid, partitions| {
        Pusher::new(
            shard, conn, stream, consumer, sid, partitions, config, false,
        )
    })
    .await?;
    glommio::spawn_local(Pusher::run(Rc::downgrade(&pusher))).detach();
    Ok(())
}
