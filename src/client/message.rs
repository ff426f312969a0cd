//! A received message: a view into the publish frame as it arrived, nothing copied.

use bytes::Bytes;
use sluice_protocol::op::ArchivedPublish;
use sluice_protocol::{ArchivedOp, Frame};

/// Where a consumer's message is stored, and how often it was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamMeta {
    pub partition: u32,
    pub offset: u64,
    /// Deliveries so far, this one included.
    pub delivered: u32,
}

/// One message delivered to a subscription or a consumer.
#[derive(Clone)]
pub struct Message {
    sid: u64,
    frame: Frame,
    meta: Option<StreamMeta>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("sid", &self.sid)
            .field("subject", &self.subject())
            .field("reply", &self.reply())
            .field("payload_bytes", &self.payload().len())
            .finish()
    }
}

impl Message {
    /// Wraps a checked publish frame; `None` if the frame is not a publish.
    pub(crate) fn new(sid: u64, frame: Frame, meta: Option<StreamMeta>) -> Option<Message> {
        matches!(frame.op(), ArchivedOp::Pub(_)).then_some(Message { sid, frame, meta })
    }

    /// For a consumer's message: its partition, offset and delivery count.
    pub fn stream_meta(&self) -> Option<StreamMeta> {
        self.meta
    }

    fn publish(&self) -> &ArchivedPublish<'static> {
        match self.frame.op() {
            ArchivedOp::Pub(p) => p,
            // `new` admits publish frames only.
            _ => unreachable!("a message is always a publish frame"),
        }
    }

    /// The subscription it was delivered to.
    pub fn sid(&self) -> u64 {
        self.sid
    }

    /// The subject it was published to.
    pub fn subject(&self) -> &str {
        self.publish().subject()
    }

    /// Where to send an answer, if the publisher asked for one.
    pub fn reply(&self) -> Option<&str> {
        self.publish().reply()
    }

    /// The header block (NATS format), empty when there is none.
    pub fn headers(&self) -> &[u8] {
        self.publish().headers()
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        self.publish().payload()
    }

    /// The payload as shared bytes, without copying.
    pub fn payload_bytes(&self) -> Bytes {
        self.frame.slice_ref(self.payload())
    }

    /// The publish frame exactly as the publisher sent it.
    pub fn frame(&self) -> &Frame {
        &self.frame
    }
}
