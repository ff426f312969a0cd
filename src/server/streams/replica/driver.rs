//! A group's driver: ticks, steps what arrives, proposes or forwards what is submitted, and
//! handles what the consensus library has ready, appending its entries to the partition log
//! (cutting a conflicting tail first) and reading older ones back for followers.

use super::*;

/// Reads entries `[low, high)` back from the log (about `FETCH_BYTES_MAX` of them).
pub(super) async fn read_entries(
    log: &PartitionLog,
    store: &Store,
    low: u64,
    high: u64,
) -> Result<Vec<Cached>, String> {
    let (from, terms) = {
        let state = store.0.borrow();
        (state.terms.end_offset(low - 1), state.terms.clone())
    };
    let records = if from < log.durable_offset() {
        log.read_durable(from, FETCH_BYTES_MAX)
            .await
            .map_err(|e| e.to_string())?
    } else {
        Vec::new()
    };
    let mut records = records.into_iter().peekable();
    let mut out = Vec::new();
    for index in low..high {
        let term = terms.term_of(index);
        if terms.is_start(index) {
            let change = terms.change_at(index);
            out.push(Cached {
                index,
                term,
                data: change.map_or_else(Bytes::new, Bytes::copy_from_slice),
                stamp: Bytes::new(),
                change: change.is_some(),
            });
            continue;
        }
        let offset = terms.end_offset(index) - 1;
        while records.peek().is_some_and(|r| r.offset < offset) {
            records.next();
        }
        match records.next() {
            Some(record) if record.offset == offset => out.push(Cached {
                index,
                term,
                data: record.body,
                stamp: store::stamp(record.timestamp_ns),
                change: false,
            }),
            _ => break,
        }
    }
    Ok(out)
}

/// Runs a group until it stops: ticks, steps what arrives, proposes or forwards what is
/// submitted, and handles what the library has ready.
pub(super) async fn drive(
    shard: Rc<StreamShard>,
    group: Rc<Group>,
    mut node: RawNode<Store>,
    store: Store,
    mut saved: Saved,
) {
    let mut next_tick = Instant::now() + TICK;
    let mut commit_saved_at = Instant::now();
    let mut commit_seen = 0;
    // The leader last told to the other shards (see `share_group_leader`).
    let mut shared_leader = raft::INVALID_ID;
    loop {
        if group.stopped.get() || shard.core.stopping.is_set() {
            break;
        }
        let until_tick = next_tick.saturating_duration_since(Instant::now());
        or(
            or(group.wake.wait(), glommio::timer::sleep(until_tick)),
            shard.core.stopping.wait(),
        )
        .await;
        loop {
            let message = group.inbox.borrow_mut().pop_front();
            let Some(message) = message else { break };
            let _ = node.step(message);
        }
        if Instant::now() >= next_tick {
            node.tick();
            next_tick = Instant::now() + TICK;
            group.expire(&shard);
            group.reconcile(&mut node, &store);
        }
        group.dispatch(&shard, &mut node);
        // Retention may have removed old segments since.
        store.0.borrow_mut().first_offset = group.log.first_offset();
        if let Err(e) = handle_ready(&shard, &group, &mut node, &store, &mut saved).await {
            tracing::error!(stream = %group.stream, partition = group.partition, error = %e,
                "a replicated partition's log failed; its group stops");
            break;
        }
        // A copy the placement no longer names goes as soon as this node follows: the others
        // hold everything a majority agreed on (a leader hands its leadership over first). A node
        // that was down while its replica moved finds that out here, after its restart.
        let me = node.raft.id;
        if !group.is_leader() && group.placement.borrow().iter().all(|id| *id != me) {
            group.left.set(true);
        }
        if group.left.get() {
            tracing::info!(stream = %group.stream, partition = group.partition,
                "this node left the partition's group: its copy goes");
            group.refuse_all(&shard, "this node no longer holds a copy of the partition");
            crate::server::streams::drop_copy(&shard, &group.stream, group.partition);
            return;
        }
        fetch(&group, &mut node, &store).await;
        if node.has_ready() {
            // Fetched entries, or what advancing made ready: handled at once, not at the tick.
            group.wake.notify();
        }
        let commit = node.raft.raft_log.committed;
        if commit != commit_seen {
            commit_seen = commit;
            let end = store.0.borrow().terms.end_offset(commit);
            group.log.set_visible_end(end);
            if let Some(part) = group.part.upgrade() {
                part.notify_appended();
                part.take_in_agreed();
            }
            if commit_saved_at.elapsed() >= COMMIT_SAVE_INTERVAL {
                saved.commit = commit;
                if save(&group, &store, &mut saved).await.is_ok() {
                    commit_saved_at = Instant::now();
                }
            }
        }
        group.settle(&shard, &store, commit);
        store.0.borrow_mut().trim(node.raft.raft_log.applied);
        let was_leader = group.is_leader();
        if node.raft.leader_id != shared_leader {
            // Shared once its name is known (a leader just added may not be named yet).
            let leader = group.name_of(node.raft.leader_id);
            if leader.is_some() || node.raft.leader_id == raft::INVALID_ID {
                shared_leader = node.raft.leader_id;
                let leader = leader.map(|name| (name, node.raft.term));
                crate::server::streams::share_group_leader(
                    &shard,
                    &group.stream,
                    group.partition,
                    leader,
                );
            }
        }
        *group.status.borrow_mut() = GroupStatus {
            leader: node.raft.leader_id,
            role: match node.raft.state {
                StateRole::Leader => "leader",
                StateRole::Follower => "follower",
                StateRole::Candidate | StateRole::PreCandidate => "candidate",
            },
            term: node.raft.term,
            commit,
            last_index: store.0.borrow().last_index,
        };
        if group.is_leader() && !was_leader {
            if let Some(part) = group.part.upgrade() {
                // Every entry it holds has been handed to the log by now (appended, perhaps
                // not durable yet).
                let last = node.raft.raft_log.last_index();
                let end = store.0.borrow().terms.end_offset(last);
                part.refresh_checks(end.min(group.log.next_assigned_offset()));
            }
        }
    }
    group.stopped.set(true);
    crate::server::streams::share_group_leader(&shard, &group.stream, group.partition, None);
    group.refuse_all(&shard, "the partition's group stopped");
}

/// Handles one `Ready`: sends what may go at once, appends the new entries to the log and makes
/// the vote durable, then sends what had to wait for that, and advances.
async fn handle_ready(
    shard: &Rc<StreamShard>,
    group: &Group,
    node: &mut RawNode<Store>,
    store: &Store,
    saved: &mut Saved,
) -> Result<(), String> {
    if !node.has_ready() {
        return Ok(());
    }
    let mut ready = node.ready();
    let messages = ready.take_messages();
    let snapshots_sent: Vec<u64> = messages
        .iter()
        .filter(|m| m.get_msg_type() == MessageType::MsgSnapshot)
        .map(|m| m.to)
        .collect();
    group.send(shard, messages);
    if !ready.snapshot().is_empty() {
        restart_from_snapshot(group, store, saved, ready.snapshot()).await?;
    }
    let committed = ready.take_committed_entries();
    append(group, store, saved, ready.take_entries()).await?;
    if let Some(hard) = ready.hs() {
        store.0.borrow_mut().hard = hard.clone();
        if hard.term != saved.term || hard.vote != saved.vote {
            saved.term = hard.term;
            saved.vote = hard.vote;
            saved.commit = hard.commit;
            save(group, store, saved).await?;
        }
    }
    group.send(shard, ready.take_persisted_messages());
    apply_changes(group, node, store, saved, committed).await?;
    let mut light = node.advance(ready);
    group.send(shard, light.take_messages());
    let committed = light.take_committed_entries();
    apply_changes(group, node, store, saved, committed).await?;
    node.advance_apply();
    // A snapshot is a few bytes, handed to the link at once: taken as received, so that the
    // follower is probed from there (and sent it again if it did not get it).
    for to in snapshots_sent {
        node.report_snapshot(to, SnapshotStatus::Finish);
    }
    Ok(())
}

/// Applies the membership changes among committed entries (the records are in the log already):
/// the new membership is written to the state file with the commit, so that a restart never
/// applies a change twice.
async fn apply_changes(
    group: &Group,
    node: &mut RawNode<Store>,
    store: &Store,
    saved: &mut Saved,
    committed: Vec<Entry>,
) -> Result<(), String> {
    for entry in committed {
        if entry.get_entry_type() != EntryType::EntryConfChangeV2 {
            continue;
        }
        let change = ConfChangeV2::parse_from_bytes(&entry.data)
            .map_err(|e| format!("entry {}: unreadable membership change: {e}", entry.index))?;
        let conf = node
            .apply_conf_change(&change)
            .map_err(|e| format!("entry {}: membership change refused: {e}", entry.index))?;
        tracing::info!(stream = %group.stream, partition = group.partition, entry = entry.index,
            voters = ?group.names_of(&conf.voters), leaving = ?group.names_of(&conf.voters_outgoing),
            "the group's membership changed");
        store.0.borrow_mut().conf = conf.clone();
        *group.members.borrow_mut() = conf.voters.clone();
        saved.conf = Some(SavedConf::from(&conf));
        saved.commit = saved.commit.max(entry.index);
        save(group, store, saved).await?;
        // Once the change leaving this node out is agreed, the others hold everything: its
        // copy can go (its leadership was handed over before the change was proposed).
        if !conf.voters.contains(&node.raft.id) {
            group.left.set(true);
        }
    }
    Ok(())
}

/// Takes a leader's snapshot: restarts the log, empty, where the leader's log starts (the
/// records this node lacks are gone there). The state file says so before the log is touched,
/// so a node stopped midway restarts it again when it opens.
async fn restart_from_snapshot(
    group: &Group,
    store: &Store,
    saved: &mut Saved,
    snapshot: &Snapshot,
) -> Result<(), String> {
    let meta = snapshot.get_metadata();
    let offset = <[u8; 8]>::try_from(&snapshot.data[..])
        .map(u64::from_le_bytes)
        .map_err(|_| {
            format!(
                "a snapshot of {} bytes is not an offset",
                snapshot.data.len()
            )
        })?;
    tracing::info!(stream = %group.stream, partition = group.partition, entry = meta.index,
        offset, "far behind the leader: restarting the log where the leader's starts");
    {
        let mut state = store.0.borrow_mut();
        state.restart_after(meta.index, meta.term, offset);
        state.conf = meta.get_conf_state().clone();
    }
    saved.commit = meta.index;
    saved.restart_at = Some(offset);
    save(group, store, saved).await?;
    group
        .log
        .restart_at(offset)
        .await
        .map_err(|e| e.to_string())?;
    saved.restart_at = None;
    save(group, store, saved).await?;
    group.log.set_visible_end(offset);
    if let Some(part) = group.part.upgrade() {
        part.notify_appended();
    }
    Ok(())
}

/// Writes the group's state file durably, with the term table as it is now.
async fn save(group: &Group, store: &Store, saved: &mut Saved) -> Result<(), String> {
    saved.terms = store.0.borrow().terms.clone();
    store::save(&group.dir, saved.clone()).await
}

/// Appends entries to the log, cutting a conflicting tail first; a changed term table is made
/// durable before the records it describes are written.
async fn append(
    group: &Group,
    store: &Store,
    saved: &mut Saved,
    entries: Vec<Entry>,
) -> Result<(), String> {
    let Some(first) = entries.first().map(|e| e.index) else {
        return Ok(());
    };
    let mut changed = false;
    let cut = {
        let state = store.0.borrow();
        (first <= state.last_index).then(|| state.terms.end_offset(first - 1))
    };
    if let Some(offset) = cut {
        tracing::info!(stream = %group.stream, partition = group.partition, from_entry = first,
            from_offset = offset, "cutting a conflicting tail: entries not agreed on");
        group
            .log
            .truncate_from(offset)
            .await
            .map_err(|e| e.to_string())?;
        store.0.borrow_mut().forget_from(first);
        changed = true;
    }
    // Records with the same stamp go in one append, stamped with it.
    let mut runs: Vec<(Option<u64>, Vec<Bytes>)> = Vec::new();
    let mut cached = Vec::with_capacity(entries.len());
    let mut first_offset = None;
    {
        let mut state = store.0.borrow_mut();
        for entry in entries {
            let offset = state.terms.end_offset(entry.index - 1);
            let change = match entry.get_entry_type() {
                EntryType::EntryNormal => false,
                EntryType::EntryConfChangeV2 => true,
                EntryType::EntryConfChange => {
                    return Err(format!(
                        "entry {} is an old-style membership change",
                        entry.index
                    ));
                }
            };
            if entry.term != state.terms.last_term() {
                if !entry.data.is_empty() || change {
                    return Err(format!(
                        "entry {} starts a term and carries data",
                        entry.index
                    ));
                }
                state.terms.push(TermStart {
                    term: entry.term,
                    index: entry.index,
                    offset,
                    change: None,
                });
                changed = true;
            } else if change {
                state.terms.push(TermStart {
                    term: entry.term,
                    index: entry.index,
                    offset,
                    change: Some(entry.data.to_vec()),
                });
                changed = true;
            } else if entry.data.is_empty() {
                return Err(format!("entry {} is empty", entry.index));
            } else {
                first_offset.get_or_insert(offset);
                let stamp = store::stamped(&entry.context);
                match runs.last_mut() {
                    Some((at, bodies)) if *at == stamp => bodies.push(entry.data.clone()),
                    _ => runs.push((stamp, vec![entry.data.clone()])),
                }
            }
            cached.push(Cached {
                index: entry.index,
                term: entry.term,
                data: entry.data,
                stamp: entry.context,
                change,
            });
        }
    }
    if changed {
        save(group, store, saved).await?;
    }
    if let Some(expected) = first_offset {
        let mut tickets = Vec::with_capacity(runs.len());
        for (stamp, bodies) in &runs {
            let ticket = match stamp {
                Some(at) => group.log.append_stamped(bodies, *at),
                None => group.log.append_ordered(bodies),
            };
            tickets.push(ticket.map_err(|e| e.to_string())?);
        }
        let mut at = None;
        for ticket in tickets {
            let first = ticket.durable().await.map_err(|e| e.to_string())?;
            at.get_or_insert(first);
        }
        let at = at.unwrap_or(expected);
        if at != expected {
            return Err(format!(
                "records went to offset {at}, where the group expected {expected}"
            ));
        }
    }
    store.0.borrow_mut().remember(cached);
    Ok(())
}

/// Reads back from the log the entries the library asked for and could not have at once.
async fn fetch(group: &Group, node: &mut RawNode<Store>, store: &Store) {
    let fetches = std::mem::take(&mut store.0.borrow_mut().fetches);
    for request in fetches {
        match read_entries(&group.log, store, request.low, request.high).await {
            Ok(entries) if !entries.is_empty() => {
                store.0.borrow_mut().fetched = entries;
                node.on_entries_fetched(request.context);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(stream = %group.stream, partition = group.partition,
                error = %e, "reading entries back for a follower failed"),
        }
    }
}
