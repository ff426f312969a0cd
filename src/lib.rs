//! Sluice: a thread-per-core message broker.
//!
//! - [`server`]: the broker (shards, connections, routing across shards).
//! - [`client`]: a blocking Rust client for the native protocol, used by the CLI and tests.
//! - [`cli`]: the `sluice` command line.

pub mod api;
pub mod cli;
pub mod client;
pub mod server;
