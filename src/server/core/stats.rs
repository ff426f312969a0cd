//! Per-shard counters. Each shard owns its own; nothing is shared between shards.

use std::cell::Cell;

/// Counters of one shard, bumped on the hot path with plain `Cell`s.
#[derive(Default, Debug)]
pub struct Stats {
    pub connections_accepted: Cell<u64>,
    pub connections_open: Cell<u64>,
    pub connections_refused: Cell<u64>,
    pub msgs_in: Cell<u64>,
    pub bytes_in: Cell<u64>,
    pub msgs_out: Cell<u64>,
    pub bytes_out: Cell<u64>,
    pub forwards_out: Cell<u64>,
    pub forwards_in: Cell<u64>,
    pub slow_consumers: Cell<u64>,
    pub protocol_errors: Cell<u64>,
    /// Subscriptions held by this shard's connections.
    pub subscriptions: Cell<u64>,
    /// Publishes and subscriptions refused by a user's permissions.
    pub permission_errors: Cell<u64>,
    /// Connections refused for bad credentials.
    pub auth_failures: Cell<u64>,
    /// TLS handshakes that failed: a plain client, no client certificate where one is required,
    /// one from another CA.
    pub tls_handshake_failures: Cell<u64>,
    /// Queue-group messages that reached a shard whose members had all gone.
    pub queue_drops: Cell<u64>,
}

/// Adds `n` to a counter.
#[inline]
pub fn add(counter: &Cell<u64>, n: u64) {
    counter.set(counter.get().wrapping_add(n));
}
