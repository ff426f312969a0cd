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
                let mut wakers = self.wakers.borrow_mut();
                if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        })
        .await
    }
}

/// A flag that is set once and that tasks can wait for: the shard's stop signal.
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

    /// Whether the latch is set.
    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    /// Waits until the latch is set.
    pub async fn wait(&self) {
        self.event.wait_until(|| self.set.get()).await
    }
}
