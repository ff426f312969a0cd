//! The ports: wire formats in, session calls out. `conn.rs` speaks the native protocol (and starts
//! every connection), `nats_conn.rs` the NATS protocol, `jetstream/` the JetStream API on the NATS
//! port, `kafka/` the Kafka protocol, `stream_api.rs` the native stream API, `http.rs` serves `/metrics` and health.

pub mod conn;
pub mod http;
pub mod jetstream;
pub mod kafka;
pub mod nats_conn;
pub mod stream_api;
