//! What a publish made too full, and the wait for it to drain: the flow control every feeder (a
//! publishing connection, a mesh receiver) applies before it reads more.

use std::rc::Rc;

use super::client::Client;
use sluice_storage::wake::Event;

/// Something outside core that fills as it is fed and drains by itself (a partition's bytes not yet
/// durable). Core waits on it without knowing what it is; its owner notes it with
/// `Shard::note_backlog` when a feed passes its bound.
pub trait Congestion {
    /// Whether its feeders should wait before sending more.
    fn is_congested(&self) -> bool;
    /// Notified whenever it may have drained.
    fn changed(&self) -> &Event;
}

/// Something a publish made too full, that its feeder (the publishing connection, or the mesh
/// receiver that brought the publish) waits for before reading more.
pub enum Backlog {
    /// A subscriber whose output passed its high-water mark.
    Subscriber(Rc<Client>),
    /// Something a layer above keeps that fills and drains by itself: a partition with too much
    /// stored and not yet durable.
    Congested(Rc<dyn Congestion>),
}

impl Backlog {
    /// Waits until it can take more (the subscriber's writer took its buffer, or the disk caught
    /// up), or its connection ended. A subscriber's wait is bounded by the write deadline.
    pub async fn drained(&self) {
        match self {
            Backlog::Subscriber(conn) => conn.out.wait_uncongested().await,
            Backlog::Congested(what) => what.changed().wait_until(|| !what.is_congested()).await,
        }
    }

    /// Whether it is the connection `id`.
    pub fn is_conn(&self, id: u64) -> bool {
        matches!(self, Backlog::Subscriber(conn) if conn.id == id)
    }

    /// Whether both are the same subscriber or the same congested thing.
    pub fn is(&self, other: &Backlog) -> bool {
        match (self, other) {
            (Backlog::Subscriber(a), Backlog::Subscriber(b)) => Rc::ptr_eq(a, b),
            (Backlog::Congested(a), Backlog::Congested(b)) => {
                std::ptr::addr_eq(Rc::as_ptr(a), Rc::as_ptr(b))
            }
            _ => false,
        }
    }
}
