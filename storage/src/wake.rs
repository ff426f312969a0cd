//! Wake-ups between tasks of one executor. Single-threaded (`Cell`/`RefCell`), no locks: the log's
//! committer and its appenders use them, and so do the broker's connections and shards.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// Wakes one waiting task; a notification given while nobody waits is kept until the next wait.
#[derive(Default)]
pub struct Notify {
    notified: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    /// Marks the notification and wakes the waiter, if any.
    pub fn notify(&self) {
        self.notified.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Waits for a notification and consumes it.
    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.notified.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// Wakes every task waiting for a condition to hold; waiters re-check their condition.
#[derive(Default)]
pub struct Event {
    wakers: RefCell<Vec<Waker>>,
}

impl Event {
    /// Wakes every waiter so that it checks its condition again.
    pub fn notify_all(&self) {
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for waker in wakers {
            waker.wake();
        }
    }

    /// Waits until `condition` returns true; it is checked now and after each notification.
    pub async fn wait_until(&self, mut condition: impl FnMut() -> bool) {
        poll_fn(|cx| {
            if condition() {
                Poll::Ready(())
            } else {
                // No de-duplication: a waiter is polled again only after a notification drained
                // the list, so duplicates are rare, and scanning would cost O(waiters) per wait.
                self.wakers.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// A flag that is set once and that tasks can wait for (a shard's stop signal, a connection's end).
///
/// Waits are often one arm of a select that is polled again and again for the other arm's sake, so
/// each wait owns one slot and re-polling replaces its waker there instead of adding another.
#[derive(Default)]
pub struct Latch {
    set: Cell<bool>,
    slots: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl Latch {
    /// Sets the latch and wakes everyone waiting on it.
    pub fn set(&self) {
        self.set.set(true);
        let wakers: Vec<Waker> = self
            .slots
            .borrow_mut()
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for waker in wakers {
            waker.wake();
        }
    }

    /// Whether the latch is set.
    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    /// Waits until the latch is set.
    pub fn wait(&self) -> LatchWait<'_> {
        LatchWait {
            latch: self,
            slot: None,
        }
    }
}

/// The future of [`Latch::wait`].
pub struct LatchWait<'a> {
    latch: &'a Latch,
    slot: Option<usize>,
}

impl std::future::Future for LatchWait<'_> {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if self.latch.set.get() {
            return Poll::Ready(());
        }
        let waker = Some(cx.waker().clone());
        match self.slot {
            Some(slot) => self.latch.slots.borrow_mut()[slot] = waker,
            None => {
                let slot = match self.latch.free.borrow_mut().pop() {
                    Some(slot) => {
                        self.latch.slots.borrow_mut()[slot] = waker;
                        slot
                    }
                    None => {
                        let mut slots = self.latch.slots.borrow_mut();
                        slots.push(waker);
                        slots.len() - 1
                    }
                };
                self.slot = Some(slot);
            }
        }
        Poll::Pending
    }
}

impl Drop for LatchWait<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            self.latch.slots.borrow_mut()[slot] = None;
            self.latch.free.borrow_mut().push(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::Context;

    #[test]
    fn a_latch_wait_polled_many_times_holds_one_slot() {
        let latch = Latch::default();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        {
            let mut wait = pin!(latch.wait());
            for _ in 0..100 {
                assert!(wait.as_mut().poll(&mut cx).is_pending());
            }
            assert_eq!(latch.slots.borrow().len(), 1);
        }
        let mut again = pin!(latch.wait());
        assert!(again.as_mut().poll(&mut cx).is_pending());
        assert_eq!(latch.slots.borrow().len(), 1, "the freed slot is reused");
        latch.set();
        assert!(again.as_mut().poll(&mut cx).is_ready());
    }
}
