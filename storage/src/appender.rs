//! Appends bytes to a segment file with direct I/O (O_DIRECT through io_uring).
//!
//! O_DIRECT writes must start and end on the device's alignment (usually 4 KiB). The appender keeps a
//! copy of the last, partly filled block (`tail`); each write rewrites that block followed by the new
//! bytes, zero-padded to the next boundary. The file's logical size is tracked here; the padding past
//! it is overwritten by the next write or cut off when the segment is sealed, and recovery never takes
//! it for data (zeroed bytes never pass a record's checksum).
//!
//! Large writes are split into chunks that go to the device concurrently, and `start` returns with
//! them in flight so that the log can prepare the next writes meanwhile.
//!
//! Space is reserved with fallocate in steps as the segment fills (see [`reservation_after`]): a
//! first small step when the segment is created, then steps that double up to
//! `RESERVE_STEP_BYTES_MAX`, never past the segment's largest size. A write that would pass the
//! reserved end first reserves the next step, so writes stay inside the file's length; the length
//! past the records reads as zeroes, which recovery takes for the end of the log.
//!
//! Reserved blocks are *unwritten* to the file system: a direct write into them changes the
//! file's extent map, so the kernel cannot submit it at once (io_uring hands it to a worker thread
//! that blocks on it) and `fdatasync` must commit the journal as well as flush. A busy segment
//! therefore writes zeroes a little ahead of its records (`ZERO_AHEAD_BYTES`, one write of
//! `ZERO_CHUNK_BYTES` at a time, inside the reserved length): the records then overwrite written
//! blocks, submitted inline and synced by a flush alone. A zero write never overlaps records: it
//! starts past every write started, and a write that would reach into one in flight waits for it
//! first; every way an appender ends waits for it too.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaBuffer, DmaFile};

use crate::error::StorageError;
use crate::wake::Latch;

/// Largest single write submitted to the device; a longer append is split and the pieces go in
/// parallel, which keeps the device's queue busy.
const WRITE_CHUNK_BYTES_MAX: usize = 1024 * 1024;

/// First step of space reserved for a new segment (64 KiB): one small record costs this much disk
/// until the segment is sealed, so a hundred thousand quiet streams hold about 6 GiB, where a full
/// reservation (256 MiB each) would fill any disk. It is a multiple of every DMA alignment in use
/// (512 bytes to 4 KiB), and doubling from it reaches `RESERVE_STEP_BYTES_MAX` in ten steps.
pub const RESERVE_FIRST_BYTES: u64 = 64 * 1024;

/// Largest step of space reserved at once (64 MiB): a busy segment reserves rarely (four times for
/// its last 192 MiB at the default size), and an idle one holds at most this much past its records.
pub const RESERVE_STEP_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Zeroes are written ahead of the records only once this much is reserved: a quiet segment (one
/// of a hundred thousand streams) never writes more than its records.
const ZERO_FROM_RESERVED_BYTES: u64 = 1024 * 1024;

/// How far ahead of the writes started the blocks are kept written.
const ZERO_AHEAD_BYTES: u64 = 2 * 1024 * 1024;

/// One zero write.
const ZERO_CHUNK_BYTES: u64 = 512 * 1024;

/// The writer of one segment file.
pub struct Appender {
    file: Rc<DmaFile>,
    path: PathBuf,
    alignment: usize,
    /// Logical bytes in the file.
    size: u64,
    /// The file's length as far as this appender made it: blocks reserved (or written) up to here.
    reserved: u64,
    /// The segment's largest size: reservations stop there.
    segment_bytes_max: u64,
    /// False once the file system said it cannot reserve space at all; appends then extend the file.
    reserving: bool,
    /// The bytes of the last partial block, from its aligned start to `size`.
    tail: Vec<u8>,
    /// The write of that block, while it may be in flight.
    tail_write: Option<Write>,
    /// Blocks below this hold records or zeroes written by this appender (or were written before
    /// it opened the file): direct writes below it overwrite written blocks.
    zeroed: u64,
    /// The zero write in flight, with the span it covers.
    zeroing: Option<(u64, u64, Write)>,
}

impl Appender {
    /// Creates a new, empty segment file that will hold at most about `segment_bytes_max`, and
    /// reserves the first step of its space.
    pub async fn create(path: &Path, segment_bytes_max: u64) -> Result<Appender, StorageError> {
        let file = DmaFile::create(path)
            .await
            .map_err(|e| StorageError::glommio("create", path, e))?;
        let mut appender = Appender {
            alignment: file.alignment() as usize,
            file: Rc::new(file),
            path: path.to_path_buf(),
            size: 0,
            reserved: 0,
            segment_bytes_max,
            reserving: true,
            tail: Vec::new(),
            tail_write: None,
            zeroed: 0,
            zeroing: None,
        };
        appender.reserve_for(1).await;
        Ok(appender)
    }

    /// Opens an existing segment to append after its first `size` bytes (which recovery checked);
    /// anything past them is cut off, and the next step of space is reserved after them.
    pub async fn reopen(
        path: &Path,
        size: u64,
        segment_bytes_max: u64,
    ) -> Result<Appender, StorageError> {
        let file = glommio::io::OpenOptions::new()
            .read(true)
            .write(true)
            .dma_open(path)
            .await
            .map_err(|e| StorageError::glommio("open", path, e))?;
        file.truncate(size)
            .await
            .map_err(|e| StorageError::glommio("truncate", path, e))?;
        let alignment = file.alignment() as usize;
        let tail_len = (size % alignment as u64) as usize;
        let mut tail = Vec::with_capacity(alignment);
        if tail_len > 0 {
            let start = size - tail_len as u64;
            let block = file
                .read_at_aligned(start, alignment)
                .await
                .map_err(|e| StorageError::glommio("read", path, e))?;
            if block.len() < tail_len {
                return Err(StorageError::Corruption {
                    path: path.to_path_buf(),
                    position: start,
                    reason: format!("last block has {} of {tail_len} bytes", block.len()),
                });
            }
            tail.extend_from_slice(&block[..tail_len]);
        }
        let mut appender = Appender {
            file: Rc::new(file),
            path: path.to_path_buf(),
            alignment,
            size,
            reserved: size,
            segment_bytes_max,
            reserving: true,
            tail,
            tail_write: None,
            zeroed: size.next_multiple_of(alignment as u64),
            zeroing: None,
        };
        appender.reserve_for(size + 1).await;
        Ok(appender)
    }

    /// Logical bytes in the file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's length as this appender set it: the space reserved (or written) so far. Past
    /// `size()` it holds zeroes until written, and `finish` cuts it back to `size()`.
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// Makes sure the file is reserved up to at least `end` (rounded up to the alignment), by the
    /// next step of [`reservation_after`].
    ///
    /// Best effort: when the file system cannot reserve the space (it is nearly full), the write
    /// goes on without it, extends the file itself, and fails only if it finds no room; the next
    /// write tries to reserve again. A file system without fallocate is not asked again.
    async fn reserve_for(&mut self, end: u64) {
        let end = end.next_multiple_of(self.alignment as u64);
        if end <= self.reserved || !self.reserving {
            return;
        }
        let target = reservation_after(
            self.reserved,
            end,
            self.segment_bytes_max,
            self.alignment as u64,
        );
        match self.file.pre_allocate(target, false).await {
            Ok(()) => self.reserved = target,
            Err(e) => {
                let e: std::io::Error = e.into();
                if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                    self.reserving = false;
                }
                tracing::debug!(path = %self.path.display(), error = %e, target,
                    "segment space not reserved");
            }
        }
    }

    /// Starts writing `parts` after the current end and returns at once with the writes in flight;
    /// the logical size already counts them. Whole blocks go in chunks that the device works on in
    /// parallel; the last, partial block is a write of its own, and the next `start` waits for it
    /// (the only block two writes share) before rewriting that block with more bytes in it.
    pub async fn start(&mut self, parts: &[&[u8]]) -> Result<Writes, StorageError> {
        crate::failpoint::hit(crate::failpoint::Point::Write).await;
        let data_len: usize = parts.iter().map(|p| p.len()).sum();
        if data_len == 0 {
            return Ok(Writes::default());
        }
        if let Some(previous) = self.tail_write.take() {
            previous.wait().await?;
        }
        self.reserve_for(self.size + data_len as u64).await;
        let start = self.size - self.tail.len() as u64;
        let total = self.tail.len() + data_len;
        let end = start + total.div_ceil(self.alignment) as u64 * self.alignment as u64;
        self.settle_zeroing(Some(end)).await;
        let whole = total / self.alignment * self.alignment;
        let mut source = Cursor::new(&self.tail, parts);
        let mut writes = Writes::default();
        let mut done = 0usize;
        while done < total {
            let len = if done < whole {
                (whole - done).min(WRITE_CHUNK_BYTES_MAX)
            } else {
                total - done
            };
            let padded = len.div_ceil(self.alignment) * self.alignment;
            let mut buf = self.file.alloc_dma_buffer(padded);
            let out = buf.as_bytes_mut();
            source.fill(&mut out[..len]);
            out[len..].fill(0);
            let write = Write::spawn(
                self.file.clone(),
                self.path.clone(),
                buf,
                start + done as u64,
                padded,
            );
            if done >= whole {
                self.tail_write = Some(write.clone());
            }
            writes.0.push(write);
            done += len;
        }
        self.size += data_len as u64;
        self.reserved = self.reserved.max(end);
        self.zeroed = self.zeroed.max(end);
        let tail_len = (self.size % self.alignment as u64) as usize;
        let mut tail = vec![0u8; tail_len];
        Cursor::new(&self.tail, parts).last(&mut tail);
        self.tail = tail;
        self.zero_ahead(end);
        Ok(writes)
    }

    /// Folds a zero write that is done into `zeroed`; waits for it first if it is still in flight
    /// and reaches below `before` (where records are about to be written), or whatever its span
    /// when `before` is `None`. A zero write that failed is forgotten: those blocks stay unwritten,
    /// which costs speed, not correctness.
    async fn settle_zeroing(&mut self, before: Option<u64>) {
        let Some((from, to, write)) = self.zeroing.take() else {
            return;
        };
        let must_wait = before.is_none_or(|b| from < b);
        if !must_wait && !write.is_done() {
            self.zeroing = Some((from, to, write));
            return;
        }
        match write.wait().await {
            Ok(()) if from <= self.zeroed => self.zeroed = self.zeroed.max(to),
            Ok(()) => {}
            Err(e) => {
                tracing::debug!(path = %self.path.display(), error = %e, "zeroes ahead not written")
            }
        }
    }

    /// Starts the next zero write if this segment is busy and the written blocks reach less than
    /// `ZERO_AHEAD_BYTES` past `end` (the end of the writes just started).
    fn zero_ahead(&mut self, end: u64) {
        if self.zeroing.is_some()
            || self.reserved < ZERO_FROM_RESERVED_BYTES
            || self.zeroed >= end + ZERO_AHEAD_BYTES
            || self.zeroed >= self.reserved
        {
            return;
        }
        let from = self.zeroed;
        let to = (from + ZERO_CHUNK_BYTES).min(self.reserved);
        let len = (to - from) as usize;
        let mut buf = self.file.alloc_dma_buffer(len);
        buf.as_bytes_mut().fill(0);
        let write = Write::spawn(self.file.clone(), self.path.clone(), buf, from, len);
        self.zeroing = Some((from, to, write));
    }

    /// Makes everything written so far durable.
    pub async fn sync(&self) -> Result<(), StorageError> {
        crate::failpoint::hit(crate::failpoint::Point::Fsync).await;
        self.file
            .fdatasync()
            .await
            .map_err(|e| StorageError::glommio("fdatasync", &self.path, e))
    }

    /// Cuts the padding and the reserved space off, syncs and closes: the file then holds exactly
    /// its records, and its blocks no more than them. Every write started must have been waited for.
    pub async fn finish(mut self) -> Result<(), StorageError> {
        self.settle_zeroing(None).await;
        if let Some(previous) = self.tail_write.take() {
            previous.wait().await?;
        }
        self.file
            .truncate(self.size)
            .await
            .map_err(|e| StorageError::glommio("truncate", &self.path, e))?;
        self.sync().await?;
        match Rc::try_unwrap(self.file) {
            Ok(file) => file
                .close()
                .await
                .map_err(|e| StorageError::glommio("close", &self.path, e)),
            Err(_) => Ok(()),
        }
    }

    /// Closes the file as it is, for a segment about to be cut or deleted under it: no cut back to
    /// the records, no sync. Every write started must have been waited for.
    pub async fn discard(mut self) {
        self.settle_zeroing(None).await;
        if let Some(previous) = self.tail_write.take() {
            let _ = previous.wait().await;
        }
        if let Ok(file) = Rc::try_unwrap(self.file) {
            let _ = file.close().await;
        }
    }
}

/// The file length to reserve when the file is reserved up to `reserved` and a write must reach
/// `end` (both multiples of `alignment`): one step past `reserved`, the step doubling with the
/// reservation from `RESERVE_FIRST_BYTES` up to `RESERVE_STEP_BYTES_MAX`, at least `end`, and never
/// past the segment's largest size (rounded up to the alignment) unless `end` itself is past it (a
/// single record larger than a segment).
///
/// Reserved blocks are allocated and the file's length covers them, so direct writes inside them do
/// not change the file's size, and the blocks of a segment end up in few extents (the zeroes written
/// ahead of a busy segment's records then spare its writes the extent changes; see the module). The
/// length past the records is never taken for data: recovery stops at the first zeroed record and
/// sealing cuts the file to its records.
pub fn reservation_after(reserved: u64, end: u64, segment_bytes_max: u64, alignment: u64) -> u64 {
    let step = reserved.clamp(RESERVE_FIRST_BYTES, RESERVE_STEP_BYTES_MAX);
    let limit = segment_bytes_max.next_multiple_of(alignment).max(end);
    (reserved + step)
        .next_multiple_of(alignment)
        .max(end)
        .min(limit)
}

/// One write in flight; clones share it.
#[derive(Clone)]
pub struct Write(Rc<WriteState>);

struct WriteState {
    done: Latch,
    result: RefCell<Option<Result<(), StorageError>>>,
}

impl Write {
    fn spawn(
        file: Rc<DmaFile>,
        path: PathBuf,
        buf: DmaBuffer,
        position: u64,
        padded: usize,
    ) -> Write {
        let state = Rc::new(WriteState {
            done: Latch::default(),
            result: RefCell::new(None),
        });
        let shared = state.clone();
        glommio::spawn_local(async move {
            let result = match file.write_at(buf, position).await {
                Ok(n) if n == padded => Ok(()),
                Ok(n) => Err(StorageError::Io {
                    op: "write",
                    path,
                    kind: std::io::ErrorKind::WriteZero,
                    message: format!("short write: {n} of {padded} bytes"),
                }),
                Err(e) => Err(StorageError::glommio("write", &path, e)),
            };
            *shared.result.borrow_mut() = Some(result);
            shared.done.set();
        })
        .detach();
        Write(state)
    }

    /// Whether the write is over (done or failed).
    pub fn is_done(&self) -> bool {
        self.0.done.is_set()
    }

    /// Waits for the write and returns its outcome.
    pub async fn wait(&self) -> Result<(), StorageError> {
        self.0.done.wait().await;
        self.0
            .result
            .borrow()
            .clone()
            .unwrap_or(Err(StorageError::Closed))
    }
}

/// The writes of one `start`.
#[derive(Default)]
pub struct Writes(Vec<Write>);

impl Writes {
    /// Waits for every write; the first failure wins.
    pub async fn wait(self) -> Result<(), StorageError> {
        let mut outcome = Ok(());
        for write in self.0 {
            if let Err(e) = write.wait().await {
                if outcome.is_ok() {
                    outcome = Err(e);
                }
            }
        }
        outcome
    }
}

/// Reads the concatenation of a tail and some parts, front to back.
struct Cursor<'a> {
    slices: Vec<&'a [u8]>,
    index: usize,
    within: usize,
}

impl<'a> Cursor<'a> {
    fn new(tail: &'a [u8], parts: &[&'a [u8]]) -> Cursor<'a> {
        let mut slices = Vec::with_capacity(parts.len() + 1);
        slices.push(tail);
        slices.extend_from_slice(parts);
        Cursor {
            slices,
            index: 0,
            within: 0,
        }
    }

    /// Copies the next `out.len()` bytes into `out`.
    fn fill(&mut self, out: &mut [u8]) {
        let mut filled = 0;
        while filled < out.len() {
            let slice = self.slices[self.index];
            let n = (slice.len() - self.within).min(out.len() - filled);
            out[filled..filled + n].copy_from_slice(&slice[self.within..self.within + n]);
            filled += n;
            self.within += n;
            if self.within == slice.len() {
                self.index += 1;
                self.within = 0;
            }
        }
    }

    /// Copies the last `out.len()` bytes of the whole into `out`.
    fn last(&self, out: &mut [u8]) {
        let mut remaining = out.len();
        for slice in self.slices.iter().rev() {
            if remaining == 0 {
                break;
            }
            let n = slice.len().min(remaining);
            out[remaining - n..remaining].copy_from_slice(&slice[slice.len() - n..]);
            remaining -= n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{reservation_after, Cursor, RESERVE_FIRST_BYTES, RESERVE_STEP_BYTES_MAX};

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn reservations_double_from_the_first_step_up_to_the_largest_step() {
        let mut reserved = 0;
        let mut steps = Vec::new();
        while reserved < 256 * MIB {
            let next = reservation_after(reserved, reserved + 4096, 256 * MIB, 4096);
            steps.push(next - reserved);
            reserved = next;
        }
        assert_eq!(steps[0], RESERVE_FIRST_BYTES);
        assert_eq!(steps[1], RESERVE_FIRST_BYTES);
        assert_eq!(steps[2], 2 * RESERVE_FIRST_BYTES);
        assert!(steps.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*steps.last().unwrap(), RESERVE_STEP_BYTES_MAX);
        assert_eq!(reserved, 256 * MIB);
        assert!(
            steps.len() <= 16,
            "{} reservations per segment",
            steps.len()
        );
    }

    #[test]
    fn a_reservation_covers_the_write_but_not_more_than_the_segment() {
        // A large write reaches past one step.
        assert_eq!(reservation_after(0, 3 * MIB, 256 * MIB, 4096), 3 * MIB);
        // Near the end, the step stops at the segment's size.
        assert_eq!(
            reservation_after(250 * MIB, 251 * MIB, 256 * MIB, 4096),
            256 * MIB
        );
        // A segment size that is not aligned is rounded up to the alignment.
        assert_eq!(reservation_after(0, 4096, 10_000, 4096), 12_288);
        // A single record larger than the segment still fits.
        assert_eq!(reservation_after(0, 20 * MIB, 8 * MIB, 4096), 20 * MIB);
        // Every reservation is aligned.
        assert_eq!(reservation_after(4096, 8192, 256 * MIB, 512) % 512, 0);
    }

    #[test]
    fn the_cursor_reads_the_concatenation() {
        let tail = b"ab".to_vec();
        let parts: [&[u8]; 3] = [b"cde", b"", b"fg"];
        let mut cursor = Cursor::new(&tail, &parts);
        let mut out = [0u8; 4];
        cursor.fill(&mut out);
        assert_eq!(&out, b"abcd");
        let mut rest = [0u8; 3];
        cursor.fill(&mut rest);
        assert_eq!(&rest, b"efg");
        let mut last = [0u8; 5];
        Cursor::new(&tail, &parts).last(&mut last);
        assert_eq!(&last, b"cdefg");
    }
}
