//! Reading a partition log: records from an offset, from the in-memory cache when it holds them,
//! else by walking the segment from its index floor (or from bytes read ahead), and the offset of a
//! time.

use std::path::PathBuf;
use std::rc::Rc;

use glommio::io::DmaFile;

use crate::error::StorageError;
use crate::log::{PartitionLog, READ_ATTEMPTS_MAX};
use crate::readahead::{self, Key, ReadAhead};
use crate::record::Record;
use crate::segment::walk_from;

impl PartitionLog {
    /// Records from `from`, about `max_bytes` of bodies but at least one record, committed ones
    /// only. Recent records come from memory; older ones from disk. If `from` falls inside a span
    /// record, that record comes first (its offset is below `from`). Never a truncated record.
    pub async fn read(&self, from: u64, max_bytes: usize) -> Result<Vec<Record>, StorageError> {
        let end = self.inner.state.borrow().readable_end();
        self.read_below(from, max_bytes, end).await
    }

    /// As `read`, but up to the committed end whatever the visible bound: a replicated log's
    /// records that its group has not agreed on yet, for the group itself.
    pub async fn read_durable(
        &self,
        from: u64,
        max_bytes: usize,
    ) -> Result<Vec<Record>, StorageError> {
        let end = self.inner.state.borrow().committed;
        self.read_below(from, max_bytes, end).await
    }

    /// Records from `from` below `end` (bounded by the committed end).
    async fn read_below(
        &self,
        from: u64,
        max_bytes: usize,
        end: u64,
    ) -> Result<Vec<Record>, StorageError> {
        // A truncation that lands while a read is at the disk may have cut its records, or the file
        // under it (which would look like corruption): read again.
        for _ in 0..READ_ATTEMPTS_MAX {
            let truncations = self.inner.state.borrow().truncations;
            let result = self.read_once(from, max_bytes, end).await;
            if self.inner.state.borrow().truncations == truncations {
                return result;
            }
        }
        Err(StorageError::Truncated {
            offset: self.next_offset(),
        })
    }

    async fn read_once(
        &self,
        from: u64,
        max_bytes: usize,
        end: u64,
    ) -> Result<Vec<Record>, StorageError> {
        let (committed, start, truncations) = {
            let st = self.inner.state.borrow();
            (end.min(st.committed), st.start_offset, st.truncations)
        };
        if from < start {
            return Err(StorageError::OffsetOutOfRange {
                requested: from,
                start,
            });
        }
        if from >= committed {
            return Ok(Vec::new());
        }
        if let Some(records) = self
            .inner
            .state
            .borrow()
            .cache
            .read(from, committed, max_bytes)
        {
            return Ok(records);
        }
        let ahead = max_bytes >= readahead::ASKED_BYTES_MIN;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut next = from;
        while next < committed && (out.is_empty() || bytes < max_bytes) {
            let Some(place) = self.locate(next).await? else {
                break;
            };
            let key = Key {
                segment_base: place.base,
                truncations,
                offset: next,
            };
            let mut parts = if ahead {
                self.inner.read_ahead.take(key)
            } else {
                Default::default()
            };
            parts.disk_offset_end = committed;
            let from_place = parts.start().unwrap_or((place.position, place.offset));
            let budget = max_bytes;
            let mut stopped = false;
            let mut refused = None;
            let end = walk_from(
                &place.file,
                &place.path,
                from_place,
                place.end,
                &mut parts,
                self.inner.body_bytes_max,
                |visit| {
                    if visit.offset >= committed {
                        stopped = true;
                        return false;
                    }
                    if visit.offset + u64::from(visit.count) <= next {
                        return true;
                    }
                    if !out.is_empty() && bytes + visit.body.len() > budget {
                        stopped = true;
                        refused = Some(visit.offset);
                        return false;
                    }
                    bytes += visit.body.len();
                    out.push(Record {
                        offset: visit.offset,
                        count: visit.count,
                        timestamp_ns: visit.timestamp_ns,
                        body: visit.body,
                    });
                    true
                },
            )
            .await?;
            if let Some((position, reason)) = end.invalid {
                return Err(StorageError::Corruption {
                    path: place.path,
                    position,
                    reason,
                });
            }
            if stopped {
                if let Some(offset) = refused.filter(|_| ahead) {
                    self.keep_read_ahead(Key { offset, ..key }, parts, &place, max_bytes);
                }
                break;
            }
            let reached = out.last().map_or(next, Record::end);
            if reached < place.segment_next.min(committed) {
                // The walk ended early without reason: the segment is shorter than it claims.
                return Err(StorageError::Corruption {
                    path: place.path,
                    position: end.position,
                    reason: format!("segment ends before offset {reached}"),
                });
            }
            next = place.segment_next;
        }
        Ok(out)
    }

    /// Keeps what a read that stopped at `key` read past its budget, and reads on from there in
    /// the background when that is little.
    fn keep_read_ahead(&self, key: Key, parts: readahead::Parts, place: &Place, asked: usize) {
        let (end, committed) = {
            let st = self.inner.state.borrow();
            if st.truncations != key.truncations {
                return;
            }
            let end = st
                .segments
                .iter()
                .find(|s| s.base == key.segment_base)
                .map_or(0, |s| s.size);
            (end, st.committed)
        };
        ReadAhead::keep(
            &self.inner.read_ahead,
            key,
            parts,
            &place.file,
            &place.path,
            end,
            committed,
            asked,
        );
    }

    /// Where to start reading for `offset`: the segment's file, the index floor, and its bounds.
    async fn locate(&self, offset: u64) -> Result<Option<Place>, StorageError> {
        let (base, path, cached, position, floor, end, segment_next) = {
            let st = self.inner.state.borrow();
            let Some(seg) = st.segments.iter().rev().find(|s| s.base <= offset) else {
                return Ok(None);
            };
            if offset >= seg.next_offset {
                return Ok(None);
            }
            let (position, floor) = seg
                .index
                .floor_offset(offset)
                .map_or((0, seg.base), |e| (e.position, e.offset));
            (
                seg.base,
                seg.path.clone(),
                seg.reader.clone(),
                position,
                floor,
                seg.size,
                seg.next_offset,
            )
        };
        let file = match cached {
            Some(file) => file,
            None => {
                let file = Rc::new(
                    DmaFile::open(&path)
                        .await
                        .map_err(|e| StorageError::glommio("open", &path, e))?,
                );
                let mut st = self.inner.state.borrow_mut();
                if let Some(seg) = st.segments.iter_mut().find(|s| s.path == path) {
                    seg.reader = Some(file.clone());
                }
                file
            }
        };
        Ok(Some(Place {
            base,
            file,
            path,
            position,
            offset: floor,
            end,
            segment_next,
        }))
    }

    /// The first offset whose timestamp is at or after `timestamp_ns`; `next_offset()` if none.
    pub async fn offset_for_time(&self, timestamp_ns: u64) -> Result<u64, StorageError> {
        let (committed, start, segment_base) = {
            let st = self.inner.state.borrow();
            let seg = st
                .segments
                .iter()
                .find(|s| !s.is_empty() && s.max_timestamp_ns >= timestamp_ns);
            (st.readable_end(), st.start_offset, seg.map(|s| s.base))
        };
        let Some(base) = segment_base else {
            return Ok(committed);
        };
        let floor = {
            let st = self.inner.state.borrow();
            st.segments
                .iter()
                .find(|s| s.base == base)
                .and_then(|s| s.index.floor_time(timestamp_ns).map(|e| e.offset))
                .unwrap_or(base)
        };
        let mut from = floor.max(start);
        loop {
            let records = self.read(from, 256 * 1024).await?;
            let Some(last) = records.last() else {
                return Ok(committed);
            };
            if let Some(found) = records.iter().find(|r| r.timestamp_ns >= timestamp_ns) {
                return Ok(found.offset);
            }
            from = last.end();
        }
    }
}

struct Place {
    base: u64,
    file: Rc<DmaFile>,
    path: PathBuf,
    position: u64,
    offset: u64,
    end: u64,
    segment_next: u64,
}
