//! The connection behind [`Client`]: handshake, writer thread, reader thread, subscriptions.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use sluice_protocol::frame::decode;
use sluice_protocol::limits::{frame_body_bytes_max, PAYLOAD_BYTES_MAX_DEFAULT, PROTOCOL_VERSION};
use sluice_protocol::op::{Connect, Op, Publish, Subscribe, Unsubscribe};
use sluice_protocol::{ArchivedOp, ErrorCode, Frame, FrameEncoder};

use super::message::StreamMeta;
use super::{ClientError, Message, TIMEOUT_DEFAULT};
use crate::api::PubAck;

/// Outgoing bytes buffered before `publish` waits for the writer: bounds client memory when the
/// server or the network is slower than the publisher.
const OUT_BUFFER_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Bytes read from the socket per call.
const READ_CHUNK_BYTES: usize = 256 * 1024;

/// What the server said about itself when the connection opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    pub server_id: String,
    pub version: String,
    pub proto: u32,
    /// The shard that holds this connection.
    pub shard: u32,
    pub shards: u32,
    pub max_payload: u32,
}

/// Settings of a connection.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Name shown in the server's logs.
    pub name: String,
    /// Time allowed for connecting, flushes and requests.
    pub timeout: Duration,
    /// Credentials, for a server with users.
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            name: "sluice-client".into(),
            timeout: TIMEOUT_DEFAULT,
            user: None,
            password: None,
            token: None,
        }
    }
}

struct Out {
    buf: Vec<u8>,
    encoder: FrameEncoder,
    closed: bool,
}

pub(super) struct Inner {
    out: Mutex<Out>,
    out_changed: Condvar,
    subs: Mutex<HashMap<u64, SubSlot>>,
    pongs: Mutex<VecDeque<Sender<()>>>,
    pub(super) acks: Mutex<VecDeque<Sender<Result<PubAck, ClientError>>>>,
    pub(super) api: Mutex<HashMap<u64, Sender<ApiAnswer>>>,
    pub(super) next_api_id: AtomicU64,
    replies: Mutex<HashMap<u64, Sender<Message>>>,
    inbox: Mutex<Option<String>>,
    next_sid: AtomicU64,
    next_token: AtomicU64,
    closed: AtomicBool,
    errors: Mutex<Vec<(ErrorCode, String)>>,
    stream: TcpStream,
}

/// An API reply: the code (0 for success) and the JSON body or error message.
type ApiAnswer = (u16, Vec<u8>);

/// Where a subscription's messages go, and how many more it takes (`u64::MAX`: no limit).
struct SubSlot {
    tx: Sender<Message>,
    remaining: u64,
}

/// Subscription id reserved for the request inbox.
const INBOX_SID: u64 = 0;

impl Inner {
    fn lock_out(&self) -> MutexGuard<'_, Out> {
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Encodes one operation into the outgoing buffer, waiting for room if it is full.
    pub(super) fn send(&self, op: &Op<'_>) -> Result<(), ClientError> {
        self.send_then(op, || {})
    }

    /// Like `send`, and runs `register` under the same lock, so that what waits for an answer is
    /// queued in the order the requests go out.
    pub(super) fn send_then(
        &self,
        op: &Op<'_>,
        register: impl FnOnce(),
    ) -> Result<(), ClientError> {
        let mut out = self.lock_out();
        while out.buf.len() >= OUT_BUFFER_BYTES_MAX && !out.closed {
            out = self
                .out_changed
                .wait(out)
                .unwrap_or_else(|e| e.into_inner());
        }
        if out.closed {
            return Err(ClientError::Closed);
        }
        let was_empty = out.buf.is_empty();
        let Out { buf, encoder, .. } = &mut *out;
        encoder.encode(op, buf);
        register();
        if was_empty {
            self.out_changed.notify_all();
        }
        Ok(())
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.lock_out().closed = true;
        self.out_changed.notify_all();
    }
}

/// A connection to a Sluice server. Cheap to share between threads behind an `Arc`; every method
/// takes `&self`.
pub struct Client {
    pub(super) inner: Arc<Inner>,
    pub(super) info: ServerInfo,
    pub(super) timeout: Duration,
    pub(super) threads: Vec<JoinHandle<()>>,
}

impl Client {
    /// Connects with default options.
    pub fn connect(addr: impl ToSocketAddrs) -> Result<Client, ClientError> {
        Client::connect_with(addr, ClientOptions::default())
    }

    /// Connects to the first server of a comma-separated list that answers (`a:4280,b:4280`):
    /// any node of a cluster serves a client, so a list of them survives any one being down.
    pub fn connect_any(servers: &str, options: ClientOptions) -> Result<Client, ClientError> {
        let mut last_err = ClientError::Handshake("an empty server list");
        for server in servers.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match Client::connect_with(server, options.clone()) {
                Ok(client) => return Ok(client),
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    /// Connects, sends the connect frame and waits for the server's info.
    pub fn connect_with(
        addr: impl ToSocketAddrs,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let mut last_err = None;
        let mut stream = None;
        for a in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&a, options.timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        let Some(mut stream) = stream else {
            return Err(last_err
                .unwrap_or_else(|| std::io::Error::other("no address to connect to"))
                .into());
        };
        stream.set_nodelay(true)?;
        let mut encoder = FrameEncoder::new();
        let mut hello = Vec::new();
        encoder.encode(
            &Op::Connect(Connect {
                version: PROTOCOL_VERSION,
                name: &options.name,
                user: options.user.as_deref(),
                password: options.password.as_deref(),
                token: options.token.as_deref(),
            }),
            &mut hello,
        );
        stream.write_all(&hello)?;
        stream.set_read_timeout(Some(options.timeout))?;
        let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
        let frame = read_frame(
            &mut stream,
            &mut buf,
            frame_body_bytes_max(PAYLOAD_BYTES_MAX_DEFAULT),
        )?;
        let info = match frame.op() {
            ArchivedOp::Info(i) => ServerInfo {
                server_id: i.server_id.as_str().to_string(),
                version: i.version.as_str().to_string(),
                proto: i.proto.to_native(),
                shard: i.shard.to_native(),
                shards: i.shards.to_native(),
                max_payload: i.max_payload.to_native(),
            },
            ArchivedOp::Err(e) => {
                return Err(ClientError::Server {
                    code: ErrorCode::from_u16(e.code.to_native()),
                    message: e.message.as_str().to_string(),
                })
            }
            other => return Err(ClientError::Handshake(other.name())),
        };
        stream.set_read_timeout(None)?;
        let inner = Arc::new(Inner {
            out: Mutex::new(Out {
                buf: Vec::with_capacity(64 * 1024),
                encoder,
                closed: false,
            }),
            out_changed: Condvar::new(),
            subs: Mutex::new(HashMap::new()),
            pongs: Mutex::new(VecDeque::new()),
            acks: Mutex::new(VecDeque::new()),
            api: Mutex::new(HashMap::new()),
            next_api_id: AtomicU64::new(1),
            replies: Mutex::new(HashMap::new()),
            inbox: Mutex::new(None),
            next_sid: AtomicU64::new(INBOX_SID + 1),
            next_token: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            errors: Mutex::new(Vec::new()),
            stream: stream.try_clone()?,
        });
        let body_max = frame_body_bytes_max(info.max_payload);
        let writer = {
            let inner = inner.clone();
            let stream = stream.try_clone()?;
            std::thread::Builder::new()
                .name("sluice-writer".into())
                .spawn(move || write_loop(&inner, stream))?
        };
        let reader = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("sluice-reader".into())
                .spawn(move || read_loop(&inner, stream, buf, body_max))?
        };
        Ok(Client {
            inner,
            info,
            timeout: options.timeout,
            threads: vec![writer, reader],
        })
    }

    /// What the server said about itself.
    pub fn info(&self) -> &ServerInfo {
        &self.info
    }

    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    /// Errors the server reported that did not close the connection (and the one that did), oldest
    /// first; taking them clears the list.
    pub fn take_errors(&self) -> Vec<(ErrorCode, String)> {
        std::mem::take(&mut *self.inner.errors.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Publishes a message. Returns once it is buffered; [`Client::flush`] waits for the server.
    pub fn publish(&self, subject: &str, payload: impl AsRef<[u8]>) -> Result<(), ClientError> {
        self.publish_full(subject, None, b"", payload.as_ref())
    }

    /// Publishes a message with a reply subject.
    pub fn publish_with_reply(
        &self,
        subject: &str,
        reply: &str,
        payload: impl AsRef<[u8]>,
    ) -> Result<(), ClientError> {
        self.publish_full(subject, Some(reply), b"", payload.as_ref())
    }

    /// Publishes a message with an optional reply subject and a NATS-format header block.
    pub fn publish_full(
        &self,
        subject: &str,
        reply: Option<&str>,
        headers: &[u8],
        payload: &[u8],
    ) -> Result<(), ClientError> {
        self.inner.send(&Op::Pub(Publish {
            subject,
            reply,
            headers,
            payload,
            ack: false,
        }))
    }

    /// Subscribes to a pattern.
    pub fn subscribe(&self, pattern: &str) -> Result<Subscription, ClientError> {
        self.subscribe_inner(pattern, None)
    }

    /// Joins a queue group on a pattern: each message goes to one member of the group.
    pub fn queue_subscribe(&self, pattern: &str, queue: &str) -> Result<Subscription, ClientError> {
        self.subscribe_inner(pattern, Some(queue))
    }

    /// A new subscription id and the channel its messages will arrive on.
    pub(super) fn register_sub(&self) -> (u64, Receiver<Message>) {
        let sid = self.inner.next_sid.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        self.inner
            .subs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                sid,
                SubSlot {
                    tx,
                    remaining: u64::MAX,
                },
            );
        (sid, rx)
    }

    fn subscribe_inner(
        &self,
        pattern: &str,
        queue: Option<&str>,
    ) -> Result<Subscription, ClientError> {
        let (sid, rx) = self.register_sub();
        self.inner.send(&Op::Sub(Subscribe {
            sid,
            subject: pattern,
            queue,
        }))?;
        Ok(Subscription {
            sid,
            rx,
            inner: self.inner.clone(),
            active: AtomicBool::new(true),
        })
    }

    /// Waits until the server has processed everything sent so far. Subscriptions made before are then
    /// in force on every shard.
    pub fn flush(&self) -> Result<(), ClientError> {
        self.flush_timeout(self.timeout)
    }

    /// [`Client::flush`] with an explicit timeout.
    pub fn flush_timeout(&self, timeout: Duration) -> Result<(), ClientError> {
        let (tx, rx) = mpsc::channel();
        {
            // The pong waiter is queued under the output lock so waiters stay in ping order.
            let mut out = self.inner.lock_out();
            if out.closed {
                return Err(ClientError::Closed);
            }
            self.inner
                .pongs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back(tx);
            let was_empty = out.buf.is_empty();
            let Out { buf, encoder, .. } = &mut *out;
            encoder.encode(&Op::Ping, buf);
            if was_empty {
                self.inner.out_changed.notify_all();
            }
        }
        match rx.recv_timeout(timeout) {
            Ok(()) => Ok(()),
            Err(RecvTimeoutError::Timeout) => Err(ClientError::Timeout),
            Err(RecvTimeoutError::Disconnected) => Err(ClientError::Closed),
        }
    }

    /// Sends a request and waits for the first reply.
    pub fn request(
        &self,
        subject: &str,
        payload: impl AsRef<[u8]>,
        timeout: Duration,
    ) -> Result<Message, ClientError> {
        let prefix = self.inbox()?;
        let token = self.inner.next_token.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        self.inner
            .replies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token, tx);
        let reply = format!("{prefix}.{token}");
        let sent = self.publish_with_reply(subject, &reply, payload);
        let answer = sent.and_then(|()| match rx.recv_timeout(timeout) {
            Ok(message) => Ok(message),
            Err(RecvTimeoutError::Timeout) => Err(ClientError::NoReply),
            Err(RecvTimeoutError::Disconnected) => Err(ClientError::Closed),
        });
        self.inner
            .replies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&token);
        answer
    }

    /// The request inbox prefix, subscribing to it (and waiting for that to be in force) the first time.
    fn inbox(&self) -> Result<String, ClientError> {
        let mut inbox = self.inner.inbox.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(prefix) = &*inbox {
            return Ok(prefix.clone());
        }
        let prefix = format!("_INBOX.{:016x}{:08x}", fastrand::u64(..), fastrand::u32(..));
        self.inner.send(&Op::Sub(Subscribe {
            sid: INBOX_SID,
            subject: &format!("{prefix}.*"),
            queue: None,
        }))?;
        self.flush()?;
        *inbox = Some(prefix.clone());
        Ok(prefix)
    }

    /// Flushes what is buffered and closes the connection.
    pub fn close(mut self) -> Result<(), ClientError> {
        let flushed = if self.is_closed() {
            Ok(())
        } else {
            self.flush()
        };
        self.shutdown();
        flushed
    }

    fn shutdown(&mut self) {
        self.inner.close();
        let _ = self.inner.stream.shutdown(Shutdown::Both);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Messages of one subscription, in arrival order.
pub struct Subscription {
    sid: u64,
    rx: Receiver<Message>,
    inner: Arc<Inner>,
    active: AtomicBool,
}

impl Subscription {
    /// The subscription id.
    pub fn sid(&self) -> u64 {
        self.sid
    }

    /// The next message, waiting as long as it takes; `None` once the connection has closed or the
    /// subscription ended and every message was taken.
    pub fn next(&self) -> Option<Message> {
        self.rx.recv().ok()
    }

    /// The next message, or `None` after `timeout`.
    pub fn next_timeout(&self, timeout: Duration) -> Option<Message> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// A message if one is waiting.
    pub fn try_next(&self) -> Option<Message> {
        self.rx.try_recv().ok()
    }

    /// Ends the subscription now.
    pub fn unsubscribe(&self) -> Result<(), ClientError> {
        self.active.store(false, Ordering::SeqCst);
        self.inner.send(&Op::Unsub(Unsubscribe {
            sid: self.sid,
            max: None,
        }))
    }

    /// Ends the subscription after `more` further messages.
    pub fn unsubscribe_after(&self, more: u64) -> Result<(), ClientError> {
        if more == 0 {
            return self.unsubscribe();
        }
        if let Some(slot) = self
            .inner
            .subs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&self.sid)
        {
            slot.remaining = more;
        }
        self.inner.send(&Op::Unsub(Unsubscribe {
            sid: self.sid,
            max: Some(more),
        }))
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.inner
            .subs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.sid);
        if self.active.load(Ordering::SeqCst) && !self.inner.closed.load(Ordering::SeqCst) {
            let _ = self.unsubscribe();
        }
    }
}

/// Reads one whole frame with blocking reads (the handshake, before the reader thread runs).
fn read_frame(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    body_max: u32,
) -> Result<Frame, ClientError> {
    let deadline = Instant::now() + TIMEOUT_DEFAULT;
    loop {
        if let Some(frame) = decode(buf, body_max)? {
            return Ok(frame);
        }
        if Instant::now() > deadline {
            return Err(ClientError::Timeout);
        }
        if fill(stream, buf)? == 0 {
            return Err(ClientError::Closed);
        }
    }
}

/// Reads once into the spare room of `buf`.
fn fill(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < READ_CHUNK_BYTES / 4 {
        buf.reserve(READ_CHUNK_BYTES);
    }
    let filled = buf.len();
    let chunk = (buf.capacity() - filled).min(READ_CHUNK_BYTES);
    buf.resize(filled + chunk, 0);
    let result = stream.read(&mut buf[filled..]);
    buf.truncate(filled + *result.as_ref().unwrap_or(&0));
    result
}

fn write_loop(inner: &Inner, mut stream: TcpStream) {
    let mut spare: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        {
            let mut out = inner.lock_out();
            while out.buf.is_empty() && !out.closed {
                out = inner
                    .out_changed
                    .wait(out)
                    .unwrap_or_else(|e| e.into_inner());
            }
            if out.buf.is_empty() && out.closed {
                return;
            }
            std::mem::swap(&mut out.buf, &mut spare);
        }
        inner.out_changed.notify_all();
        if stream.write_all(&spare).is_err() {
            inner.close();
            return;
        }
        spare.clear();
    }
}

fn read_loop(inner: &Inner, mut stream: TcpStream, mut buf: BytesMut, body_max: u32) {
    let mut pending_sid: Option<(u64, Option<StreamMeta>)> = None;
    'read: loop {
        loop {
            let frame = match decode(&mut buf, body_max) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "invalid frame from the server");
                    break 'read;
                }
            };
            if let Some((sid, meta)) = pending_sid.take() {
                match Message::new(sid, frame, meta) {
                    Some(message) => dispatch(inner, message),
                    None => {
                        tracing::warn!("a message header was not followed by its publish frame");
                        break 'read;
                    }
                }
                continue;
            }
            match frame.op() {
                ArchivedOp::Msg { sid } => pending_sid = Some((sid.to_native(), None)),
                ArchivedOp::StreamMsg(h) => {
                    let meta = StreamMeta {
                        partition: h.partition.to_native(),
                        offset: h.offset.to_native(),
                        delivered: h.delivered.to_native(),
                    };
                    pending_sid = Some((h.sid.to_native(), Some(meta)));
                }
                ArchivedOp::Pong => {
                    let waiter = inner
                        .pongs
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .pop_front();
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(());
                    }
                }
                ArchivedOp::Ping => {
                    let _ = inner.send(&Op::Pong);
                }
                ArchivedOp::PubAck(ack) => {
                    let waiter = inner
                        .acks
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .pop_front();
                    let code = ack.code.to_native();
                    let result = if code == 0 {
                        Ok(PubAck {
                            stream: ack.stream.as_str().to_string(),
                            partition: ack.partition.to_native(),
                            offset: ack.offset.to_native(),
                        })
                    } else {
                        Err(ClientError::Api {
                            code: ErrorCode::from_u16(code),
                            message: ack.error.as_str().to_string(),
                        })
                    };
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(result);
                    }
                }
                ArchivedOp::ApiReply(reply) => {
                    let waiter = inner
                        .api
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&reply.id.to_native());
                    if let Some(waiter) = waiter {
                        let _ = waiter.send((reply.code.to_native(), reply.body.to_vec()));
                    }
                }
                ArchivedOp::Err(e) => {
                    let code = ErrorCode::from_u16(e.code.to_native());
                    let message = e.message.as_str().to_string();
                    tracing::debug!(?code, %message, "server error");
                    inner
                        .errors
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((code, message));
                }
                other => tracing::debug!(op = other.name(), "ignoring unexpected frame"),
            }
        }
        match fill(&mut stream, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    inner.close();
    // Dropping the senders ends every subscription's iterator and every waiting flush.
    inner.subs.lock().unwrap_or_else(|e| e.into_inner()).clear();
    inner
        .pongs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    inner
        .replies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    inner.acks.lock().unwrap_or_else(|e| e.into_inner()).clear();
    inner.api.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

fn dispatch(inner: &Inner, message: Message) {
    if message.sid() == INBOX_SID {
        let token = message
            .subject()
            .rsplit('.')
            .next()
            .and_then(|t| t.parse::<u64>().ok());
        if let Some(token) = token {
            let waiter = inner
                .replies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&token);
            if let Some(waiter) = waiter {
                let _ = waiter.send(message);
            }
        }
        return;
    }
    let mut subs = inner.subs.lock().unwrap_or_else(|e| e.into_inner());
    let sid = message.sid();
    if let Some(slot) = subs.get_mut(&sid) {
        let _ = slot.tx.send(message);
        if slot.remaining != u64::MAX {
            slot.remaining -= 1;
            if slot.remaining == 0 {
                subs.remove(&sid);
            }
        }
    }
}
