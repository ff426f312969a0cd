//! Publishes that a stream captures: sent to the partition their subject hashes to, on whichever
//! shard owns it, and acked in order once stored (a native `PubAck`, a JetStream JSON ack on the
//! reply subject, or an answer to the broker's own question).

use super::*;

/// Whether a stream captures `subject`.
pub fn captures(shard: &StreamShard, subject: &str) -> bool {
    shard.streams.borrow().capturing(subject).is_some()
}

/// Stores a publish that a stream captures; with `ack`, the connection gets a `PubAck` in order.
/// Returns whether a stream captured it.
pub fn capture<C: AckWaiter + 'static>(
    shard: &Rc<StreamShard>,
    conn: &Rc<C>,
    body: &Bytes,
    subject: &str,
    ack: bool,
) -> bool {
    let stream = shard.streams.borrow().capturing(subject);
    let seq = ack.then(|| conn.next_ack());
    let Some(stream) = stream else {
        if let Some(seq) = seq {
            let message = format!("no stream captures subject {subject}");
            complete_with_error(shard, &**conn, seq, ErrorCode::NoStream, message);
        }
        return false;
    };
    send_to_partition(
        shard,
        stream,
        subject,
        body.clone(),
        seq.map(|seq| AckTo::Conn(conn.clone() as Rc<dyn AckWaiter>, seq)),
    );
    true
}

/// Answers a publish that asked for an ack, and will not be stored, with an error ack in its turn.
pub fn refuse_ack(shard: &Rc<StreamShard>, conn: &dyn AckWaiter, code: ErrorCode, message: &str) {
    let seq = conn.next_ack();
    complete_with_error(shard, conn, seq, code, message.to_string());
}

fn complete_with_error(
    shard: &StreamShard,
    conn: &dyn AckWaiter,
    seq: u64,
    code: ErrorCode,
    message: String,
) {
    let frame = ack_frame(
        shard,
        &AckOutcome::plain(Arc::from(""), 0, Err((code, message))),
    );
    conn.complete_ack(seq, frame);
}

/// Stores a publish from a NATS client if a stream captures it; with a reply subject, the client
/// gets a JSON ack there (`{"stream":..,"seq":..}`, as JetStream clients expect). Returns whether a
/// stream captured it.
pub fn capture_with_reply(
    shard: &Rc<StreamShard>,
    body: &Bytes,
    subject: &str,
    reply: Option<&str>,
) -> bool {
    let stream = shard.streams.borrow().capturing(subject);
    let Some(stream) = stream else {
        return false;
    };
    let ack = reply.map(|r| AckTo::Reply(r.to_string()));
    send_to_partition(shard, stream, subject, body.clone(), ack);
    true
}

/// Who gets a stored publish's ack, seen from the shard it arrived on.
pub enum AckTo {
    /// A native connection of this shard, and its ack number.
    Conn(Rc<dyn AckWaiter>, u64),
    /// A reply subject.
    Reply(String),
    /// A call registered on this shard (the broker waits for its own store).
    Call(u64),
}

/// How a peer is told where an ack goes.
#[derive(Debug, Clone)]
pub enum ReplyTo {
    Conn {
        conn: u64,
        seq: u64,
    },
    Subject(String),
    Call(u64),
    /// Answered once ordered, not durable (see `Done::Ordered`).
    Ordered(u64),
}

/// Sends a body to the partition its subject belongs to, on whichever shard owns it; `ack` names
/// the connection (of this shard) and ack number that wait for the outcome.
pub(super) fn send_to_partition(
    shard: &Rc<StreamShard>,
    stream: Arc<StreamConfig>,
    subject: &str,
    body: Bytes,
    ack: Option<AckTo>,
) {
    let partition = partition_for(subject, stream.partitions);
    let owner = ShardId(shard_for(&stream.name, partition, shard.core.shards as u32));
    if owner == shard.core.id {
        let done = ack.map(|ack| match ack {
            AckTo::Conn(conn, seq) => Done::Local { conn, seq },
            AckTo::Reply(subject) => Done::Reply { subject },
            AckTo::Call(call) => Done::Call {
                shard: shard.core.id,
                call,
            },
        });
        ensure_partition(shard, &stream, partition).enqueue(shard, body, done);
    } else {
        let reply = ack.map(|ack| match ack {
            AckTo::Conn(conn, seq) => ReplyTo::Conn {
                conn: conn.id(),
                seq,
            },
            AckTo::Reply(subject) => ReplyTo::Subject(subject),
            AckTo::Call(call) => ReplyTo::Call(call),
        });
        shard.push_to(
            owner,
            StreamItem::Append {
                stream,
                partition,
                body,
                count: 1,
                reply,
            },
        );
    }
}

/// Stores a publish that another shard captured for a partition this shard owns.
pub fn append_from_peer(
    shard: &Rc<StreamShard>,
    from: ShardId,
    stream: Arc<StreamConfig>,
    partition: u32,
    body: Bytes,
    count: u32,
    reply: Option<ReplyTo>,
) {
    let done = reply.map(|reply| match reply {
        ReplyTo::Conn { conn, seq } => Done::Remote {
            shard: from,
            conn,
            seq,
        },
        ReplyTo::Subject(subject) => Done::Reply { subject },
        ReplyTo::Call(call) => Done::Call { shard: from, call },
        ReplyTo::Ordered(call) => Done::Ordered { shard: from, call },
    });
    let part = ensure_partition(shard, &stream, partition);
    part.enqueue_span(shard, body, count, done);
}

/// Delivers an ack to whoever waits for it.
pub fn resolve(shard: &Rc<StreamShard>, done: Done, outcome: AckOutcome) {
    match done {
        Done::Local { conn, seq } => conn.complete_ack(seq, ack_frame(shard, &outcome)),
        Done::Remote {
            shard: to,
            conn,
            seq,
        } => shard.push_to(
            to,
            StreamItem::Appended {
                conn,
                seq,
                ack: outcome,
            },
        ),
        Done::Reply { subject } => reply_json(shard, &subject, &outcome),
        Done::Peer { node, id, .. } => {
            let result = match &outcome.result {
                Ok(offset) => Ok(*offset),
                Err((code, why)) => Err((code.as_u16(), why.as_str())),
            };
            shard.cluster_send(&node, super::replica::forwarded_frame(id, result));
        }
        Done::Call { shard: to, call } | Done::Ordered { shard: to, call } => {
            let reply = PartitionReply::Appended(outcome);
            if to == shard.core.id {
                shard.answer_call(call, reply);
            } else {
                shard.push_to(to, CallItem::CallReply { call, reply });
            }
        }
    }
}

/// Publishes a JetStream-style JSON ack on a reply subject.
fn reply_json(shard: &Rc<StreamShard>, subject: &str, outcome: &AckOutcome) {
    let json = match &outcome.result {
        // Written directly: one per stored publish, where building a JSON value showed.
        Ok(offset) => {
            let partitions = shard
                .streams
                .borrow()
                .config(&outcome.stream)
                .map_or(1, |c| c.partitions);
            let seq = seq_of(outcome.partition, *offset, partitions).unwrap_or(u64::MAX);
            let mut out = Vec::with_capacity(96);
            out.extend_from_slice(b"{\"stream\":");
            let _ = serde_json::to_writer(&mut out, &*outcome.stream);
            let mut n = itoa::Buffer::new();
            out.extend_from_slice(b",\"seq\":");
            out.extend_from_slice(n.format(seq).as_bytes());
            if outcome.duplicate {
                out.extend_from_slice(b",\"duplicate\":true");
            }
            out.extend_from_slice(b",\"partition\":");
            out.extend_from_slice(n.format(outcome.partition).as_bytes());
            out.extend_from_slice(b",\"offset\":");
            out.extend_from_slice(n.format(*offset).as_bytes());
            out.push(b'}');
            out
        }
        Err((code, message)) => {
            let error = match &outcome.api_error {
                Some(error) => (**error).clone(),
                None => match code {
                    ErrorCode::PayloadTooLarge => ApiError::new(400, 10054, message.clone()),
                    // nats-server's "stream store failed".
                    _ => ApiError::new(503, 10077, message.clone()),
                },
            };
            let refusal = PubAckError {
                error,
                stream: outcome.stream.to_string(),
                seq: 0,
            };
            serde_json::to_vec(&refusal).unwrap_or_default()
        }
    };
    shard.core.route_made(subject, b"", &json);
}

/// The `PubAck` frame for an outcome.
pub fn ack_frame(shard: &StreamShard, outcome: &AckOutcome) -> Bytes {
    let (offset, code, error) = match &outcome.result {
        Ok(offset) => (*offset, 0, ""),
        Err((code, message)) => (0, code.as_u16(), message.as_str()),
    };
    shard.core.encode(&Op::PubAck(PubAck {
        stream: &outcome.stream,
        partition: outcome.partition,
        offset,
        code,
        error,
    }))
}
