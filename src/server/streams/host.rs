//! Consumers whose deliveries the broker makes itself, whoever is connected: a JetStream push
//! consumer with a durable name sends to its deliver subject for as long as it exists, not for as
//! long as the connection that made it. The owner of a stream's first partition tells the port
//! above (through [`ConsumerHost`]) when such a consumer appears, made or found at start, and
//! when it goes; the port keeps one member for it on that shard.

use std::rc::Rc;
use std::sync::Arc;

use super::StreamShard;
use crate::api::ConsumerConfig;

/// The port that delivers hosted consumers.
pub trait ConsumerHost {
    /// A hosted consumer exists on this shard's first partition of its stream.
    fn appeared(&self, config: &Arc<ConsumerConfig>);
    /// It was deleted, or its stream removed.
    fn gone(&self, stream: &str, consumer: &str);
}

/// Whether the broker delivers this consumer itself: a durable JetStream push consumer.
pub fn is_hosted(config: &ConsumerConfig) -> bool {
    config
        .jetstream
        .as_ref()
        .is_some_and(|j| j.is_push() && j.is_durable())
}

/// Sets the port that hosts consumers on this shard.
pub fn set_host(shard: &StreamShard, host: Rc<dyn ConsumerHost>) {
    *shard.host.borrow_mut() = Some(host);
}

/// Tells the host a consumer appeared on partition `index` (only the first partition's counts).
pub(super) fn appeared(shard: &StreamShard, index: u32, config: &Arc<ConsumerConfig>) {
    if index != 0 || !is_hosted(config) {
        return;
    }
    let host = shard.host.borrow().clone();
    if let Some(host) = host {
        host.appeared(config);
    }
}

/// Tells the host a consumer of partition `index` went (only the first partition's counts).
pub(super) fn gone(shard: &StreamShard, index: u32, config: &ConsumerConfig) {
    if index != 0 || !is_hosted(config) {
        return;
    }
    let host = shard.host.borrow().clone();
    if let Some(host) = host {
        host.gone(&config.stream, &config.name);
    }
}
