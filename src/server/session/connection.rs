//! A client connection's session state, whatever port it speaks: acks in turn, user, consumers
//! and NATS options, around the core `Client` (output, subscriptions, what it is waiting on). The
//! ports (`conn.rs`, `nats_conn.rs`) drive it; core delivers to its client, the streams write its
//! acks through `streams::AckWaiter`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use super::SessionShard;
use crate::server::auth::{Credentials, Refusal, User};
use crate::server::core::client::Client;
use crate::server::core::stats::add;
use crate::server::streams::{self, AckWaiter};
use crate::server::tls::CertIdentity;
use sluice_storage::wake::Event;

/// Acked publishes of one connection waiting for their acks, past which the connection reads no
/// more: bounds the ack slots a client can pile up behind a slow disk or a slow peer shard.
const ACKS_PENDING_MAX: usize = 64 * 1024;

/// How long a stopping connection waits for the acks of publishes it already read.
const ACKS_AT_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A port's state of one consumer membership, by (stream, consumer), kept opaque.
pub type PortMembership = ((String, String), Rc<dyn std::any::Any>);

/// A connection's state that other tasks of the shard touch.
pub struct Conn {
    /// What core routes to and waits for.
    pub client: Rc<Client>,
    /// Acks of stored publishes, written in the order the publishes came.
    pub(in crate::server) acks: RefCell<Acks>,
    /// Whether the connection attached to a consumer (its closing must be told to the owners).
    pub consumer_member: Cell<bool>,
    /// Whether its credentials arrived (and are being checked, or were).
    pub(in crate::server) auth_started: Cell<bool>,
    /// The consumers (stream, name) it attached to: the only ones it may pull from and ack.
    pub consumers: RefCell<Vec<(String, String)>>,
    /// What a NATS client asked for in its CONNECT (unused on the native protocol).
    pub nats: RefCell<NatsOptions>,
    /// The user it authenticated as, on a server with users.
    pub user: RefCell<Option<Arc<User>>>,
    /// Notified as acks are written, for a reader waiting for ack slots (or for the last ack).
    pub(in crate::server) acks_done: Event,
    /// Bytes to ask of the kernel on the next read: follows what reads return, so that a client
    /// trickling bytes does not make every read zero a large buffer.
    pub(in crate::server) read_chunk: Cell<usize>,
    /// The names of its verified client certificate, with `tls_map`: a connect without
    /// credentials authenticates as the user the certificate names.
    pub(in crate::server) certificate: Option<CertIdentity>,
    /// Its memberships of JetStream consumers, by (stream, consumer): the port's state of each
    /// (its open pull requests), which the session keeps without knowing it.
    pub pullers: RefCell<Vec<PortMembership>>,
    /// Memberships the port has made on this connection so far: each gets its own subscription
    /// id from this count, never reused.
    pub memberships_made: Cell<u64>,
}

impl Conn {
    /// A connection that has not authenticated, attached or acked anything yet; its first read
    /// asks the kernel for `read_chunk` bytes.
    pub fn new(client: Rc<Client>, read_chunk: usize, certificate: Option<CertIdentity>) -> Conn {
        Conn {
            client,
            acks: RefCell::new(Acks::default()),
            consumer_member: Cell::new(false),
            auth_started: Cell::new(false),
            consumers: RefCell::new(Vec::new()),
            nats: RefCell::new(NatsOptions::default()),
            user: RefCell::new(None),
            acks_done: Event::default(),
            read_chunk: Cell::new(read_chunk),
            certificate,
            pullers: RefCell::new(Vec::new()),
            memberships_made: Cell::new(0),
        }
    }

    /// May this connection publish to `subject`? Counts and logs a refusal.
    pub fn may_publish(&self, shard: &SessionShard, subject: &str) -> bool {
        let user = self.user.borrow();
        let Some(user) = user.as_ref() else {
            return true;
        };
        let allowed = user.permissions.publish.allows_subject(subject);
        if !allowed {
            add(&shard.core.stats.permission_errors, 1);
            tracing::debug!(shard = shard.core.id.0, conn = self.client.id, user = %user.name, subject, "publish refused by permissions");
        }
        allowed
    }

    /// May this connection subscribe to `pattern`? Counts and logs a refusal.
    pub fn may_subscribe(&self, shard: &SessionShard, pattern: &str) -> bool {
        let user = self.user.borrow();
        let Some(user) = user.as_ref() else {
            return true;
        };
        let allowed = user.permissions.subscribe.allows_pattern(pattern);
        if !allowed {
            add(&shard.core.stats.permission_errors, 1);
            tracing::info!(shard = shard.core.id.0, conn = self.client.id, user = %user.name, pattern, "subscription refused by permissions");
        }
        allowed
    }

    /// May this connection read `stream` (its messages, its consumers)? Without users, yes; else
    /// only if its user may subscribe to every subject the stream captures.
    pub fn may_read_stream(&self, stream: &crate::api::StreamConfig) -> bool {
        match self.user.borrow().as_ref() {
            None => true,
            Some(user) => stream
                .subjects
                .iter()
                .all(|p| user.permissions.subscribe.allows_pattern(p)),
        }
    }

    /// Whether it attached to consumer `name` of `stream`.
    pub fn is_member(&self, stream: &str, name: &str) -> bool {
        self.consumers
            .borrow()
            .iter()
            .any(|(s, n)| s == stream && n == name)
    }

    /// Waits until everything this connection made congested has drained (a subscriber's wait is
    /// bounded by the write deadline) and its acks in waiting are under their bound, or the shard
    /// stops.
    pub(in crate::server) async fn wait_for_backlog(&self, shard: &SessionShard) {
        self.client.wait_fed(&shard.core).await;
        if self.acks.borrow().slots.len() >= ACKS_PENDING_MAX {
            let acks_room = self
                .acks_done
                .wait_until(|| self.acks.borrow().slots.len() < ACKS_PENDING_MAX);
            futures_lite::future::or(acks_room, shard.core.stopping.wait()).await;
        }
    }

    /// Authenticates on the hashing threads (the hashes are slow by design), awaiting their answer
    /// without holding the shard; on success the connection runs as that user from now on. With
    /// `tls_map`, a connect without credentials is the user its client certificate names.
    pub async fn authenticate(
        &self,
        shard: &SessionShard,
        creds: Credentials,
    ) -> Result<(), Refusal> {
        // From here the client has done its part in time: the auth timeout no longer applies.
        self.auth_started.set(true);
        let given = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
        let no_credentials = !given(&creds.user) && !given(&creds.password) && !given(&creds.token);
        if let (Some(identity), true) = (&self.certificate, no_credentials) {
            let result = shard.core.config.users.authenticate_certificate(identity);
            return self.authenticated(shard, result, Some(&identity.subject), None);
        }
        let name = creds.user.clone();
        let result = match shard.auth.as_ref().map(|pool| pool.check(creds)) {
            Some(Ok(answer)) => {
                // A connection closed meanwhile (the auth timeout, the client leaving) drops its
                // receiver, and the hashing threads skip its check if it has not started.
                let answer = futures_lite::future::or(async { Some(answer.await) }, async {
                    self.client.done.wait().await;
                    None
                });
                match answer.await {
                    Some(answer) => answer.unwrap_or(Err(Refusal::Busy)),
                    None => return Err(Refusal::BadCredentials),
                }
            }
            // Every hashing thread busy and the queue full, or the server stopping.
            Some(Err(_)) | None => Err(Refusal::Busy),
        };
        self.authenticated(shard, result, None, name)
    }

    /// Runs the connection as the user found, or counts and logs the refusal.
    fn authenticated(
        &self,
        shard: &SessionShard,
        result: Result<Arc<User>, Refusal>,
        certificate: Option<&str>,
        name: Option<String>,
    ) -> Result<(), Refusal> {
        match result {
            Ok(user) => {
                // A second CONNECT gives back the slot the first one took.
                if let Some(previous) = self.user.borrow_mut().replace(user) {
                    previous.release();
                }
                Ok(())
            }
            Err(refusal) => {
                add(&shard.core.stats.auth_failures, 1);
                match certificate {
                    Some(subject) => tracing::warn!(
                        shard = shard.core.id.0,
                        conn = self.client.id,
                        certificate = subject,
                        ?refusal,
                        "authentication by client certificate failed"
                    ),
                    None => {
                        tracing::warn!(shard = shard.core.id.0, conn = self.client.id, user = ?name, ?refusal, "authentication failed")
                    }
                }
                Err(refusal)
            }
        }
    }
}

/// The CONNECT options of a NATS client that change what the server does.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Whether this is a NATS connection at all.
    pub enabled: bool,
    /// Answer every operation with +OK.
    pub verbose: bool,
    /// Deliver the client's own publishes to its subscriptions.
    pub echo: bool,
    /// Answer a request nobody listens to with a 503 status message.
    pub no_responders: bool,
    /// Server pings not yet answered with a PONG.
    pub pings_out: u32,
    /// Whether CONNECT has been accepted (required first on a server with users).
    pub connected: bool,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            enabled: false,
            verbose: false,
            echo: true,
            no_responders: false,
            pings_out: 0,
            connected: false,
        }
    }
}

/// Publish acks waiting for their turn: slot `i` is ack number `first + i`.
#[derive(Default)]
pub(in crate::server) struct Acks {
    first: u64,
    slots: std::collections::VecDeque<Option<bytes::Bytes>>,
}

impl Conn {
    /// At shutdown, once reading has stopped: waits (a bounded time) for the publishes already read
    /// to become durable and their acks to be written, so that a client sees the ack of everything
    /// the broker stored before it is told the server is going away.
    pub(in crate::server) async fn finish_acks(&self, shard: &Rc<SessionShard>) {
        streams::flush_appends(&shard.streams);
        let acked = async {
            self.acks_done
                .wait_until(|| self.acks.borrow().slots.is_empty())
                .await;
            // NATS acks travel as messages on reply subjects: wait until what this shard stores
            // is durable, so that those published here have been sent.
            streams::wait_synced(&shard.streams).await;
        };
        let timeout = glommio::timer::sleep(ACKS_AT_STOP_TIMEOUT);
        futures_lite::future::or(acked, timeout).await;
    }

    /// Reserves the next ack number.
    pub fn next_ack(&self) -> u64 {
        let mut acks = self.acks.borrow_mut();
        acks.slots.push_back(None);
        acks.first + acks.slots.len() as u64 - 1
    }

    /// Fills ack `seq` and writes every ack that is now next in line.
    pub fn complete_ack(&self, seq: u64, frame: bytes::Bytes) {
        let mut acks = self.acks.borrow_mut();
        let Some(index) = seq.checked_sub(acks.first) else {
            return;
        };
        if let Some(slot) = acks.slots.get_mut(index as usize) {
            *slot = Some(frame);
        }
        let mut written = false;
        while let Some(Some(_)) = acks.slots.front() {
            if let Some(Some(frame)) = acks.slots.pop_front() {
                self.client.out.push(&frame);
            }
            acks.first += 1;
            written = true;
        }
        drop(acks);
        if written {
            self.acks_done.notify_all();
        }
    }
}

impl AckWaiter for Conn {
    fn id(&self) -> u64 {
        self.client.id
    }

    fn next_ack(&self) -> u64 {
        Conn::next_ack(self)
    }

    fn complete_ack(&self, seq: u64, frame: bytes::Bytes) {
        Conn::complete_ack(self, seq, frame)
    }
}
