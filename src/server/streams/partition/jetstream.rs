//! A JetStream stream's side of a partition: checking publishes before they are stored
//! (message ids, expectations, limits, rollups), rebuilding what the checks remember from the log,
//! and the subjects' last messages.

use super::*;

impl Partition {
    /// Runs a JetStream stream's publish checks over a batch, in the order it will be stored:
    /// refusals are answered at once, duplicates are set aside (with the offset they repeat) to be
    /// answered with the batch, and the rest is returned to be stored.
    #[allow(clippy::type_complexity)]
    pub(super) fn apply_checks(
        &self,
        shard: &Rc<StreamShard>,
        log: &PartitionLog,
        items: Vec<Queued>,
    ) -> (Vec<Queued>, Vec<(u64, Done)>, Removal) {
        let mut checks = self.checks.borrow_mut();
        let Some(checks) = checks.as_mut() else {
            return self.apply_producer_checks(shard, log, items);
        };
        let mut removal = Removal::default();
        let first = log.first_offset();
        if first != self.checks_first.get() {
            checks.removed_below(first);
            self.checks_first.set(first);
        }

        let now = sluice_storage::now_ns();
        let mut next = self.checks_start(log);
        let mut bytes = log.size_bytes();
        let (index, partitions) = (self.index, self.config.partitions);
        let sequence = |offset| seq_of(index, offset, partitions).unwrap_or(u64::MAX);
        let mut keep = Vec::with_capacity(items.len());
        let mut duplicates = Vec::new();
        for queued in items {
            let frame = Frame::check(queued.body.clone(), u32::MAX).ok();
            let Some((subject, headers, payload)) = frame.as_ref().and_then(publish_parts) else {
                // Not a publish (a Kafka record batch): only its producer's sequence is checked.
                if let Some(queued) = self.producer_check(shard, queued, next, &mut duplicates) {
                    next += u64::from(queued.count);
                    bytes += queued.body.len() as u64;
                    keep.push(queued);
                }
                continue;
            };
            let Queued { body, done, .. } = queued;
            let incoming = Incoming {
                subject,
                headers,
                size: (headers.len() + payload.len()) as u64,
            };
            let at = Position { first, next, bytes };
            match checks.check(&self.config.name, incoming, at, now, sequence) {
                Verdict::Store => {
                    let removes = checks.stored(subject, headers, next, now);
                    removal.offsets.extend(removes.offsets);
                    removal.below = removes.below.or(removal.below);
                    next += 1;
                    bytes += body.len() as u64;
                    keep.push(Queued {
                        body,
                        count: 1,
                        done,
                        back: 0,
                    });
                }
                Verdict::Duplicate { offset } => {
                    if let Some(done) = done {
                        duplicates.push((offset, done));
                    }
                }
                Verdict::Refuse(error) => {
                    if let Some(done) = done {
                        let mut outcome = AckOutcome::plain(
                            Arc::from(self.config.name.as_str()),
                            index,
                            Err((ErrorCode::BadRequest, error.description.clone())),
                        );
                        outcome.api_error = Some(Box::new(error));
                        resolve(shard, done, outcome);
                    }
                }
            }
        }
        self.checked_up_to(next);
        (keep, duplicates, removal)
    }

    /// The offset the first of the publishes checked now will take: the log's end, or for a
    /// replicated partition's leader, past its proposals still in flight.
    pub(super) fn checks_start(&self, log: &PartitionLog) -> u64 {
        let end = log.next_assigned_offset();
        if self.config.is_replicated() {
            end.max(self.proposed_end.get())
        } else {
            end
        }
    }

    /// The checks took offsets up to `next`.
    pub(super) fn checked_up_to(&self, next: u64) {
        if self.config.is_replicated() {
            self.proposed_end.set(next);
        }
    }

    /// A replicated partition's proposal failed (or its leader changed): the next checks start
    /// from the log's end again.
    pub fn forget_proposed(&self) {
        self.proposed_end.set(0);
    }

    /// Rebuilds a JetStream stream's publish checks from what the log holds: the last message of
    /// every subject and the ids within the duplicate window.
    pub(super) async fn restore_checks(&self, log: &PartitionLog) {
        let dir = self.dir.clone();
        let first = log.first_offset();
        match glommio::executor()
            .spawn_blocking(move || Deleted::load(&dir, first))
            .await
        {
            Ok(deleted) => *self.deleted.borrow_mut() = deleted,
            Err(e) => tracing::warn!(stream = %self.config.name, partition = self.index,
                error = %e, "cannot read the deleted list"),
        }
        let Some(config) = self.config.jetstream.as_ref() else {
            return;
        };
        let window_ns = u64::try_from(config.duplicate_window).unwrap_or(0);
        let mut checks = PublishChecks::new(window_ns, Limits::of(config));
        // What the limits per subject and rollups removed is derived again from the log, so a
        // crash before the deleted list was written loses nothing.
        let mut derived = Removal::default();
        let offset = self
            .take_in_log(log, log.first_offset(), false, &mut checks, &mut derived)
            .await;
        if self.config.is_replicated() {
            // A replicated log reads only to its agreed end: these checks are of agreed records.
            *self.agreed.borrow_mut() = Some(checks.clone());
            self.agreed_end.set(offset);
        }
        *self.checks.borrow_mut() = Some(checks);
        self.checks_first.set(log.first_offset());
        derived
            .offsets
            .retain(|&o| !self.deleted.borrow().contains(o));
        if !derived.offsets.is_empty() || derived.below.is_some() {
            self.apply_removal(log, derived).await;
        }
    }

    /// A new leader's publish checks: the agreed ones (read back from the log if there are none
    /// yet), and every record past them up to `end` (the end of its group's entries), waiting for
    /// those not durable yet. A leader's entries all become agreed in its term, so a publish
    /// repeating one of them (a client retrying through the new leader what it sent to the old)
    /// is a duplicate, not a second message.
    pub(super) async fn lead_checks(&self, log: &PartitionLog, end: u64) {
        if self.agreed.borrow().is_none() {
            self.restore_checks(log).await;
        }
        let agreed = {
            let agreed = self.agreed.borrow();
            agreed.clone().map(|checks| (checks, self.agreed_end.get()))
        };
        // Not a JetStream stream: it has no publish checks.
        let Some((mut checks, from)) = agreed else {
            return;
        };
        self.take_in_lead(log, from, end, &mut checks).await;
        *self.checks.borrow_mut() = Some(checks);
        self.checks_first.set(log.first_offset());
    }

    /// Takes the records from `from` up to `end` into a new leader's `checks`, waiting for those
    /// not durable yet (a sync under way); what their limits remove is left to their agreement,
    /// as for any record.
    async fn take_in_lead(
        &self,
        log: &PartitionLog,
        mut from: u64,
        end: u64,
        checks: &mut PublishChecks,
    ) {
        let mut ignored = Removal::default();
        let deadline = std::time::Instant::now() + LEADER_RESTORE_WAIT_MAX;
        loop {
            from = self
                .take_in_log(log, from, true, checks, &mut ignored)
                .await;
            if from >= end || std::time::Instant::now() >= deadline {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(2)).await;
        }
        if from < end {
            tracing::warn!(stream = %self.config.name, partition = self.index, from, end,
                "a new leader's entries did not become durable in time; publish checks go on \
                 without the rest");
        }
    }

    /// Takes the log's records from `from` into `checks` (what their limits remove into
    /// `removal`), up to the end readers see, or with `durable` to the end of what is durable
    /// (a replicated log's records not yet agreed); returns the offset after the last. Ids older
    /// than the window are forgotten at the first check.
    async fn take_in_log(
        &self,
        log: &PartitionLog,
        mut from: u64,
        durable: bool,
        checks: &mut PublishChecks,
        removal: &mut Removal,
    ) -> u64 {
        loop {
            let read = if durable {
                log.read_durable(from, RESTORE_READ_BYTES).await
            } else {
                log.read(from, RESTORE_READ_BYTES).await
            };
            let records = match read {
                Ok(records) if !records.is_empty() => records,
                Ok(_) => return from,
                Err(e) => {
                    tracing::warn!(stream = %self.config.name, partition = self.index, error = %e,
                        "cannot read back the stream to rebuild its publish checks");
                    return from;
                }
            };
            for record in &records {
                from = record.offset + 1;
                take_in(checks, record, &self.deleted.borrow(), removal);
            }
        }
    }

    /// What consumers count pending messages per subject from: a replicated partition's agreed
    /// subjects (the same on every copy, and only what readers can see), else the checks'.
    pub(super) fn subjects_for_consumers(&self) -> Rc<RefCell<Option<PublishChecks>>> {
        if self.config.is_replicated() {
            self.agreed.clone()
        } else {
            self.checks.clone()
        }
    }

    /// Takes in the records a replicated partition's group agreed on since the last call, in
    /// order, on every copy alike, and removes what their limits per subject, rollups and
    /// `max_msgs` remove
    /// (the leader's checks before storing leave that to this, so that every copy removes the
    /// same messages).
    pub fn take_in_agreed(self: &Rc<Self>) {
        if self.agreeing.get() || self.agreed.borrow().is_none() {
            return;
        }
        self.agreeing.set(true);
        let part = self.clone();
        glommio::spawn_local(async move {
            let _in_use = part.in_use();
            part.agree_all().await;
            part.agreeing.set(false);
        })
        .detach();
    }

    async fn agree_all(&self) {
        loop {
            let Some(log) = self.log.borrow().clone() else {
                return;
            };
            let from = self.agreed_end.get().max(log.first_offset());
            if from >= log.next_offset() {
                return;
            }
            let records = match log.read(from, RESTORE_READ_BYTES).await {
                Ok(records) if !records.is_empty() => records,
                _ => return,
            };
            let mut removal = Removal::default();
            {
                let mut agreed = self.agreed.borrow_mut();
                let Some(checks) = agreed.as_mut() else {
                    return;
                };
                checks.removed_below(log.first_offset());
                let deleted = self.deleted.borrow();
                for record in &records {
                    // Taken in already, if the checks were read back from the log meanwhile.
                    if record.offset < self.agreed_end.get() {
                        continue;
                    }
                    self.agreed_end.set(record.end());
                    take_in(checks, record, &deleted, &mut removal);
                }
                removal.offsets.retain(|&o| !deleted.contains(o));
            }
            if !removal.offsets.is_empty() || removal.below.is_some() {
                self.apply_removal(&log, removal).await;
            }
            // Counted to the agreed end, so that every copy keeps the same newest messages.
            self.trim_to_max_msgs(&log, self.agreed_end.get()).await;
        }
    }

    /// Makes the checks forget what lies below `first`, the log's first offset now.
    pub(super) fn checks_follow(&self, first: u64) {
        if first == self.checks_first.get() {
            return;
        }
        if let Some(checks) = self.checks.borrow_mut().as_mut() {
            checks.removed_below(first);
        }
        self.checks_first.set(first);
    }

    /// For a consumer that starts with the last message of every subject: their offsets.
    pub(super) fn lasts_for(&self, config: &ConsumerConfig) -> Vec<u64> {
        if config.deliver != crate::api::DeliverPolicy::LastPerSubject {
            return Vec::new();
        }
        let filters: Vec<String> = config
            .jetstream
            .as_ref()
            .map(|j| j.filters().into_iter().map(str::to_owned).collect())
            .unwrap_or_default();
        self.checks
            .borrow()
            .as_ref()
            .map(|c| c.lasts_matching(&filters))
            .unwrap_or_default()
    }

    /// The offset of the last message on `subject`, for a JetStream stream.
    pub async fn last_of_subject(&self, subject: &str) -> Option<u64> {
        let _in_use = self.ready().await;
        self.checks.borrow().as_ref()?.last_of(subject)
    }
}

/// Takes a stored record into `checks` (unless it was deleted), adding what storing it removes
/// to `removal`.
fn take_in(
    checks: &mut PublishChecks,
    record: &sluice_storage::Record,
    deleted: &Deleted,
    removal: &mut Removal,
) {
    if deleted.contains(record.offset) {
        return;
    }
    let parts = Frame::check(record.body.clone(), u32::MAX).ok();
    if let Some((subject, headers, _)) = parts.as_ref().and_then(publish_parts) {
        let removes = checks.stored(subject, headers, record.offset, record.timestamp_ns);
        removal.offsets.extend(removes.offsets);
        removal.below = removes.below.or(removal.below);
    }
}
