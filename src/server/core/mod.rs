//! The core layer: one shard's connections as routing sees them, interest, routing and delivery,
//! bounded output, and the mesh that carries items between shards. Core knows nothing of streams,
//! sessions or ports: they build on it.

pub mod backlog;
pub mod client;
pub mod interest;
pub mod mesh;
pub mod outbound;
pub mod shard;
pub mod socket;
pub mod stats;
