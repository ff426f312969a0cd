//! The operations a frame carries.
//!
//! An [`Op`] borrows everything it sends, so that encoding copies each byte once, into the output
//! buffer, and allocates nothing. On the way in, a checked frame is read in place as an
//! [`ArchivedOp`]: strings and payloads are views into the received bytes.
//!
//! Layout: rkyv 0.8 with the `unaligned` and `little_endian` features. Every archived field has an
//! alignment of 1, so a body can be accessed at any offset of a read buffer (frames follow each other
//! with no padding). `archived_op_has_alignment_one` pins that decision.
//!
//! A message delivered to a subscriber travels as two frames: a small [`Op::Msg`] naming the
//! subscription, then the publisher's own [`Op::Pub`] frame, byte for byte as it arrived.

use rkyv::with::{AsString, InlineAsBox, Map};
use rkyv::{Archive, Serialize};

/// First operation of a client: the protocol version it speaks and a name for logs.
#[derive(Archive, Serialize, Debug, Clone, Copy)]
pub struct Connect<'a> {
    /// Must equal [`crate::limits::PROTOCOL_VERSION`].
    pub version: u32,
    /// Free text naming the client, for the server's logs.
    #[rkyv(with = AsString)]
    pub name: &'a str,
    /// Credentials, for a server with users: a user name and password, or a token.
    #[rkyv(with = Map<AsString>)]
    pub user: Option<&'a str>,
    #[rkyv(with = Map<AsString>)]
    pub password: Option<&'a str>,
    #[rkyv(with = Map<AsString>)]
    pub token: Option<&'a str>,
}

/// The server's answer to [`Connect`].
#[derive(Archive, Serialize, Debug, Clone, Copy)]
pub struct Info<'a> {
    /// Identity of this server process.
    #[rkyv(with = AsString)]
    pub server_id: &'a str,
    /// Version of the server software.
    #[rkyv(with = AsString)]
    pub version: &'a str,
    /// Protocol version spoken.
    pub proto: u32,
    /// The shard that holds this connection.
    pub shard: u32,
    /// How many shards the server runs.
    pub shards: u32,
    /// Largest payload the server accepts in one publish.
    pub max_payload: u32,
}

/// A message sent to a subject.
#[derive(Archive, Serialize, Debug, Clone, Copy)]
pub struct Publish<'a> {
    /// Where the message goes; no wildcards.
    #[rkyv(with = AsString)]
    pub subject: &'a str,
    /// Where answers go, for request/reply.
    #[rkyv(with = Map<AsString>)]
    pub reply: Option<&'a str>,
    /// A header block in the NATS format (`NATS/1.0\r\nKey: Value\r\n\r\n`), or empty.
    #[rkyv(with = InlineAsBox)]
    pub headers: &'a [u8],
    /// The message body, opaque to the broker.
    #[rkyv(with = InlineAsBox)]
    pub payload: &'a [u8],
    /// Answer with a [`PubAck`] once the message is stored durably (or with its error). Acks come
    /// back in the order of the publishes that asked for them.
    pub ack: bool,
}

/// The answer to a publish that asked for an ack: where the message was stored, or why not.
#[derive(Archive, Serialize, Debug, Clone, Copy)]
pub struct PubAck<'a> {
    /// The stream that stored the message (empty on error).
    #[rkyv(with = AsString)]
    pub stream: &'a str,
    pub partition: u32,
    pub offset: u64,
    /// 0 on success, else an [`crate::ErrorCode`].
    pub code: u16,
    /// Why it failed; empty on success.
    #[rkyv(with = AsString)]
    pub error: &'a str,
}

/// A request to the server's API (streams, consumers): a verb and a JSON body.
#[derive(Archive, Serialize, Debug, Clone, Copy)]
pub struct ApiRequest<'a> {
    /// Chosen by the client; the reply carries it back.
    pub id: u64,
    /// What to do, e.g. `stream.add`.
    #[rkyv(with = AsString)]
    pub verb: &'a str,
    /// JSON arguments.
    #[rkyv(with = InlineAsBox)]
    pub body: &'a [u8],
}

/// The answer to an [`ApiRequest`].
#[derive(Archive, Serialize, Debug, Clone, Copy)]
pub struct ApiReply<'a> {
    pub id: u64,
    /// 0 on success, else an [`crate::ErrorCode`].
    pub code: u16,
    /// JSON result on success, an error message otherwise.
    #[rkyv(with = InlineAsBox)]
    pub body: &'a [u8],
}

/// Interest in the subjects a pattern matches.
#[derive(Archive, Serialize, Debug, Clone, Copy)]
pub struct Subscribe<'a> {
    /// Client-chosen id, unique on the connection.
    pub sid: u64,
    /// Subject pattern, with `*` and `>` wildcards.
    #[rkyv(with = AsString)]
    pub subject: &'a str,
    /// Queue group: each message goes to one member of the group.
    #[rkyv(with = Map<AsString>)]
    pub queue: Option<&'a str>,
}

/// End of a subscription, now or after `max` more messages.
#[derive(Archive, Serialize, Debug, Clone, Copy)]
pub struct Unsubscribe {
    /// The subscription's id.
    pub sid: u64,
    /// Deliver this many more messages, then end. `None`: end now.
    pub max: Option<u64>,
}

/// An error the server reports. Fatal codes close the connection after the frame.
#[derive(Archive, Serialize, Debug, Clone, Copy)]
pub struct ErrorFrame<'a> {
    /// An [`crate::ErrorCode`] as a number.
    pub code: u16,
    /// Human-readable detail.
    #[rkyv(with = AsString)]
    pub message: &'a str,
}

/// Header of a message a consumer delivers; the stored publish frame follows.
#[derive(Archive, Serialize, Debug, Clone, Copy)]
pub struct StreamMsg {
    /// The consumer subscription it is for.
    pub sid: u64,
    pub partition: u32,
    pub offset: u64,
    /// How many times it has been delivered, this one included.
    pub delivered: u32,
}

/// What a consumer's client says about a delivered message.
#[derive(Archive, Serialize, Debug, Clone, Copy)]
pub struct ConsumerAck<'a> {
    #[rkyv(with = AsString)]
    pub stream: &'a str,
    #[rkyv(with = AsString)]
    pub consumer: &'a str,
    pub partition: u32,
    pub offset: u64,
    /// An [`AckKind`] as a number.
    pub kind: u8,
    /// For a nak: redeliver after this long (0: as soon as possible).
    pub delay_ms: u64,
}

/// A consumer's member asks for `count` more messages (credit): the broker delivers no more than
/// the member asked for, whatever `max_ack_pending` allows.
///
/// Its counts are `u32` so that it is no larger than the largest operation before it: an archived
/// [`Op`] is read from the end of the body, so a larger variant would move every operation's root
/// and break every client that speaks this protocol version.
#[derive(Archive, Serialize, Debug, Clone, Copy)]
pub struct ConsumerPull<'a> {
    #[rkyv(with = AsString)]
    pub stream: &'a str,
    #[rkyv(with = AsString)]
    pub consumer: &'a str,
    /// The subscription id the member attached with.
    pub sid: u64,
    /// How many more messages the member takes; added to what it asked for before.
    pub count: u32,
    /// After this long, credit not yet used lapses (0: it never does).
    pub expires_ms: u32,
}

/// The kinds of [`ConsumerAck`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AckKind {
    /// Done: never deliver it again.
    Ack = 0,
    /// Failed: deliver it again (after the delay).
    Nak = 1,
    /// Still working: restart the ack wait.
    Progress = 2,
    /// Give up on it without processing: never deliver it again.
    Term = 3,
}

impl AckKind {
    /// The kind a wire value stands for.
    pub fn from_u8(value: u8) -> Option<AckKind> {
        match value {
            0 => Some(AckKind::Ack),
            1 => Some(AckKind::Nak),
            2 => Some(AckKind::Progress),
            3 => Some(AckKind::Term),
            _ => None,
        }
    }
}

/// One operation of the protocol.
#[derive(Archive, Serialize, Debug, Clone, Copy)]
#[repr(u8)]
pub enum Op<'a> {
    Connect(Connect<'a>),
    Info(Info<'a>),
    Pub(Publish<'a>),
    Sub(Subscribe<'a>),
    Unsub(Unsubscribe),
    /// Header of a delivered message; the publish frame follows.
    Msg {
        sid: u64,
    },
    Ping,
    Pong,
    Err(ErrorFrame<'a>),
    PubAck(PubAck<'a>),
    Api(ApiRequest<'a>),
    ApiReply(ApiReply<'a>),
    StreamMsg(StreamMsg),
    ConsumerAck(ConsumerAck<'a>),
    /// Credit for a consumer's member. Appended last so that earlier discriminants stay.
    ConsumerPull(ConsumerPull<'a>),
}

impl ArchivedOp<'_> {
    /// A short name of the operation, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            ArchivedOp::Connect(_) => "connect",
            ArchivedOp::Info(_) => "info",
            ArchivedOp::Pub(_) => "pub",
            ArchivedOp::Sub(_) => "sub",
            ArchivedOp::Unsub(_) => "unsub",
            ArchivedOp::Msg { .. } => "msg",
            ArchivedOp::Ping => "ping",
            ArchivedOp::Pong => "pong",
            ArchivedOp::Err(_) => "err",
            ArchivedOp::PubAck(_) => "puback",
            ArchivedOp::Api(_) => "api",
            ArchivedOp::ApiReply(_) => "apireply",
            ArchivedOp::StreamMsg(_) => "streammsg",
            ArchivedOp::ConsumerAck(_) => "consumerack",
            ArchivedOp::ConsumerPull(_) => "consumerpull",
        }
    }
}

impl ArchivedPublish<'_> {
    /// The subject as a string slice into the frame.
    pub fn subject(&self) -> &str {
        self.subject.as_str()
    }

    /// The reply subject, if any.
    pub fn reply(&self) -> Option<&str> {
        self.reply.as_ref().map(|r| r.as_str())
    }

    /// The header block, empty when there is none.
    pub fn headers(&self) -> &[u8] {
        &self.headers
    }

    /// The payload, a slice into the frame.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Whether the publisher asked for an ack.
    pub fn wants_ack(&self) -> bool {
        self.ack
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an archived [`Op`] takes; the root of every body sits this far from its end, so it must
    /// not change within a protocol version (a new operation must be no larger than the largest).
    const ARCHIVED_OP_BYTES: usize = 40;

    #[test]
    fn a_new_operation_leaves_the_archived_op_size_as_it_was() {
        assert_eq!(
            std::mem::size_of::<ArchivedOp<'static>>(),
            ARCHIVED_OP_BYTES
        );
    }

    #[test]
    fn archived_op_has_alignment_one() {
        assert_eq!(std::mem::align_of::<ArchivedOp<'static>>(), 1);
        assert_eq!(std::mem::align_of::<ArchivedPublish<'static>>(), 1);
    }
}
