//! A partition's consumers: members joining and leaving, consumers created on first attach or
//! restored from their saved state, credit, acks, returns, their info and their deletion.

use super::*;

impl Partition {
    /// Notes a member on its way in, at once (before the log is open): what its home grants and
    /// whether it leaves are kept until `attach` is done.
    pub fn begin_join(&self, consumer: &str, member: Member) {
        let mut joining = self.joining.borrow_mut();
        joining.retain(|j| !(j.consumer == consumer && same_conn(&j.member, &member)));
        joining.push(Joining {
            consumer: consumer.to_string(),
            member,
            grant: 0,
        });
    }

    /// Attaches a member noted by `begin_join` to a consumer, creating the consumer's state here
    /// on first use. A member that left meanwhile is not attached. Returns once the consumer
    /// exists here and its state is durable (or why it could not be created).
    pub async fn attach(
        &self,
        shard: &Rc<StreamShard>,
        config: Arc<ConsumerConfig>,
        member: Member,
    ) -> Result<(), (ErrorCode, String)> {
        let _in_use = self.ready().await;
        let consumer = match self.consumer_or_create(shard, &config).await {
            Ok(consumer) => consumer,
            Err(e) => {
                self.take_joining(&config.name, &member);
                return Err(e);
            }
        };
        match self.take_joining(&config.name, &member) {
            Some(joining) => consumer.join(joining.member, joining.grant),
            None => tracing::debug!(stream = %self.config.name, partition = self.index,
                conn = member.conn, "a member left before its attach was done"),
        }
        Ok(())
    }

    /// The consumer's state here, created (and written down) if it is new. One creation per
    /// consumer at a time: a second attach waits for the first, so that two first writes never
    /// race for the same file.
    async fn consumer_or_create(
        &self,
        shard: &Rc<StreamShard>,
        config: &Arc<ConsumerConfig>,
    ) -> Result<Rc<PartConsumer>, (ErrorCode, String)> {
        let name = &config.name;
        self.created
            .wait_until(|| !self.creating.borrow().contains(name))
            .await;
        if let Some(c) = self.consumers.borrow().get(name).cloned() {
            return Ok(c);
        }
        let log = self.log.borrow().clone();
        let Some(log) = log.filter(|_| !self.removed.get()) else {
            tracing::warn!(stream = %self.config.name, partition = self.index,
                "cannot attach a consumer: the partition is not open");
            return Err((
                ErrorCode::StorageFailed,
                format!(
                    "partition {} of {} is not open",
                    self.index, self.config.name
                ),
            ));
        };
        let path = state::state_path(&self.dir, name).map_err(|e| {
            (
                ErrorCode::BadRequest,
                format!("invalid consumer name {name:?}: {e}"),
            )
        })?;
        let max = shard.core.config.consumers_max;
        if self.consumers.borrow().len() + self.creating.borrow().len() >= max {
            return Err((
                ErrorCode::LimitReached,
                format!(
                    "stream {} has its most consumers ({max}, max_consumers)",
                    self.config.name
                ),
            ));
        }
        self.creating.borrow_mut().insert(name.clone());
        let from_first = self.damaged.borrow_mut().remove(name);
        // A replicated partition's consumer that ran on another node goes on from where it
        // was last saved there.
        let shipped = self.latest_shipped_state(name).await;
        let created = PartConsumer::start(
            shard,
            config.clone(),
            self.index,
            log,
            self.appended.clone(),
            path,
            shipped,
            from_first,
            self.deleted.clone(),
            self.lasts_for(config),
            self.subjects_for_consumers(),
        )
        .await;
        self.creating.borrow_mut().remove(name);
        self.created.notify_all();
        match created {
            Ok(c) if self.removed.get() => {
                c.stop();
                Err((
                    ErrorCode::NotFound,
                    format!("stream {} was removed", self.config.name),
                ))
            }
            Ok(c) => {
                self.consumers.borrow_mut().insert(name.clone(), c.clone());
                self.ship_states_of(&c);
                super::super::host::appeared(shard, self.index, config);
                Ok(c)
            }
            Err(e) => {
                tracing::warn!(stream = %self.config.name, partition = self.index,
                    consumer = %name, error = %e, "consumer not created: its state was not saved");
                if from_first {
                    self.damaged.borrow_mut().insert(name.clone());
                }
                Err((ErrorCode::StorageFailed, e.to_string()))
            }
        }
    }

    fn take_joining(&self, consumer: &str, member: &Member) -> Option<Joining> {
        let mut joining = self.joining.borrow_mut();
        let at = joining
            .iter()
            .position(|j| j.consumer == consumer && same_conn(&j.member, member))?;
        Some(joining.remove(at))
    }

    /// Sets what a member may still take (its home's count).
    pub fn grant(&self, consumer: &str, member: Member, credit: u64) {
        let c = self.consumers.borrow().get(consumer).cloned();
        if c.is_some_and(|c| c.grant(member, credit)) {
            return;
        }
        for j in self.joining.borrow_mut().iter_mut() {
            if j.consumer == consumer && same_conn(&j.member, &member) {
                j.member = member;
                j.grant = credit;
            }
        }
    }

    /// A delivery its member's home handed back.
    pub fn consumer_return(&self, delivery: &Delivered) {
        let c = self.consumers.borrow().get(&*delivery.consumer).cloned();
        if let Some(c) = c {
            c.on_return(delivery);
        }
    }

    /// Brings back the consumers saved in this partition's directory (they wait for members).
    /// The files are read on a blocking thread.
    pub(super) async fn restore_consumers(&self, shard: &Rc<StreamShard>, log: Rc<PartitionLog>) {
        let dir = self.dir.clone();
        let found = glommio::executor()
            .spawn_blocking(move || state::read_all(&dir))
            .await;
        for (name, saved) in found {
            let saved: SavedState = match saved {
                Ok(saved) => saved,
                Err(e) => {
                    tracing::error!(stream = %self.config.name, partition = self.index,
                        consumer = %name, error = %e,
                        "unreadable consumer state: the consumer restarts from the first offset");
                    self.damaged.borrow_mut().insert(name);
                    continue;
                }
            };
            // Another node that served the consumer since may have sent a state further on.
            let saved = match self.shipped_state(&name).await {
                Some(shipped) if further(&shipped, &saved) => shipped,
                _ => saved,
            };
            let config = Arc::new(saved.config.clone());
            let Ok(path) = state::state_path(&self.dir, &config.name) else {
                tracing::error!(stream = %self.config.name, partition = self.index,
                    consumer = %config.name, "saved consumer with an invalid name ignored");
                continue;
            };
            let started = PartConsumer::start(
                shard,
                config.clone(),
                self.index,
                log.clone(),
                self.appended.clone(),
                path,
                Some(saved),
                false,
                self.deleted.clone(),
                Vec::new(),
                self.subjects_for_consumers(),
            )
            .await;
            match started {
                Ok(consumer) => {
                    self.ship_states_of(&consumer);
                    self.consumers
                        .borrow_mut()
                        .insert(config.name.clone(), consumer);
                    super::super::host::appeared(shard, self.index, &config);
                }
                // A restored state is not written on start, so this does not happen.
                Err(e) => tracing::error!(stream = %self.config.name, partition = self.index,
                    consumer = %config.name, error = %e, "saved consumer not restored"),
            }
        }
    }

    /// Applies a client's ack to a consumer.
    pub fn consumer_ack(&self, consumer: &str, offset: u64, kind: AckKind, delay: Duration) {
        if let Some(c) = self.consumers.borrow().get(consumer) {
            c.on_ack(offset, kind, delay);
        }
    }

    /// Once an ack applied before this call is kept: applied here (acks reach the consumer
    /// before this call does) and, for a replicated partition, held by a majority of the copies'
    /// nodes (this one counted; each writes it down right after), so that whichever node takes
    /// the consumer up next knows it. False if too few nodes answered within `within`. A consumer
    /// that does not run here has nothing to keep.
    pub async fn consumer_ack_kept(&self, consumer: &str, within: Duration) -> bool {
        if !self.config.is_replicated() {
            return true;
        }
        let Some(c) = self.consumers.borrow().get(consumer).cloned() else {
            return true;
        };
        let seq = self.ship_now(&c).await;
        let others_needed = self.config.placement.len() / 2;
        let kept = || {
            self.sent.borrow().get(consumer).is_some_and(|sent| {
                sent.held.values().filter(|held| **held >= seq).count() >= others_needed
            })
        };
        futures_lite::future::or(
            async {
                self.held.wait_until(kept).await;
                true
            },
            async {
                glommio::timer::sleep(within).await;
                kept()
            },
        )
        .await
    }

    /// Node `from` keeps the state numbered `seq` (or a later one) of a consumer sent from here.
    pub fn consumer_state_held(&self, consumer: &str, from: String, seq: u64) {
        if let Some(sent) = self.sent.borrow_mut().get_mut(consumer) {
            let held = sent.held.entry(from).or_default();
            *held = (*held).max(seq);
        }
        self.held.notify_all();
    }

    /// Forgets a closed connection's memberships, joined or on their way in.
    pub fn member_gone(&self, shard: ShardId, conn: u64) {
        self.joining
            .borrow_mut()
            .retain(|j| !(j.member.shard == shard && j.member.conn == conn));
        let consumers: Vec<Rc<PartConsumer>> = self.consumers.borrow().values().cloned().collect();
        for c in consumers {
            c.leave(shard, conn);
        }
    }

    /// Whether a member may be here, joining or attached, or a delivery still held by one: what a
    /// connection that closes must be looked for in.
    pub fn may_have_members(&self) -> bool {
        !self.joining.borrow().is_empty()
            || self
                .consumers
                .borrow()
                .values()
                .any(|c| c.may_have_members())
    }

    /// Every consumer's counts here: those running here, and for a replicated partition those
    /// running on another node, as their last state sent here says (not taken up: listing a
    /// consumer does not start it here).
    pub async fn consumer_infos(&self) -> Vec<(String, ConsumerPartitionInfo)> {
        let _in_use = self.ready().await;
        let mut infos: Vec<_> = self
            .consumers
            .borrow()
            .iter()
            .map(|(name, c)| (name.clone(), c.info()))
            .collect();
        if self.config.is_replicated() {
            for name in self.shipped_names().await {
                if infos.iter().any(|(running, _)| *running == name) {
                    continue;
                }
                if let Some(saved) = self.shipped_state(&name).await {
                    let info = self.shipped_info(saved);
                    infos.push((name, info));
                }
            }
        }
        infos.sort_by(|a, b| a.0.cmp(&b.0));
        infos
    }

    /// The consumers whose states other nodes sent (deleted ones included: their state is empty).
    async fn shipped_names(&self) -> Vec<String> {
        let dir = self.dir.join("consumers.shipped");
        let files = glommio::executor()
            .spawn_blocking(move || state::json_files(&dir))
            .await;
        let mut names: Vec<String> = files
            .iter()
            .filter_map(|path| path.file_stem()?.to_str().map(str::to_string))
            .collect();
        names.extend(self.shipped.borrow().keys().cloned());
        names.sort();
        names.dedup();
        names
    }

    /// A consumer's counts as the state another node sent says.
    fn shipped_info(&self, saved: SavedState) -> ConsumerPartitionInfo {
        let end = self
            .log
            .borrow()
            .as_ref()
            .map_or(saved.next, |log| log.next_offset());
        ConsumerPartitionInfo {
            partition: self.index,
            pending: end.saturating_sub(saved.next),
            ack_pending: saved.deliveries.len() as u64,
            redelivered: saved.redelivered,
            ack_floor: saved.floor,
            dead_lettered: saved.dead_lettered,
            next: saved.next,
            delivered_seq: saved.delivered_seq,
            config: Some(Box::new(saved.config)),
        }
    }

    /// A consumer's counts here, if it exists (here, or shipped from another node).
    pub async fn consumer_info(&self, consumer: &str) -> Option<ConsumerPartitionInfo> {
        let _in_use = self.ready().await;
        self.take_up_shipped(consumer).await;
        self.consumers.borrow().get(consumer).map(|c| c.info())
    }

    /// Deletes a consumer here: it stops delivering and its state file goes. Whether it was here.
    pub async fn delete_consumer(&self, shard: &StreamShard, name: &str) -> bool {
        let _in_use = self.ready().await;
        self.take_up_shipped(name).await;
        let Some(consumer) = self.consumers.borrow_mut().remove(name) else {
            return false;
        };
        if self.config.is_replicated() {
            self.send_state(shard, name, b"");
            self.keep_shipped_state(name.to_string(), Vec::new(), None);
        }
        consumer.stop();
        super::super::host::gone(shard, self.index, &consumer.config);
        consumer.wait_saved().await;
        if let Ok(path) = state::state_path(&self.dir, name) {
            let removed = glommio::executor()
                .spawn_blocking(move || std::fs::remove_file(path))
                .await;
            if let Err(e) = removed {
                tracing::warn!(stream = %self.config.name, partition = self.index, consumer = name,
                    error = %e, "cannot delete the consumer's state");
            }
        }
        tracing::info!(stream = %self.config.name, partition = self.index, consumer = name,
            "consumer deleted");
        true
    }
}

impl Partition {
    /// Sends each state a replicated partition's consumer writes down to the other nodes.
    fn ship_states_of(&self, consumer: &Rc<PartConsumer>) {
        if !self.config.is_replicated() {
            return;
        }
        let (shard, me) = (self.opener.shard.clone(), self.opener.me.clone());
        let name = consumer.config.name.clone();
        consumer.on_saved(Box::new(move |state| {
            let (Some(shard), Some(part)) = (shard.upgrade(), me.upgrade()) else {
                return;
            };
            if let Ok(json) = serde_json::to_vec(state) {
                part.send_state(&shard, &name, &json);
            }
        }));
    }

    /// Sends a consumer's state as it is now to the other nodes, once for all the calls that come
    /// while it waits its turn (the acks of one batch); the number it went under.
    async fn ship_now(&self, c: &Rc<PartConsumer>) -> u64 {
        let name = c.config.name.clone();
        let waiting = self.shipping.borrow().get(&name).cloned();
        if let Some(slot) = waiting {
            slot.1.wait_until(|| slot.0.get().is_some()).await;
            return slot.0.get().unwrap_or(0);
        }
        let slot: Rc<Shipping> = Rc::default();
        self.shipping
            .borrow_mut()
            .insert(name.clone(), slot.clone());
        futures_lite::future::yield_now().await;
        self.shipping.borrow_mut().remove(&name);
        let seq = match (
            self.opener.shard.upgrade(),
            serde_json::to_vec(&c.state_now()),
        ) {
            (Some(shard), Ok(json)) => self.send_state(&shard, &name, &json),
            _ => self.next_sent(&name),
        };
        slot.0.set(Some(seq));
        slot.1.notify_all();
        seq
    }

    /// Sends a consumer's state (JSON; empty: deleted) to the other nodes, numbered; the number.
    fn send_state(&self, shard: &StreamShard, name: &str, json: &[u8]) -> u64 {
        let seq = self.next_sent(name);
        replica::ship_consumer_state(shard, &self.config, self.index, name, seq, json);
        seq
    }

    /// Numbers the next state of a consumer sent from here. The first is the time (in
    /// nanoseconds), so that the numbers of a consumer started again here (after a restart) are
    /// above those it sent before: a late `Held` for an earlier state never counts for a new one.
    fn next_sent(&self, consumer: &str) -> u64 {
        let mut sent = self.sent.borrow_mut();
        let sent = sent.entry(consumer.to_string()).or_insert_with(|| Sent {
            seq: sluice_storage::now_ns(),
            held: HashMap::new(),
        });
        sent.seq += 1;
        sent.seq
    }

    /// A consumer's state as another node last sent it, if one did (and it reads).
    async fn shipped_state(&self, name: &str) -> Option<SavedState> {
        if !self.config.is_replicated() {
            return None;
        }
        if let Some(latest) = self.shipped.borrow().get(name) {
            return serde_json::from_slice(latest).ok();
        }
        let path = state::shipped_path(&self.dir, name).ok()?;
        let read = glommio::executor()
            .spawn_blocking(move || state::read_if_there(&path))
            .await?;
        match read {
            Ok(saved) => Some(saved),
            Err(e) => {
                tracing::warn!(stream = %self.config.name, partition = self.index, consumer = name,
                    error = %e, "a consumer's state sent by another node is unreadable");
                None
            }
        }
    }

    /// The furthest on of the state of a consumer sent here and those a majority of the copies'
    /// nodes keep (asked now, for `CONSUMER_ASK_WAIT` at most): an ack answered once kept is in
    /// a state a majority keeps, which may not have reached this node.
    async fn latest_shipped_state(&self, name: &str) -> Option<SavedState> {
        let own = self.shipped_state(name).await;
        let Some(shard) = self.opener.shard.upgrade() else {
            return own;
        };
        let me = shard.core.config.cluster.as_ref().map(|c| c.name.as_str());
        let (Some(me), true) = (me, self.config.is_replicated()) else {
            return own;
        };
        self.asks.borrow_mut().insert(name.to_string(), Vec::new());
        for node in self.config.placement.iter().filter(|n| n.as_str() != me) {
            replica::ask_consumer_state(&shard, node, &self.config.name, self.index, name);
        }
        let needed = self.config.placement.len() / 2;
        let answered = || self.asks.borrow().get(name).map_or(0, Vec::len) >= needed;
        futures_lite::future::or(self.answered.wait_until(answered), async {
            glommio::timer::sleep(CONSUMER_ASK_WAIT).await;
        })
        .await;
        let answers = self.asks.borrow_mut().remove(name).unwrap_or_default();
        answers
            .into_iter()
            .flatten()
            .chain(own)
            .reduce(|a, b| if further(&b, &a) { b } else { a })
    }

    /// Another node's answer to `latest_shipped_state`'s question (empty: it keeps none).
    pub fn consumer_state_answer(&self, consumer: &str, state: &[u8]) {
        if let Some(answers) = self.asks.borrow_mut().get_mut(consumer) {
            answers.push(serde_json::from_slice(state).ok());
        }
        self.answered.notify_all();
    }

    /// Answers node `from`'s question about the state of a consumer kept here.
    pub fn answer_consumer_ask(&self, from: String, consumer: String) {
        let Some(part) = self.opener.me.upgrade() else {
            return;
        };
        glommio::spawn_local(async move {
            let state = part.shipped_state(&consumer).await;
            let json = state
                .and_then(|s| serde_json::to_vec(&s).ok())
                .unwrap_or_default();
            if let Some(shard) = part.opener.shard.upgrade() {
                let (stream, index) = (&part.config.name, part.index);
                replica::answer_consumer_state(&shard, &from, stream, index, &consumer, &json);
            }
        })
        .detach();
    }

    /// Starts a consumer that does not run here from the state another node sent, if there is
    /// one: a client that reconnected here finds it.
    async fn take_up_shipped(&self, name: &str) {
        if self.consumers.borrow().contains_key(name) {
            return;
        }
        let Some(shard) = self.opener.shard.upgrade() else {
            return;
        };
        // Only for its config: `consumer_or_create` asks the other nodes for the latest state.
        let Some(saved) = self.shipped_state(name).await else {
            return;
        };
        let config = Arc::new(saved.config);
        if let Err((_, e)) = self.consumer_or_create(&shard, &config).await {
            tracing::warn!(stream = %self.config.name, partition = self.index, consumer = name,
                error = %e, "a consumer sent by another node could not start here");
        }
    }

    /// Keeps a consumer's state another node sent (empty: the consumer was deleted), unless the
    /// consumer runs here; `from` names the sending node and its number for the state, which is
    /// confirmed to it at once (`Held`). The latest state of each is written in turn, one write at
    /// a time.
    pub fn keep_shipped_state(&self, name: String, state: Vec<u8>, from: Option<(String, u64)>) {
        if self.consumers.borrow().contains_key(&name) && !state.is_empty() {
            return;
        }
        // Held once here: this node has it for whichever node asks, and writes it down next.
        if let (Some((node, seq)), Some(shard)) = (&from, self.opener.shard.upgrade()) {
            replica::confirm_consumer_state(
                &shard,
                node,
                &self.config.name,
                self.index,
                &name,
                *seq,
            );
        }
        self.shipped.borrow_mut().insert(name, state);
        if self.shipped_writing.replace(true) {
            return;
        }
        let Some(part) = self.opener.me.upgrade() else {
            self.shipped_writing.set(false);
            return;
        };
        glommio::spawn_local(async move {
            loop {
                let next = {
                    let shipped = part.shipped.borrow();
                    shipped.iter().next().map(|(n, s)| (n.clone(), s.clone()))
                };
                let Some((name, state)) = next else { break };
                if let Ok(path) = state::shipped_path(&part.dir, &name) {
                    let writing = state.clone();
                    let written = glommio::executor()
                        .spawn_blocking(move || write_shipped(&path, &writing))
                        .await;
                    if let Err(e) = written {
                        tracing::warn!(stream = %part.config.name, partition = part.index,
                            consumer = %name, error = %e, "cannot keep a consumer's state sent by another node");
                    }
                }
                // Taken out only if nothing newer came meanwhile.
                let mut shipped = part.shipped.borrow_mut();
                if shipped.get(&name) == Some(&state) {
                    shipped.remove(&name);
                }
            }
            part.shipped_writing.set(false);
        })
        .detach();
    }
}

/// A state about to be sent (`ship_now`): the number it went under, once sent, and the event that
/// tells those waiting for it.
pub(super) type Shipping = (Cell<Option<u64>>, Event);

/// The states of one of this node's consumers sent to the other nodes: the last one's number,
/// and the latest each node keeps.
pub(super) struct Sent {
    seq: u64,
    held: HashMap<String, u64>,
}

/// Whether state `a` of a consumer is further on than `b`: more acked, or as much and more
/// delivered.
fn further(a: &SavedState, b: &SavedState) -> bool {
    (a.floor, a.delivered_seq) > (b.floor, b.delivered_seq)
}

/// Writes (or, for an empty state, removes) a shipped consumer state, durably. Blocking.
fn write_shipped(path: &std::path::Path, state: &[u8]) -> std::io::Result<()> {
    if state.is_empty() {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let raw: serde_json::Value = serde_json::from_slice(state)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    crate::server::files::write_json_durably(path, &raw)
}

fn same_conn(a: &Member, b: &Member) -> bool {
    a.shard == b.shard && a.conn == b.conn
}
