//! Gives the allocator's free memory back to the system once a shard goes quiet.
//!
//! Connections give their grown buffers back to the allocator when they go idle, but glibc keeps
//! freed memory in its arenas (it raises its thresholds after the first large buffer is freed), so
//! a burst would stay in the broker's RSS for good. A shard whose traffic counters have not moved
//! for `QUIET_FOR`, after moving, asks the allocator to return what it holds free: once per quiet
//! spell, never while traffic flows.

use std::rc::Rc;
use std::time::Duration;

use super::core::shard::Shard;

/// How long a shard's counters must stay still before the free memory is returned: longer than
/// the second idle connections wait before giving their buffers back.
const QUIET_FOR: Duration = Duration::from_secs(5);

/// Runs until the shard stops.
pub(super) async fn run(core: Rc<Shard>) {
    let mut seen = activity(&core);
    let mut trimmed = seen;
    while !core.stopping.is_set() {
        glommio::timer::sleep(QUIET_FOR).await;
        let now = activity(&core);
        if now == seen && now != trimmed {
            release_free_memory();
            trimmed = now;
        }
        seen = now;
    }
}

/// A number that changes whenever the shard moves a message or accepts a connection.
fn activity(core: &Shard) -> u64 {
    let s = &core.stats;
    [
        &s.connections_accepted,
        &s.msgs_in,
        &s.bytes_in,
        &s.msgs_out,
        &s.bytes_out,
        &s.forwards_in,
        &s.forwards_out,
    ]
    .iter()
    .fold(0u64, |sum, c| sum.wrapping_add(c.get()))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists; any thread may call it.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}
