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
    /// held when it opened.
    pub fn refresh_checks(self: &Rc<Self>) {
        let Some(log) = self.log.borrow().clone() else {
            return;
        };
        let part = self.clone();
        glommio::spawn_local(async move {
            let _in_use = part.in_use();
            part.restore_checks(&log).await;
        })
        .detach();
    }

    /// The partition's consensus group, if it is replicated and its log is open.
    pub fn group(&self) -> Option<Rc<Group>> {
        self.group.borrow().clone()
    }

    /// Hands publishes to the partition's group. The leader checks them first, as a partition of
    /// its own would; a duplicate is answered at once with the offset it repeats.
    pub(super) fn submit_to_group(
        self: &Rc<Self>,
        shard: &Rc<StreamShard>,
        log: &PartitionLog,
        group: &Group,
        items: Vec<Queued>,
    ) {
        let stream: Arc<str> = Arc::from(self.config.name.as_str());
        // A record taking several offsets (a Kafka batch) would break the one-offset-per-entry
        // mapping of the group's log: refused, never stored wrongly.
        let (items, batches): (Vec<Queued>, Vec<Queued>) =
            items.into_iter().partition(|q| q.count == 1);
        for q in batches {
            self.synced_bytes(q.body.len());
            if let Some(done) = q.done {
                let why = "a replicated stream stores single messages; Kafka record batches of \
                           more than one record are not supported there yet";
                let refused = Err((ErrorCode::BadRequest, why.to_string()));
                resolve(
                    shard,
                    done,
                    AckOutcome::plain(stream.clone(), self.index, refused),
                );
            }
        }
        if !group.is_leader() {
            group.submit(items);
            return;
        }
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
        group.submit(items);
    }
}
