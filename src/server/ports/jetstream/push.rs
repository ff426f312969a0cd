//! Push consumers through the JetStream API: messages go to a deliver subject as they come, while
//! someone listens there. A push consumer's member is the connection that created it, with a
//! [`Pusher`] as its delivery sink: it holds credit only while that connection subscribes to the
//! deliver subject (nats-server delivers only while the deliver subject has interest; clients
//! create the consumer first and subscribe after), tops it up as deliveries go out, sends idle
//! heartbeats, and with `headers_only` sends the headers and the size of each message without
//! its body. An ephemeral consumer (no durable name) is deleted when its connection goes.

use std::cell::Cell;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_protocol::jetstream::headers::{HeaderBuilder, LAST_CONSUMER, LAST_STREAM};
use sluice_protocol::jetstream::json::{self, ApiError};
use sluice_protocol::op::{Op, Publish};
use sluice_protocol::{ArchivedOp, Frame};

use super::consumers::join_as_member;
use super::pull::{ack_subject, size_only_headers, DeliveryTarget};
use crate::api::{self, ConsumerName};
use crate::server::core::client::Client;
use crate::server::session::connection::Conn;
use crate::server::session::{self, SessionShard};
use crate::server::streams::{self, Delivered, DeliverySink};

/// Messages a push consumer may have on their way to its connection: refilled as they go out.
const PUSH_WINDOW: u64 = 1024;

/// How often a push consumer looks for interest in its deliver subject and tops up its credit.
const PUSH_TICK: Duration = Duration::from_millis(10);

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
    /// Credit granted and not yet spent.
    granted: Cell<u64>,
    /// The consumer and stream sequences of the last delivery, for heartbeats.
    last: Cell<(u64, u64)>,
    active: Cell<Instant>,
    _ephemeral: Option<Ephemeral>,
}

impl Pusher {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shard: &Rc<SessionShard>,
        conn: &Rc<Conn>,
        stream: &str,
        consumer: &str,
        sid: u64,
        partitions: u32,
        config: &json::ConsumerConfig,
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

    /// Keeps the credit topped up while the deliver subject has interest, and takes it back while
    /// it has none; sends idle heartbeats. Ends with the pusher or its connection.
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
            match p.listening() {
                false if p.granted.get() > 0 => {
                    streams::consumer_take_back(
                        &p.shard.streams,
                        p.client.id,
                        p.sid,
                        p.granted.replace(0),
                    );
                }
                false => {}
                true => {
                    let want = PUSH_WINDOW - p.granted.get();
                    if want >= PUSH_WINDOW / 2 {
                        let which = (p.stream.as_str(), p.consumer.as_str(), p.sid);
                        if session::consumer_pull(&p.shard, &conn, which, want, 0).is_ok() {
                            p.granted.set(p.granted.get() + want);
                        }
                    }
                    if !p.heartbeat.is_zero() && p.active.get().elapsed() >= p.heartbeat {
                        p.idle_heartbeat();
                    }
                }
            }
        }
    }

    fn idle_heartbeat(&self) {
        let (consumer_seq, stream_seq) = self.last.get();
        let mut headers = HeaderBuilder::default();
        headers
            .add_u64(LAST_CONSUMER, consumer_seq)
            .add_u64(LAST_STREAM, stream_seq);
        let block = headers.build_status(100, "Idle Heartbeat");
        self.shard.core.route_made(&self.deliver_to, &block, b"");
        self.active.set(Instant::now());
    }
}

impl DeliverySink for Pusher {
    fn deliver(&self, delivery: &Delivered, frame: &Bytes) -> bool {
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
        true
    }
}

/// Attaches a connection to a push consumer it creates: its deliveries go to the deliver
/// subject through a pusher.
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
    let pusher = join_as_member(shard, conn, stream, consumer, native, |sid, partitions| {
        Pusher::new(shard, conn, stream, consumer, sid, partitions, config)
    })
    .await?;
    glommio::spawn_local(Pusher::run(Rc::downgrade(&pusher))).detach();
    Ok(())
}
