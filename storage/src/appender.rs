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

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaBuffer, DmaFile};

use crate::error::StorageError;
use crate::wake::Latch;

/// Largest single write submitted to the device; a longer append is split and the pieces go in
/// parallel, which keeps the device's queue busy.
const WRITE_CHUNK_BYTES_MAX: usize = 1024 * 1024;

/// The writer of one segment file.
pub struct Appender {
    file: Rc<DmaFile>,
    path: PathBuf,
    alignment: usize,
    /// Logical bytes in the file.
    size: u64,
    /// The bytes of the last partial block, from its aligned start to `size`.
    tail: Vec<u8>,
    /// The write of that block, while it may be in flight.
    tail_write: Option<Write>,
}

impl Appender {
    /// Creates a new, empty segment file with room for `reserve_bytes` (see [`Appender::reserve`]).
    pub async fn create(path: &Path, reserve_bytes: u64) -> Result<Appender, StorageError> {
        let file = DmaFile::create(path)
            .await
            .map_err(|e| StorageError::glommio("create", path, e))?;
        reserve(&file, path, reserve_bytes).await?;
        Ok(Appender {
            alignment: file.alignment() as usize,
            file: Rc::new(file),
            path: path.to_path_buf(),
            size: 0,
            tail: Vec::new(),
            tail_write: None,
        })
    }

    /// Opens an existing segment to append after its first `size` bytes (which recovery checked);
    /// anything past them is cut off, and room is made for `reserve_bytes`.
    pub async fn reopen(
        path: &Path,
        size: u64,
        reserve_bytes: u64,
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
        reserve(&file, path, reserve_bytes.max(size)).await?;
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
        Ok(Appender {
            file: Rc::new(file),
            path: path.to_path_buf(),
            alignment,
            size,
            tail,
            tail_write: None,
        })
    }

    /// Logical bytes in the file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
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
        let start = self.size - self.tail.len() as u64;
        let total = self.tail.len() + data_len;
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
        let tail_len = (self.size % self.alignment as u64) as usize;
        let mut tail = vec![0u8; tail_len];
        Cursor::new(&self.tail, parts).last(&mut tail);
        self.tail = tail;
        Ok(writes)
    }

    /// Makes everything written so far durable.
    pub async fn sync(&self) -> Result<(), StorageError> {
        crate::failpoint::hit(crate::failpoint::Point::Fsync).await;
        self.file
            .fdatasync()
            .await
            .map_err(|e| StorageError::glommio("fdatasync", &self.path, e))
    }

    /// Cuts the padding off, syncs and closes: the file then holds exactly its records. Every write
    /// started must have been waited for.
    pub async fn finish(mut self) -> Result<(), StorageError> {
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
}

/// Allocates the file's blocks up to `bytes` and sets its length there (the new blocks read as
/// zeroes). Direct writes inside the file's length do not change its size, so the kernel can submit
/// them without blocking, where writes that extend a file go through a worker thread; and the blocks
/// of a segment end up contiguous. The length past the records is never taken for data: recovery
/// stops at the first zeroed record and sealing cuts the file to its records.
///
/// Best effort: when the file system cannot reserve that much (it is nearly full, or does not
/// support fallocate), appends go on without it and fail only when a write itself finds no room.
async fn reserve(file: &DmaFile, path: &Path, bytes: u64) -> Result<(), StorageError> {
    if bytes == 0 {
        return Ok(());
    }
    if let Err(e) = file.pre_allocate(bytes, false).await {
        tracing::debug!(path = %path.display(), error = %e, "segment space not reserved");
    }
    Ok(())
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
    use super::Cursor;

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
