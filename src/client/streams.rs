//! The client's side of streams and consumers: acked publishes, the stream API, consumers.

use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sluice_protocol::op::{
    AckKind, ApiRequest, ConsumerAck as ConsumerAckOp, ConsumerPull, Op, Publish,
};
use sluice_protocol::ErrorCode;

use super::conn::{Client, Inner};
use super::{ClientError, Message};
use crate::api::{
    self, ConsumerConfig, ConsumerInfo, ConsumerName, MessageLocation, PubAck, StoredMessage,
    StreamConfig, StreamInfo, StreamList, StreamName,
};

impl Client {
    /// Publishes a message that a stream stores, and returns at once; the [`AckWaiter`] gives where
    /// it was stored once it is durable. Acks arrive in publish order, so many can be in flight.
    pub fn publish_with_ack(
        &self,
        subject: &str,
        payload: impl AsRef<[u8]>,
    ) -> Result<AckWaiter, ClientError> {
        let (tx, rx) = mpsc::channel();
        let op = Op::Pub(Publish {
            subject,
            reply: None,
            headers: b"",
            payload: payload.as_ref(),
            ack: true,
        });
        self.inner.send_then(&op, || {
            self.inner
                .acks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back(tx);
        })?;
        Ok(AckWaiter {
            rx,
            timeout: self.timeout,
        })
    }

    /// Publishes a message that a stream stores and waits until it is durable.
    pub fn publish_durable(
        &self,
        subject: &str,
        payload: impl AsRef<[u8]>,
    ) -> Result<PubAck, ClientError> {
        self.publish_with_ack(subject, payload)?.wait()
    }

    /// Calls the server's API: `verb` with a JSON request, answered with JSON.
    pub fn api<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        verb: &str,
        request: &Req,
    ) -> Result<Resp, ClientError> {
        let body = serde_json::to_vec(request).map_err(|e| ClientError::Api {
            code: ErrorCode::BadRequest,
            message: e.to_string(),
        })?;
        let id = self.inner.next_api_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        self.inner
            .api
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        self.inner.send(&Op::Api(ApiRequest {
            id,
            verb,
            body: &body,
        }))?;
        let answer = rx.recv_timeout(self.timeout);
        self.inner
            .api
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        let (code, body) = match answer {
            Ok(answer) => answer,
            Err(RecvTimeoutError::Timeout) => return Err(ClientError::Timeout),
            Err(RecvTimeoutError::Disconnected) => return Err(ClientError::Closed),
        };
        if code != 0 {
            return Err(ClientError::Api {
                code: ErrorCode::from_u16(code),
                message: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Api {
            code: ErrorCode::BadRequest,
            message: format!("unreadable answer: {e}"),
        })
    }

    /// Creates a stream.
    pub fn stream_add(&self, config: &StreamConfig) -> Result<StreamInfo, ClientError> {
        self.api(api::STREAM_ADD, config)
    }

    /// Describes a stream: configuration and per-partition counts.
    pub fn stream_info(&self, name: &str) -> Result<StreamInfo, ClientError> {
        self.api(api::STREAM_INFO, &StreamName { name: name.into() })
    }

    /// Lists the streams.
    pub fn stream_list(&self) -> Result<Vec<StreamConfig>, ClientError> {
        self.api::<_, StreamList>(api::STREAM_LIST, &serde_json::json!({}))
            .map(|l| l.streams)
    }

    /// The cluster as the server this client is connected to sees it.
    pub fn cluster_info(&self) -> Result<api::ClusterInfo, ClientError> {
        self.api(api::CLUSTER_INFO, &serde_json::json!({}))
    }

    /// Adds a node, linked already, to the cluster's members; returns the members.
    pub fn cluster_add(&self, node: &str) -> Result<Vec<String>, ClientError> {
        let member = api::ClusterMember { node: node.into() };
        self.api(api::CLUSTER_ADD, &member)
    }

    /// Removes a node holding no stream's copy from the cluster's members; returns the members.
    pub fn cluster_remove(&self, node: &str) -> Result<Vec<String>, ClientError> {
        let member = api::ClusterMember { node: node.into() };
        self.api(api::CLUSTER_REMOVE, &member)
    }

    /// Moves a replicated stream's copy from node `from` to node `to`.
    pub fn stream_move(&self, name: &str, from: &str, to: &str) -> Result<StreamInfo, ClientError> {
        let request = api::StreamMove {
            name: name.into(),
            from: from.into(),
            to: to.into(),
        };
        self.api(api::STREAM_MOVE, &request)
    }

    /// Deletes a stream and its data.
    pub fn stream_remove(&self, name: &str) -> Result<(), ClientError> {
        self.api::<_, serde_json::Value>(api::STREAM_REMOVE, &StreamName { name: name.into() })
            .map(|_| ())
    }

    /// Reads one stored message.
    pub fn stream_get(
        &self,
        name: &str,
        partition: u32,
        offset: u64,
    ) -> Result<StoredMessage, ClientError> {
        let at = MessageLocation {
            name: name.into(),
            partition,
            offset,
            last_by_subject: None,
        };
        self.api(api::STREAM_GET, &at)
    }

    /// Attaches to a durable consumer of a stream (created on first use); its messages arrive on the
    /// returned [`Consumer`] and must be acked. Clients attached to the same consumer share its
    /// messages. The consumer asks for [`PULL_BATCH`] messages, and tops that up as they are
    /// taken, so that a client never holds much more than it is about to read.
    pub fn consume(&self, config: ConsumerConfig) -> Result<Consumer, ClientError> {
        let mut consumer = self.attach_consumer(config)?;
        consumer.batch = Some(PULL_BATCH);
        consumer.pull(PULL_BATCH)?;
        Ok(consumer)
    }

    /// Attaches to a durable consumer without asking for anything: messages arrive only as
    /// [`Consumer::pull`] asks for them, never more.
    pub fn attach_consumer(&self, mut config: ConsumerConfig) -> Result<Consumer, ClientError> {
        let (sid, rx) = self.register_sub();
        config.sid = sid;
        self.api::<_, serde_json::Value>(api::CONSUMER_ATTACH, &config)?;
        Ok(Consumer {
            stream: config.stream,
            name: config.name,
            sid,
            rx,
            inner: self.inner.clone(),
            batch: None,
            asked: Cell::new(0),
        })
    }

    /// A consumer's pending counts.
    pub fn consumer_info(&self, stream: &str, name: &str) -> Result<ConsumerInfo, ClientError> {
        let which = ConsumerName {
            stream: stream.into(),
            name: name.into(),
        };
        self.api(api::CONSUMER_INFO, &which)
    }
}

/// Messages a [`Client::consume`] consumer keeps asked for: enough to cover the round trip of its
/// pulls while it reads at full speed (256 measured at two thirds of the throughput of 1024).
pub const PULL_BATCH: u64 = 1024;

/// A consumer tops its credit up again once this fraction of [`PULL_BATCH`] has arrived: often
/// enough that the broker's grants never run dry while the client reads at full speed (a pull per
/// 256 messages is a few bytes against their payloads).
const PULL_REFILL_PARTS: u64 = 4;

/// Messages of a durable consumer; each must be acked (or nak'ed) through it.
pub struct Consumer {
    stream: String,
    name: String,
    sid: u64,
    rx: Receiver<Message>,
    inner: Arc<Inner>,
    /// Asks for this many at a time, again as they are taken (`None`: only [`Consumer::pull`]).
    batch: Option<u64>,
    /// Asked for and not yet received.
    asked: Cell<u64>,
}

impl Consumer {
    /// The next message, or `None` after `timeout`.
    pub fn next_timeout(&self, timeout: Duration) -> Option<Message> {
        let message = self.rx.recv_timeout(timeout).ok()?;
        let asked = self.asked.get().saturating_sub(1);
        self.asked.set(asked);
        if let Some(batch) = self.batch {
            if asked <= batch - batch / PULL_REFILL_PARTS {
                if let Err(e) = self.pull(batch - asked) {
                    tracing::debug!(error = %e, "asking for more messages failed");
                }
            }
        }
        Some(message)
    }

    /// Asks for `count` more messages: the broker sends no more than were asked for.
    pub fn pull(&self, count: u64) -> Result<(), ClientError> {
        self.pull_expiring(count, Duration::ZERO)
    }

    /// Asks for `count` more messages; what has not arrived after `expires` is no longer
    /// wanted (`Duration::ZERO`: it stays wanted).
    pub fn pull_expiring(&self, count: u64, expires: Duration) -> Result<(), ClientError> {
        let expires_ms = u32::try_from(expires.as_millis()).unwrap_or(u32::MAX);
        let mut left = count;
        // One pull carries at most u32::MAX; a larger count takes several.
        while left > 0 {
            let part = u32::try_from(left).unwrap_or(u32::MAX);
            self.inner.send(&Op::ConsumerPull(ConsumerPull {
                stream: &self.stream,
                consumer: &self.name,
                sid: self.sid,
                count: part,
                expires_ms,
            }))?;
            self.asked.set(self.asked.get() + u64::from(part));
            left -= u64::from(part);
        }
        Ok(())
    }

    /// The subscription id its messages arrive on.
    pub fn sid(&self) -> u64 {
        self.sid
    }

    fn send_ack(
        &self,
        message: &Message,
        kind: AckKind,
        delay: Duration,
    ) -> Result<(), ClientError> {
        let Some(meta) = message.stream_meta() else {
            return Err(ClientError::Api {
                code: ErrorCode::BadRequest,
                message: "not a consumer's message".into(),
            });
        };
        self.inner.send(&Op::ConsumerAck(ConsumerAckOp {
            stream: &self.stream,
            consumer: &self.name,
            partition: meta.partition,
            offset: meta.offset,
            kind: kind as u8,
            delay_ms: delay.as_millis() as u64,
        }))
    }

    /// Done with it: it is never delivered again.
    pub fn ack(&self, message: &Message) -> Result<(), ClientError> {
        self.send_ack(message, AckKind::Ack, Duration::ZERO)
    }

    /// Failed: deliver it again after `delay`.
    pub fn nak(&self, message: &Message, delay: Duration) -> Result<(), ClientError> {
        self.send_ack(message, AckKind::Nak, delay)
    }

    /// Still working on it: restart its ack wait.
    pub fn in_progress(&self, message: &Message) -> Result<(), ClientError> {
        self.send_ack(message, AckKind::Progress, Duration::ZERO)
    }

    /// Give up on it without processing: it is never delivered again.
    pub fn term(&self, message: &Message) -> Result<(), ClientError> {
        self.send_ack(message, AckKind::Term, Duration::ZERO)
    }
}

/// Waits for the ack of one stored publish.
pub struct AckWaiter {
    rx: Receiver<Result<PubAck, ClientError>>,
    timeout: Duration,
}

impl AckWaiter {
    /// Where the message was stored, once durable; or why it was not.
    pub fn wait(self) -> Result<PubAck, ClientError> {
        match self.rx.recv_timeout(self.timeout) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(ClientError::Timeout),
            Err(RecvTimeoutError::Disconnected) => Err(ClientError::Closed),
        }
    }
}
