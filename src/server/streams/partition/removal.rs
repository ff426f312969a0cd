//! What a partition removes besides retention: purges, the oldest messages past `max_msgs`, and
//! messages deleted from the middle (listed beside the log, skipped by every reader).

use super::*;

impl Partition {
    /// Removes what a stored batch removes besides: older messages of its subjects (listed as
    /// deleted) and, for a rollup of the stream, everything before it. What is listed in memory at
    /// once; the list on disk follows. The list is derived again from the log at start, so a crash
    /// before it is written loses nothing.
    pub(super) async fn apply_removal(&self, log: &PartitionLog, removal: Removal) {
        if let Some(below) = removal.below {
            if let Err(e) = log.truncate_before(below).await {
                tracing::warn!(stream = %self.config.name, partition = self.index, error = %e,
                    "cannot remove the messages a rollup replaced");
            }
            self.forget_deleted_below(log.first_offset()).await;
        }
        if removal.offsets.is_empty() {
            return;
        }
        self.deleted.borrow_mut().insert(&removal.offsets);
        let dir = self.dir.clone();
        let offsets = removal.offsets;
        let written = glommio::executor()
            .spawn_blocking(move || Deleted::append_durably(&dir, &offsets))
            .await;
        if let Err(e) = written {
            tracing::warn!(stream = %self.config.name, partition = self.index, error = %e,
                "cannot write the deleted list");
        }
    }

    /// Forgets deletions below the log's first offset, rewriting the list when enough went stale.
    pub(super) async fn forget_deleted_below(&self, first: u64) {
        let live = self.deleted.borrow_mut().forget_below(first);
        if let Some(live) = live {
            let dir = self.dir.clone();
            let written = glommio::executor()
                .spawn_blocking(move || Deleted::rewrite_durably(&dir, &live))
                .await;
            if let Err(e) = written {
                tracing::warn!(stream = %self.config.name, partition = self.index, error = %e,
                    "cannot rewrite the deleted list");
            }
        }
    }

    /// Deletes the message at `offset` from the middle of the partition, durably; false when there
    /// is none there.
    pub async fn delete_message(&self, offset: u64) -> Result<bool, (ErrorCode, String)> {
        let _in_use = self.ready().await;
        let log = self.log.borrow().clone();
        let Some(log) = log else {
            return Ok(false);
        };
        if offset < log.first_offset()
            || offset >= log.next_offset()
            || self.deleted.borrow().contains(offset)
        {
            return Ok(false);
        }
        let message = self.get(offset).await?;
        let dir = self.dir.clone();
        glommio::executor()
            .spawn_blocking(move || Deleted::append_durably(&dir, &[offset]))
            .await
            .map_err(|e| (ErrorCode::StorageFailed, e.to_string()))?;
        self.deleted.borrow_mut().insert(&[offset]);
        if let Some(checks) = self.checks.borrow_mut().as_mut() {
            checks.deleted(&message.subject, &[offset]);
        }
        Ok(true)
    }

    /// Removes the messages a purge names; returns how many went.
    pub async fn purge(&self, to: PurgeTo) -> Result<u64, (ErrorCode, String)> {
        let _in_use = self.ready().await;
        let log = self.log.borrow().clone();
        let Some(log) = log else {
            return Ok(0);
        };
        let next = log.next_offset();
        let target = match to {
            PurgeTo::All => next,
            PurgeTo::Below(offset) => offset.min(next),
            PurgeTo::Keep(keep) => next.saturating_sub(keep),
            PurgeTo::Subjects {
                filter,
                keep,
                below,
            } => return self.purge_subjects(&log, &filter, keep, below).await,
        };
        let purged = self.remove_below(&log, target).await?;
        if purged > 0 {
            tracing::info!(stream = %self.config.name, partition = self.index, first = target,
                "partition purged");
        }
        Ok(purged)
    }

    /// Removes every message below `target`; returns how many went.
    pub(super) async fn remove_below(
        &self,
        log: &PartitionLog,
        target: u64,
    ) -> Result<u64, (ErrorCode, String)> {
        let first = log.first_offset();
        let target = target.min(log.next_offset());
        if target <= first {
            return Ok(0);
        }
        log.truncate_before(target)
            .await
            .map_err(|e| (ErrorCode::StorageFailed, e.to_string()))?;
        let deleted =
            self.deleted.borrow().count_from(first) - self.deleted.borrow().count_from(target);
        self.checks_follow(log.first_offset());
        self.forget_deleted_below(target).await;
        Ok(target - first - deleted)
    }

    /// Deletes the messages on the subjects `filter` matches, all but the newest `keep` of each,
    /// and only below `below` if set. Returns how many went.
    pub(super) async fn purge_subjects(
        &self,
        log: &PartitionLog,
        filter: &str,
        keep: u64,
        below: Option<u64>,
    ) -> Result<u64, (ErrorCode, String)> {
        // A replicated partition's copies find the subjects in the checks of the records agreed,
        // which every copy keeps up to date (a follower's own checks are not).
        let source = match self.config.is_replicated() {
            true => &self.agreed,
            false => &self.checks,
        };
        let known = source
            .borrow()
            .as_ref()
            .filter(|c| c.keeps_all())
            .map(|c| c.matching(filter));
        let subjects = match known {
            Some(subjects) => subjects,
            None => self.scan_subjects(log, filter).await?,
        };
        let mut doomed = Vec::new();
        let mut by_subject = Vec::new();
        for (subject, offsets) in subjects {
            let cut = offsets
                .len()
                .saturating_sub(usize::try_from(keep).unwrap_or(usize::MAX));
            let gone: Vec<u64> = offsets[..cut]
                .iter()
                .copied()
                .filter(|&o| below.is_none_or(|b| o < b))
                .collect();
            doomed.extend_from_slice(&gone);
            by_subject.push((subject, gone));
        }
        if doomed.is_empty() {
            return Ok(0);
        }
        let dir = self.dir.clone();
        let written = doomed.clone();
        glommio::executor()
            .spawn_blocking(move || Deleted::append_durably(&dir, &written))
            .await
            .map_err(|e| (ErrorCode::StorageFailed, e.to_string()))?;
        self.deleted.borrow_mut().insert(&doomed);
        for checks in [&self.checks, &self.agreed] {
            if let Some(checks) = checks.borrow_mut().as_mut() {
                for (subject, gone) in &by_subject {
                    checks.deleted(subject, gone);
                }
            }
        }
        tracing::info!(stream = %self.config.name, partition = self.index, filter,
            purged = doomed.len(), "partition purged by subject");
        Ok(doomed.len() as u64)
    }

    /// Reads the partition for the offsets of every subject `filter` matches.
    pub(super) async fn scan_subjects(
        &self,
        log: &PartitionLog,
        filter: &str,
    ) -> Result<Vec<(String, Vec<u64>)>, (ErrorCode, String)> {
        let mut found: HashMap<String, Vec<u64>> = HashMap::new();
        let (mut offset, end) = (log.first_offset(), log.next_offset());
        while offset < end {
            let records = log
                .read(offset, RESTORE_READ_BYTES)
                .await
                .map_err(|e| (ErrorCode::StorageFailed, e.to_string()))?;
            if records.is_empty() {
                break;
            }
            for record in &records {
                offset = record.offset + 1;
                if self.deleted.borrow().contains(record.offset) {
                    continue;
                }
                let frame = Frame::check(record.body.clone(), u32::MAX).ok();
                if let Some((subject, _, _)) = frame.as_ref().and_then(publish_parts) {
                    if sluice_protocol::subject::matches(filter, subject) {
                        found
                            .entry(subject.to_owned())
                            .or_default()
                            .push(record.offset);
                    }
                }
            }
        }
        Ok(found.into_iter().collect())
    }

    /// Keeps a JetStream stream with `discard: old` within its `max_msgs` below `next` (the log's
    /// end, or a replicated partition's agreed end): its oldest messages go.
    pub(super) async fn trim_to_max_msgs(&self, log: &PartitionLog, next: u64) {
        let Some(max) = self.config.jetstream.as_ref().and_then(|j| {
            (j.discard == sluice_protocol::jetstream::json::Discard::Old)
                .then(|| u64::try_from(j.max_msgs).ok())
                .flatten()
                .filter(|&m| m > 0)
        }) else {
            return;
        };
        let next = next.min(log.next_offset());
        let first = log.first_offset();
        if next <= first {
            return;
        }
        let stored = (next - first).saturating_sub(self.deleted.borrow().count_from(first));
        if stored > max {
            // The oldest `stored - max` messages still there go.
            let mut cut = first;
            let mut left = stored - max;
            while left > 0 && cut < next {
                if !self.deleted.borrow().contains(cut) {
                    left -= 1;
                }
                cut += 1;
            }
            if let Err(e) = log.truncate_before(cut).await {
                tracing::warn!(stream = %self.config.name, partition = self.index, error = %e,
                    "cannot remove the messages past max_msgs");
            }
            self.forget_deleted_below(cut).await;
        }
    }
}
