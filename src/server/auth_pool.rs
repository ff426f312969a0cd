//! The hashing threads: where every shard's password and token checks run.
//!
//! Hashes are slow by design (argon2 takes tens of milliseconds and megabytes of memory), so they
//! run neither on a shard nor on its one blocking thread, which glommio also uses for the file
//! truncates and removes of segment rolls and for consumer state writes: a flood of bad passwords
//! there would hold back durable acks. Instead a few threads of their own, shared by all shards,
//! take checks from one bounded queue:
//!
//! ```text
//! shard ──try_send(Check)──▶ [queue: AUTH_QUEUE_MAX] ──▶ auth-0 … auth-N ──oneshot──▶ shard
//! ```
//!
//! A shard never blocks on the queue: when it is full the client is refused at once (and the
//! refusal logged), so a flood costs a bounded amount of memory and of CPU. The shard awaits the
//! answer on a one-shot channel, whose waker glommio accepts from another thread. The threads run
//! at a lower priority than the shards, and the cache of verified credentials lives here, behind a
//! mutex that only these threads take.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_channel::oneshot;

use super::auth::{Credentials, Refusal, User, Users, VerifiedCache};

/// Hashing threads when the configuration says nothing: two, or one on a single CPU. Each check
/// holds a CPU for its whole length and argon2 holds its memory too, so more threads would take
/// cores from the shards under a flood of logins; two keep logins flowing while one thread is
/// busy with a slow hash.
pub fn auth_threads_default() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(2))
}

/// Checks waiting for a hashing thread. At tens of milliseconds a check, a full queue drains in
/// about a second, within the default auth timeout (2 s); a longer one would only hold clients
/// that time out before their turn.
pub const AUTH_QUEUE_MAX: usize = 64;

/// How much lower the hashing threads' priority is than the shards' (a nice increment): when a
/// shard and a hashing thread want the same CPU, the shard gets about three times the share, so a
/// flood of logins slows logins more than messages, while logins still progress.
const AUTH_THREAD_NICE: libc::c_int = 5;

pub type Answer = Result<Arc<User>, Refusal>;

/// One check: the credentials and where its answer goes.
struct Check {
    creds: Credentials,
    answer: oneshot::Sender<Answer>,
}

/// The hashing threads and the queue in front of them. Dropping the last handle closes the
/// queue; the threads finish the check at hand and exit.
#[derive(Debug)]
pub struct AuthPool {
    queue: SyncSender<Check>,
}

/// Why a check was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// The queue is full: every thread is busy and `AUTH_QUEUE_MAX` checks wait.
    Full,
    /// The threads are gone (the server is stopping).
    Closed,
}

impl AuthPool {
    /// Starts `threads` hashing threads (at least one) for `users`.
    pub fn start(users: Arc<Users>, threads: usize) -> std::io::Result<AuthPool> {
        let (queue, checks) = mpsc::sync_channel::<Check>(AUTH_QUEUE_MAX);
        let checks = Arc::new(Mutex::new(checks));
        let cache = Arc::new(Mutex::new(VerifiedCache::default()));
        for index in 0..threads.max(1) {
            let (users, checks, cache) = (users.clone(), checks.clone(), cache.clone());
            std::thread::Builder::new()
                .name(format!("auth-{index}"))
                .spawn(move || run_thread(&users, &checks, &cache))?;
        }
        Ok(AuthPool { queue })
    }

    /// Queues a check without waiting; the receiver gets the answer. Refuses at once when the
    /// queue is full.
    pub fn check(&self, creds: Credentials) -> Result<oneshot::Receiver<Answer>, QueueError> {
        let (answer, receiver) = oneshot::channel();
        match self.queue.try_send(Check { creds, answer }) {
            Ok(()) => Ok(receiver),
            Err(TrySendError::Full(_)) => Err(QueueError::Full),
            Err(TrySendError::Disconnected(_)) => Err(QueueError::Closed),
        }
    }
}

fn run_thread(users: &Users, checks: &Mutex<Receiver<Check>>, cache: &Mutex<VerifiedCache>) {
    lower_priority();
    loop {
        // Only the wait for the next check is under the lock; the hash is not.
        let check = match checks.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        let Ok(Check { creds, answer }) = check else {
            return;
        };
        // A client that went away (closed, timed out) while queued is not worth a hash.
        if answer.is_canceled() {
            continue;
        }
        let result = users.authenticate_cached(&creds, cache, Instant::now());
        if let Err(Ok(user)) = answer.send(result) {
            // The client left during the hash: give back the connection it would have taken.
            user.release();
        }
    }
}

/// Lowers the calling thread's priority by `AUTH_THREAD_NICE` (Linux applies `setpriority` with
/// a thread id to that thread alone). Failing leaves the priority as it was, which is only slower.
fn lower_priority() {
    // SAFETY: gettid and setpriority take no pointers and affect only this thread.
    let result = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        libc::setpriority(libc::PRIO_PROCESS, tid, now + AUTH_THREAD_NICE)
    };
    if result != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot lower the hashing thread's priority");
    }
}
