//! A replicated partition's side of its consensus group: starting it once the log is open,
//! handing it publishes (checked first where this node leads), and reading the publish checks
//! back when this node becomes the leader.

use super::*;

impl Partition {
    /// Starts the partition's consensus group over its newly opened log; if it cannot start,
    /// the partition refuses publishes with the reason.
    pub(super) async fn start_group(
        self: &Rc<Self>,
        shard: &Rc<StreamShard>,
        log: &Rc<PartitionLog>,
    ) {
        match replica::start(shard, self, log.clone()).await {
            Ok(group) => *self.group.borrow_mut() = Some(group),
            Err(e) => {
                tracing::error!(stream = %self.config.name, partition = self.index, error = %e,
                    "a replicated partition's group cannot start");
                *self.failed.borrow_mut() = Some(format!("replication: {e}"));
            }
        }
    }

    /// Reads the publish checks (message ids, last sequences) back from the log: a replica that
    /// becomes its group's leader checks publishes from what its log holds now, not from what it
    /// held when it opened, up to `end` (the offset after its group's last entry, all of which
    /// its leadership will agree on, durable or not yet). Publishes wait for the checks meanwhile
    /// (`checks_restoring`).
    pub fn refresh_checks(self: &Rc<Self>, end: u64) {
        self.forget_proposed();
        let Some(log) = self.log.borrow().clone() else {
            return;
        };
        self.checks_restoring.set(true);
        let part = self.clone();
        glommio::spawn_local(async move {
            let _in_use = part.in_use();
            let started = std::time::Instant::now();
            part.lead_checks(&log, end).await;
            tracing::debug!(stream = %part.config.name, partition = part.index, end,
                took_ms = started.elapsed().as_millis() as u64, "a new leader's publish checks are read");
            part.checks_restoring.set(false);
            if let Some(group) = part.group() {
                group.wake();
            }
        })
        .detach();
    }

    /// Whether a new leader's publish checks are being read back: its publishes wait.
    pub fn checks_restoring(&self) -> bool {
        self.checks_restoring.get()
    }

    /// The partition's consensus group, if it is replicated and its log is open.
    pub fn group(&self) -> Option<Rc<Group>> {
        self.group.borrow().clone()
    }

    /// Hands publishes to the partition's group. The leader checks them first, as a partition of
    /// its own would; a duplicate is answered at once with the offset it repeats. A follower
    /// hands them over unchecked (to be forwarded, or checked if it becomes the leader first).
    pub(super) fn submit_to_group(
        self: &Rc<Self>,
        shard: &Rc<StreamShard>,
        log: &PartitionLog,
        group: &Group,
        items: Vec<Queued>,
    ) {
        if !group.is_leader() || self.checks_restoring.get() {
            group.submit(items, false);
            return;
        }
        group.submit(self.checked_for_group(shard, log, items), true);
    }

    /// What the leader proposes of `items`: the JetStream and Kafka checks run (duplicates
    /// answered at once), and Kafka batches cut into one entry per record.
    pub(in crate::server::streams) fn checked_for_group(
        self: &Rc<Self>,
        shard: &Rc<StreamShard>,
        log: &PartitionLog,
        items: Vec<Queued>,
    ) -> Vec<Queued> {
        let stream: Arc<str> = Arc::from(self.config.name.as_str());
        let bytes_before: usize = items.iter().map(|q| q.body.len()).sum();
        // A replica applies no removals of its own: the per-subject limits would make the
        // replicas differ.
        let (items, duplicates, _removal) = self.apply_checks(shard, log, items);
        let bytes_after: usize = items.iter().map(|q| q.body.len()).sum();
        self.synced_bytes(bytes_before - bytes_after);
        for (offset, done) in duplicates {
            let mut outcome = AckOutcome::plain(stream.clone(), self.index, Ok(offset));
            outcome.duplicate = true;
            resolve(shard, done, outcome);
        }
        self.one_entry_per_offset(shard, &stream, items)
    }

    /// The log, if open (for the group's leader checking what it was handed as a follower).
    pub(in crate::server::streams) fn open_log(&self) -> Option<Rc<PartitionLog>> {
        self.log.borrow().clone()
    }

    /// Cuts each Kafka batch of several records into batches of one record, checked already as
    /// a whole: the group's log takes one offset per entry. The pieces go together, so their
    /// offsets follow each other, and the last answers for the batch with the first's offset.
    fn one_entry_per_offset(
        &self,
        shard: &Rc<StreamShard>,
        stream: &Arc<str>,
        items: Vec<Queued>,
    ) -> Vec<Queued> {
        let mut out = Vec::with_capacity(items.len());
        for q in items {
            if q.count == 1 {
                out.push(q);
                continue;
            }
            match sluice_protocol::kafka::batch::one_per_record(&q.body) {
                Ok(pieces) if pieces.len() == q.count as usize => {
                    let last = pieces.len() - 1;
                    let mut done = q.done;
                    let bytes: usize = pieces.iter().map(Bytes::len).sum();
                    // The pieces take the batch's place in the unsynced count.
                    self.synced_bytes(q.body.len());
                    self.unsynced_bytes.set(self.unsynced_bytes.get() + bytes);
                    for (i, body) in pieces.into_iter().enumerate() {
                        let is_last = i == last;
                        out.push(Queued {
                            body,
                            count: 1,
                            done: if is_last { done.take() } else { None },
                            back: if is_last { last as u32 } else { 0 },
                        });
                    }
                }
                cut => {
                    self.synced_bytes(q.body.len());
                    let why = match cut {
                        Err(e) => format!("a replicated stream stores one entry per record: {e}"),
                        Ok(_) => "the batch's records do not match its count".to_string(),
                    };
                    tracing::debug!(stream = %stream, partition = self.index, reason = %why,
                        "kafka batch refused");
                    if let Some(done) = q.done {
                        let mut outcome = AckOutcome::plain(
                            stream.clone(),
                            self.index,
                            Err((ErrorCode::BadRequest, why)),
                        );
                        outcome.kafka_error =
                            Some(sluice_protocol::kafka::code::UNSUPPORTED_COMPRESSION_TYPE);
                        resolve(shard, done, outcome);
                    }
                }
            }
        }
        out
    }
}
