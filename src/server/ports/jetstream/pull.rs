//! A connection's membership of a pull consumer: its open pull requests, in order, and how each
//! delivery is written to the head request's reply subject as a NATS `MSG` (the stored subject,
//! the reply subscription's sid, an ack subject that says where the message came from). A request
//! ends when its batch is filled, when its `max_bytes` is spent, or with a `408` when it expires
//! or a `404` when a `no_wait` request runs dry, with idle heartbeats meanwhile; what it did not
//! use is taken back from the member's credit.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use sluice_protocol::jetstream::ack::PullRequest;
use sluice_protocol::jetstream::headers::{
    HeaderBuilder, LAST_CONSUMER, LAST_STREAM, MSG_SIZE, PENDING_BYTES, PENDING_MESSAGES,
};
use sluice_protocol::jetstream::seq::seq_of;
use sluice_protocol::jetstream::subject::AckReply;
use sluice_protocol::{ArchivedOp, Frame};

use crate::server::core::client::Client;
use crate::server::core::outbound::Push;
use crate::server::session::connection::Conn;
use crate::server::session::{self, SessionShard};
use crate::server::streams::{self, Delivered, DeliverySink};

/// How long a `no_wait` pull without an expiry waits for deliveries before it ends with `404`.
const NO_WAIT_IDLE: Duration = Duration::from_millis(20);

/// One open pull request.
pub(super) struct Open {
    pub(super) id: u64,
    /// The reply subscription's sid on this connection.
    pub(super) sid: Bytes,
    pub(super) reply: String,
    /// Messages still wanted.
    pub(super) left: u64,
    /// Bytes still wanted (subject, ack subject, headers and body, as nats-server counts them);
    /// `None` without a `max_bytes`.
    pub(super) bytes_left: Option<u64>,
    pub(super) no_wait: bool,
    /// When it ends, if it does by time.
    pub(super) deadline: Option<Instant>,
    /// When it last got a message (or was made).
    pub(super) active: Instant,
}

/// A connection's membership of one JetStream consumer: its open pull requests, in order.
pub struct Puller {
    /// Deletes the consumer with this connection if it is ephemeral.
    pub(super) _ephemeral: Option<super::push::Ephemeral>,
    pub(super) shard: Weak<SessionShard>,
    pub(super) client: Rc<Client>,
    pub(super) stream: String,
    pub(super) consumer: String,
    pub(super) sid: u64,
    pub(super) partitions: u32,
    pub(super) requests: RefCell<VecDeque<Open>>,
    /// The consumer and stream sequences of the last delivery, for heartbeats.
    pub(super) last: Cell<(u64, u64)>,
    pub(super) next_request: Cell<u64>,
}

impl Puller {
    /// Opens a pull request: its batch becomes credit, and a task ends it on time.
    pub(super) fn add(
        self: &Rc<Self>,
        shard: &Rc<SessionShard>,
        conn: &Rc<Conn>,
        reply: &str,
        request: PullRequest,
    ) {
        // The request's messages go to the reply subject's subscription on this connection; a
        // request whose reply nobody here listens to is dropped, as nats-server drops one whose
        // inbox lost interest.
        let Some(sid) = shard
            .core
            .subs_of(conn.client.id, reply)
            .into_iter()
            .find_map(|s| s.nats_sid.clone())
        else {
            return;
        };
        let id = self.next_request.get();
        self.next_request.set(id + 1);
        let now = Instant::now();
        let expires = (request.expires_ns > 0).then(|| Duration::from_nanos(request.expires_ns));
        let deadline = match (expires, request.no_wait) {
            (Some(expires), _) => Some(now + expires),
            (None, true) => Some(now + NO_WAIT_IDLE),
            (None, false) => None,
        };
        self.requests.borrow_mut().push_back(Open {
            id,
            sid,
            reply: reply.to_owned(),
            left: request.batch,
            bytes_left: (request.max_bytes > 0).then_some(request.max_bytes),
            no_wait: request.no_wait && expires.is_none(),
            deadline,
            active: now,
        });
        let which = (self.stream.as_str(), self.consumer.as_str(), self.sid);
        if let Err(refusal) = session::consumer_pull(shard, conn, which, request.batch, 0) {
            self.end(id, 409, &refusal.to_string());
            return;
        }
        if deadline.is_some() || request.idle_heartbeat_ns > 0 {
            let puller = self.clone();
            let shard = shard.clone();
            let heartbeat = Duration::from_nanos(request.idle_heartbeat_ns);
            glommio::spawn_local(async move { puller.watch(&shard, id, heartbeat).await }).detach();
        }
    }

    /// Ends request `id` on time (`408`, or `404` for `no_wait`) and sends idle heartbeats while
    /// it waits.
    async fn watch(&self, shard: &Rc<SessionShard>, id: u64, heartbeat: Duration) {
        loop {
            let (deadline, active, no_wait) =
                match self.requests.borrow().iter().find(|r| r.id == id) {
                    Some(r) => (r.deadline, r.active, r.no_wait),
                    None => return,
                };
            let now = Instant::now();
            // A no_wait request ends once deliveries stop coming, not at a fixed time.
            let due = match (deadline, no_wait) {
                (Some(_), true) => Some(active + NO_WAIT_IDLE),
                (deadline, false) => deadline,
                (None, true) => None,
            };
            if due.is_some_and(|d| now >= d) {
                let left = self.end(id, if no_wait { 404 } else { 408 }, "");
                streams::consumer_take_back(&shard.streams, self.client.id, self.sid, left);
                return;
            }
            let mut wake = due.map_or(Duration::from_secs(3600), |d| d - now);
            if !heartbeat.is_zero() {
                let beat_at = active + heartbeat;
                if now >= beat_at {
                    self.heartbeat(id);
                    if let Some(r) = self.requests.borrow_mut().iter_mut().find(|r| r.id == id) {
                        r.active = now;
                    }
                    continue;
                }
                wake = wake.min(beat_at - now);
            }
            glommio::timer::sleep(wake).await;
        }
    }

    /// Ends request `id` with a status; returns the messages it still wanted.
    pub(super) fn end(&self, id: u64, code: u16, description: &str) -> u64 {
        let open = {
            let mut requests = self.requests.borrow_mut();
            let Some(at) = requests.iter().position(|r| r.id == id) else {
                return 0;
            };
            requests.remove(at)
        };
        let Some(open) = open else {
            return 0;
        };
        let description = match (code, description) {
            (408, "") => "Request Timeout",
            (404, "") => "No Messages",
            (_, d) => d,
        };
        let mut headers = HeaderBuilder::default();
        if code == 408 || code == 409 {
            headers
                .add_u64(PENDING_MESSAGES, open.left)
                .add_u64(PENDING_BYTES, open.bytes_left.unwrap_or(0));
        }
        self.write(
            &open.reply,
            &open.sid,
            None,
            &headers.build_status(code, description),
            b"",
        );
        open.left
    }

    fn heartbeat(&self, id: u64) {
        let requests = self.requests.borrow();
        let Some(open) = requests.iter().find(|r| r.id == id) else {
            return;
        };
        let (consumer_seq, stream_seq) = self.last.get();
        let mut headers = HeaderBuilder::default();
        headers
            .add_u64(LAST_CONSUMER, consumer_seq)
            .add_u64(LAST_STREAM, stream_seq);
        self.write(
            &open.reply,
            &open.sid,
            None,
            &headers.build_status(100, "Idle Heartbeat"),
            b"",
        );
    }

    /// Writes a `MSG`/`HMSG` to the connection.
    fn write(
        &self,
        subject: &str,
        sid: &[u8],
        reply: Option<&str>,
        headers: &[u8],
        payload: &[u8],
    ) -> Push {
        let mut line = BytesMut::with_capacity(subject.len() + headers.len() + payload.len() + 96);
        sluice_protocol::nats::encode_msg(
            &mut line,
            subject.as_bytes(),
            sid,
            reply.map(str::as_bytes),
            headers,
            payload,
        );
        self.client.out.push(&line)
    }
}

/// Who a delivery is for: its consumer, and the stream's partitions (to number its messages).
pub(super) struct DeliveryTarget<'a> {
    pub stream: &'a str,
    pub consumer: &'a str,
    pub partitions: u32,
}

/// A delivery's ack subject (it says where the message came from) and its stream sequence.
pub(super) fn ack_subject(target: &DeliveryTarget<'_>, delivery: &Delivered) -> (String, u64) {
    let stream_seq =
        seq_of(delivery.partition, delivery.offset, target.partitions).unwrap_or(u64::MAX);
    let ack = AckReply {
        stream: target.stream,
        consumer: target.consumer,
        delivered: u64::from(delivery.delivered),
        stream_seq,
        consumer_seq: delivery.consumer_seq,
        timestamp_ns: delivery.timestamp_ns,
        pending: delivery.pending,
    }
    .subject();
    (ack, stream_seq)
}

/// The headers of a `headers_only` delivery: the message's own, and its size instead of its body.
pub(super) fn size_only_headers(headers: &[u8], payload_bytes: usize) -> Vec<u8> {
    let mut block = HeaderBuilder::from_block(headers);
    block.add_u64(MSG_SIZE, payload_bytes as u64);
    block.build()
}

/// A delivery as a NATS `MSG` line for subscription `sid`: the stored subject, an ack subject that
/// says where the message came from, and its headers and body (with `headers_only`, its headers
/// and `Nats-Msg-Size` instead of the body).
pub(super) fn delivery_line(
    target: &DeliveryTarget<'_>,
    delivery: &Delivered,
    frame: &Bytes,
    sid: &[u8],
    headers_only: bool,
) -> Option<Line> {
    let frame = Frame::check(frame.clone(), u32::MAX).ok()?;
    let ArchivedOp::Pub(publish) = frame.op() else {
        return None;
    };
    let (ack, stream_seq) = ack_subject(target, delivery);
    let size_only;
    let (headers, payload) = if headers_only {
        size_only = size_only_headers(publish.headers(), publish.payload().len());
        (&size_only[..], &b""[..])
    } else {
        (publish.headers(), publish.payload())
    };
    let mut line =
        BytesMut::with_capacity(publish.subject().len() + headers.len() + payload.len() + 96);
    sluice_protocol::nats::encode_msg(
        &mut line,
        publish.subject().as_bytes(),
        sid,
        Some(ack.as_bytes()),
        headers,
        payload,
    );
    let size = (publish.subject().len() + ack.len() + headers.len() + payload.len()) as u64;
    Some(Line {
        line,
        stream_seq,
        size,
    })
}

/// A delivery rendered for a connection.
pub(super) struct Line {
    pub line: BytesMut,
    /// The message's stream sequence.
    pub stream_seq: u64,
    /// Its size as a pull's `max_bytes` counts it: subject, ack subject, headers and body.
    pub size: u64,
}

impl DeliverySink for Puller {
    fn deliver(&self, delivery: &Delivered, frame: &Bytes) -> bool {
        let mut requests = self.requests.borrow_mut();
        let Some(open) = requests.front_mut() else {
            return false;
        };
        let target = DeliveryTarget {
            stream: &self.stream,
            consumer: &self.consumer,
            partitions: self.partitions,
        };
        let Some(line) = delivery_line(&target, delivery, frame, &open.sid, false) else {
            return false;
        };
        if open.bytes_left.is_some_and(|b| line.size > b) {
            // The request cannot take the next message: it ends, as on nats-server, and the
            // message waits for another.
            let id = open.id;
            drop(requests);
            let left = self.end(id, 409, "Message Size Exceeds MaxBytes");
            self.take_back_later(left);
            return false;
        }
        if !matches!(self.client.out.push(&line.line), Push::Queued) {
            return false;
        }
        self.last.set((delivery.consumer_seq, line.stream_seq));
        open.left -= 1;
        open.active = Instant::now();
        if let Some(bytes) = &mut open.bytes_left {
            *bytes -= line.size;
        }
        match (open.left, open.bytes_left) {
            // Filled with bytes to spare: nats-server says so.
            (0, Some(bytes)) if bytes > 0 => {
                let id = open.id;
                drop(requests);
                self.end(id, 409, "Batch Completed");
            }
            (0, _) => {
                requests.pop_front();
            }
            // Its bytes are spent: it ends here, and what it still wanted goes back.
            (left, Some(0)) => {
                requests.pop_front();
                drop(requests);
                self.take_back_later(left);
            }
            _ => {}
        }
        true
    }
}

impl Puller {
    /// Takes `left` messages of credit back from the member once the delivery in hand is done.
    fn take_back_later(&self, left: u64) {
        let Some(shard) = self.shard.upgrade() else {
            return;
        };
        if left == 0 {
            return;
        }
        let (client, sid) = (self.client.id, self.sid);
        glommio::spawn_local(async move {
            streams::consumer_take_back(&shard.streams, client, sid, left);
        })
        .detach();
    }
}
