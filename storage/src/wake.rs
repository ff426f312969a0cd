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
///
/// Waits are often one arm of a select (`or`) that is dropped when the other arm wins, and polled
/// again and again for the other arm's sake: each wait owns one slot, re-polling replaces its waker
/// there, and dropping the wait frees the slot, so an event shared by many tasks never accumulates
/// wakers.
#[derive(Default)]
pub struct Event {
    slots: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl Event {
    /// Wakes every waiter so that it checks its condition again.
    pub fn notify_all(&self) {
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

    /// Waits until `condition` returns true; it is checked now and after each notification.
    pub fn wait_until<F: FnMut() -> bool>(&self, condition: F) -> EventWait<'_, F> {
        EventWait {
            event: self,
            condition,
            slot: None,
        }
    }

    /// Slots in use or free (for tests: the bound on what waiting costs).
    pub fn slots(&self) -> usize {
        self.slots.borrow().len()
    }
}

/// The future of [`Event::wait_until`].
pub struct EventWait<'a, F> {
    event: &'a Event,
    condition: F,
    slot: Option<usize>,
}

impl<F: FnMut() -> bool + Unpin> std::future::Future for EventWait<'_, F> {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if (this.condition)() {
            return Poll::Ready(());
        }
        let waker = Some(cx.waker().clone());
        let mut slots = this.event.slots.borrow_mut();
        match this.slot {
            Some(slot) => slots[slot] = waker,
            None => {
                let slot = match this.event.free.borrow_mut().pop() {
                    Some(slot) => {
                        slots[slot] = waker;
                        slot
                    }
                    None => {
                        slots.push(waker);
                        slots.len() - 1
                    }
                };
                this.slot = Some(slot);
            }
        }
        Poll::Pending
    }
}

impl<F> Drop for EventWait<'_, F> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.event.slots.borrow_mut()[slot] = None;
            self.event.free.borrow_mut().push(slot);
        }
    }
}

/// A flag that is set once and that tasks can wait for (a shard's stop signal, a connection's end).
/// An [`Event`] whose condition is the flag, so a wait polled again and again for another arm's
/// sake holds one slot, as every event wait does.
#[derive(Default)]
pub struct Latch {
    set: Cell<bool>,
    event: Event,
}

impl Latch {
    /// Sets the latch and wakes everyone waiting on it.
    pub fn set(&self) {
        self.set.set(true);
        self.event.notify_all();
    }

    /// Unsets the latch: waiters from now on wait for the next `set`.
    pub fn reset(&self) {
        self.set.set(false);
    }

    /// Whether the latch is set.
    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    /// Waits until the latch is set.
    pub fn wait(&self) -> impl std::future::Future<Output = ()> + '_ {
        self.event.wait_until(|| self.set.get())
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
            assert_eq!(latch.event.slots(), 1);
        }
        let mut again = pin!(latch.wait());
        assert!(again.as_mut().poll(&mut cx).is_pending());
        assert_eq!(latch.event.slots(), 1, "the freed slot is reused");
        latch.set();
        assert!(again.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn event_waits_that_are_polled_and_dropped_leave_no_wakers_behind() {
        let event = Event::default();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        for _ in 0..100 {
            let mut wait = pin!(event.wait_until(|| false));
            for _ in 0..10 {
                assert!(wait.as_mut().poll(&mut cx).is_pending());
            }
        }
        assert_eq!(event.slots(), 1, "one slot, reused by every wait");
        let ready = Cell::new(false);
        let mut wait = pin!(event.wait_until(|| ready.get()));
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        ready.set(true);
        event.notify_all();
        assert!(wait.as_mut().poll(&mut cx).is_ready());
    }
}
