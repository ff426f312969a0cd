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
        let created = PartConsumer::start(
            shard,
            config.clone(),
            self.index,
            log,
            self.appended.clone(),
            path,
            None,
            from_first,
            self.deleted.clone(),
            self.lasts_for(config),
            self.checks.clone(),
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
                self.checks.clone(),
            )
            .await;
            match started {
                Ok(consumer) => {
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

    /// Every consumer's counts here.
    pub async fn consumer_infos(&self) -> Vec<(String, ConsumerPartitionInfo)> {
        let _in_use = self.ready().await;
        let mut infos: Vec<_> = self
            .consumers
            .borrow()
            .iter()
            .map(|(name, c)| (name.clone(), c.info()))
            .collect();
        infos.sort_by(|a, b| a.0.cmp(&b.0));
        infos
    }

    /// A consumer's counts here, if it exists.
    pub async fn consumer_info(&self, consumer: &str) -> Option<ConsumerPartitionInfo> {
        let _in_use = self.ready().await;
        self.consumers.borrow().get(consumer).map(|c| c.info())
    }

    /// Deletes a consumer here: it stops delivering and its state file goes. Whether it was here.
    pub async fn delete_consumer(&self, shard: &StreamShard, name: &str) -> bool {
        let _in_use = self.ready().await;
        let Some(consumer) = self.consumers.borrow_mut().remove(name) else {
            return false;
        };
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

fn same_conn(a: &Member, b: &Member) -> bool {
    a.shard == b.shard && a.conn == b.conn
}
