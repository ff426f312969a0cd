//! A client connection as core sees it, whatever port and session drive it: its output, its
//! subscriptions, whether it is done, and what its publishes made congested.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use super::backlog::Backlog;
use super::interest::LocalSub;
use super::outbound::Outbound;
use super::shard::Shard;
use sluice_storage::wake::Latch;

/// What routing, delivery and flow control need of a connection.
pub struct Client {
    pub id: u64,
    pub out: Outbound,
    pub subs: RefCell<HashMap<u64, Rc<LocalSub>>>,
    /// Set when the writer has finished: the reader stops too.
    pub done: Latch,
    /// Whether interest changed since the last ping (a ping then waits for every shard to apply it).
    interest_changed: Cell<bool>,
    /// Subscribers and partitions that this connection's publishes made congested: it reads
    /// nothing more until they have drained (or were cut off).
    feeding: RefCell<Vec<Backlog>>,
}

impl Client {
    /// A connection with no subscriptions, writing into `out`.
    pub fn new(id: u64, out: Outbound) -> Client {
        Client {
            id,
            out,
            subs: RefCell::new(HashMap::new()),
            done: Latch::default(),
            interest_changed: Cell::new(false),
            feeding: RefCell::new(Vec::new()),
        }
    }

    /// Sleeps for `duration`; false if the connection ended first.
    pub async fn sleep_while_open(&self, duration: std::time::Duration) -> bool {
        futures_lite::future::or(
            async {
                glommio::timer::sleep(duration).await;
                true
            },
            async {
                self.done.wait().await;
                false
            },
        )
        .await
    }

    /// Takes the subscribers the last routing made congested: the connection waits for them before
    /// it reads more. Called right after routing one of its publishes.
    pub fn note_congested(&self, shard: &Shard) {
        let congested = shard.take_congested();
        if !congested.is_empty() {
            let mut feeding = self.feeding.borrow_mut();
            // Waiting on itself would stop the reads that its own client may need to progress.
            feeding.extend(congested.into_iter().filter(|b| !b.is_conn(self.id)));
        }
    }

    /// Waits until everything this connection made congested has drained (a subscriber's wait is
    /// bounded by the write deadline), or the shard stops.
    pub async fn wait_fed(&self, shard: &Shard) {
        let feeding = std::mem::take(&mut *self.feeding.borrow_mut());
        shard.wait_drained(feeding).await;
    }

    /// Marks interest as changed: the next ping waits until every shard applied it.
    pub fn interest_changed(&self) {
        self.interest_changed.set(true);
    }

    /// Whether interest changed since the last ping (and forgets it).
    pub fn take_interest_changed(&self) -> bool {
        self.interest_changed.replace(false)
    }
}
