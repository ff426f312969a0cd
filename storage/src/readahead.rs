//! Read-ahead for readers that go through a log in order (a consumer catching up, a Kafka fetch, a
//! follower, a replay). When a read from disk stops at its byte budget, the bytes it read past that
//! point are kept, and once fewer than half a read-ahead of them is left, the bytes that follow are
//! read in the background: the next read in order finds them in memory instead of waiting for the
//! device, so the disk works while the reader delivers, waits for acks and asks again.
//!
//! One slot per log, keyed by where the next read in order starts (segment, offset) and by the
//! log's truncation count; a read that starts elsewhere leaves it alone. Bytes read ahead are taken
//! only for records that were committed when the read started (`Preread::offset_end`); past those,
//! the walk reads the disk again. A slot no read has used for `KEEP` is dropped, so a log read once
//! holds no memory for long.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::Path;
use std::rc::{Rc, Weak};
use std::time::Duration;

use bytes::Bytes;
use glommio::io::DmaFile;
use glommio::task::JoinHandle;

use crate::record::whole_records_len;
use crate::segment::{self, READ_AHEAD_BYTES};

/// How long bytes read ahead wait for their reader.
const KEEP: Duration = Duration::from_secs(1);

/// Largest read ahead, for readers that ask for more than `READ_AHEAD_BYTES` at a time.
const READ_AHEAD_BYTES_MAX: usize = 1024 * 1024;

/// Reads that ask for fewer bytes (one record: a redelivery, a probe) neither use nor replace the
/// slot.
pub(crate) const ASKED_BYTES_MIN: usize = 1024;

/// Where the next read in order starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key {
    pub segment_base: u64,
    pub truncations: u64,
    pub offset: u64,
}

/// Bytes of a segment from the start of the record at `position` (which takes `offset`), read
/// before they were asked for: only the records below `offset_end` may be taken from them.
#[derive(Debug, Clone)]
pub(crate) struct Preread {
    pub position: u64,
    pub offset: u64,
    pub bytes: Bytes,
    pub offset_end: u64,
}

enum Part {
    Ready(Preread),
    Reading {
        position: u64,
        offset: u64,
        offset_end: u64,
        handle: JoinHandle<Option<Bytes>>,
    },
}

impl Part {
    fn start(&self) -> (u64, u64) {
        match self {
            Part::Ready(pre) => (pre.position, pre.offset),
            Part::Reading {
                position, offset, ..
            } => (*position, *offset),
        }
    }
}

/// Consecutive pieces of a segment read ahead, each starting at a record, in order.
pub(crate) struct Parts {
    parts: VecDeque<Part>,
    /// How far bytes the walk reads from the disk itself are trusted: the commit point when the
    /// read started (`u64::MAX` for walks that check records themselves).
    pub(crate) disk_offset_end: u64,
}

impl Default for Parts {
    fn default() -> Self {
        Parts {
            parts: VecDeque::new(),
            disk_offset_end: u64::MAX,
        }
    }
}

impl Parts {
    /// Where the first piece starts: `(position, offset)`.
    pub(crate) fn start(&self) -> Option<(u64, u64)> {
        self.parts.front().map(Part::start)
    }

    /// The piece that starts at `position` with the record taking `offset`, waiting for it if it
    /// is still being read; `None` (and nothing kept) when the next piece starts elsewhere or its
    /// read failed.
    pub(crate) async fn next(&mut self, position: u64, offset: u64) -> Option<Preread> {
        if self.start()? != (position, offset) {
            self.clear();
            return None;
        }
        match self.parts.pop_front()? {
            Part::Ready(pre) => Some(pre),
            Part::Reading {
                position,
                offset,
                offset_end,
                handle,
            } => match handle.await.flatten() {
                Some(bytes) => Some(Preread {
                    position,
                    offset,
                    bytes,
                    offset_end,
                }),
                None => {
                    self.clear();
                    None
                }
            },
        }
    }

    /// Puts the unread rest of a piece back in front.
    pub(crate) fn put_back(&mut self, pre: Preread) {
        if !pre.bytes.is_empty() {
            self.parts.push_front(Part::Ready(pre));
        }
    }

    fn clear(&mut self) {
        for part in self.parts.drain(..) {
            if let Part::Reading { handle, .. } = part {
                handle.cancel();
            }
        }
    }

    /// Bytes ready, or `None` while a piece is still being read.
    fn ready_bytes(&self) -> Option<usize> {
        self.parts.iter().try_fold(0, |sum, part| match part {
            Part::Ready(pre) => Some(sum + pre.bytes.len()),
            Part::Reading { .. } => None,
        })
    }

    /// Cuts the last piece back to its whole, trusted records and returns where the bytes after
    /// it start; the piece goes if it holds none.
    fn cut_to_records(&mut self) -> Option<(u64, u64)> {
        let Part::Ready(last) = self.parts.pop_back()? else {
            return None;
        };
        let (at, offset) = whole_records_len(&last.bytes, last.offset, last.offset_end);
        if at == 0 {
            return Some((last.position, last.offset));
        }
        let end = (last.position + at as u64, offset);
        self.parts.push_back(Part::Ready(Preread {
            bytes: last.bytes.slice(..at),
            ..last
        }));
        Some(end)
    }
}

struct Slot {
    key: Key,
    parts: Parts,
    generation: u64,
}

/// A log's read-ahead slot.
#[derive(Default)]
pub(crate) struct ReadAhead {
    slot: RefCell<Option<Slot>>,
    generations: Cell<u64>,
    sweeping: Cell<bool>,
}

impl ReadAhead {
    /// What is kept for a read starting at `key`; nothing if the slot is for another place.
    pub(crate) fn take(&self, key: Key) -> Parts {
        let mut slot = self.slot.borrow_mut();
        if slot.as_ref().is_some_and(|s| s.key == key) {
            slot.take().map(|s| s.parts).unwrap_or_default()
        } else {
            Parts::default()
        }
    }

    /// Drops whatever is kept (the log is closing).
    pub(crate) fn drop_all(&self) {
        if let Some(mut old) = self.slot.borrow_mut().take() {
            old.parts.clear();
        }
    }

    /// After a read that stopped at its budget at `key`, with `parts` left from it: keeps them
    /// for the next read, and starts reading what follows them when they run low. `end` is the
    /// segment's size and `committed` the log's commit point, now; `asked` what the read asked for.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn keep(
        this: &Rc<Self>,
        key: Key,
        mut parts: Parts,
        file: &Rc<DmaFile>,
        path: &Path,
        end: u64,
        committed: u64,
        asked: usize,
    ) {
        let want = asked.clamp(READ_AHEAD_BYTES, READ_AHEAD_BYTES_MAX);
        if parts.ready_bytes().is_some_and(|ready| ready < want / 2) {
            if let Some((position, offset)) = parts.cut_to_records() {
                if position < end && offset < committed {
                    let len = ((end - position) as usize).min(want);
                    let file = file.clone();
                    let path = path.to_path_buf();
                    let handle = glommio::spawn_local(async move {
                        segment::read(&file, &path, position, len).await.ok()
                    })
                    .detach();
                    parts.parts.push_back(Part::Reading {
                        position,
                        offset,
                        offset_end: committed,
                        handle,
                    });
                }
            }
        }
        if parts.parts.is_empty() {
            return;
        }
        let generation = this.generations.get() + 1;
        this.generations.set(generation);
        if let Some(mut old) = this.slot.borrow_mut().replace(Slot {
            key,
            parts,
            generation,
        }) {
            old.parts.clear();
        }
        if !this.sweeping.replace(true) {
            glommio::spawn_local(sweep(Rc::downgrade(this))).detach();
        }
    }
}

/// Drops the slot once a whole `KEEP` passed without a read replacing it.
async fn sweep(this: Weak<ReadAhead>) {
    let mut seen = None;
    loop {
        glommio::timer::sleep(KEEP).await;
        let Some(this) = this.upgrade() else {
            return;
        };
        let mut slot = this.slot.borrow_mut();
        let generation = slot.as_ref().map(|s| s.generation);
        if generation.is_none() || generation == seen {
            if let Some(mut old) = slot.take() {
                old.parts.clear();
            }
            this.sweeping.set(false);
            return;
        }
        seen = generation;
    }
}
