//! A shard's view of who wants which subjects: its own subscriptions and its copy of every other
//! shard's interest, with a cache of routes per subject.
//!
//! The route cache keeps the routes of subjects someone wants; a change of interest drops only the
//! routes it can alter.
//!
//! Remote interest is kept as one entry per remote subscription (shard and queue group, no more), so
//! a queue group's members on another shard weigh in the member choice by their number.

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use sluice_protocol::subject::matches;
use sluice_protocol::sublist::Sublist;

use super::client::Client;
use crate::server::ShardId;

/// Most subjects whose routes are cached; past it an eighth of them is dropped. Bounds memory when
/// publishers use many distinct subjects.
const ROUTE_CACHE_ENTRIES_MAX: usize = 64 * 1024;

/// Bits of the doorkeeper that lets a subject into the route cache on its second miss: a subject
/// routed once (a request's reply inbox, an ack's reply) is never cached.
const DOORKEEPER_BITS: usize = 128 * 1024;

/// Misses after which the doorkeeper forgets: an eighth of its bits, so that about one subject in
/// sixteen routed once gets in by a collision.
const DOORKEEPER_MISSES_MAX: usize = DOORKEEPER_BITS / 8;

/// A subject's route is cached on its second miss within a doorkeeper generation: subjects used
/// once cost one bit instead of a cache entry (and its eviction). The bits are cleared every
/// `DOORKEEPER_MISSES_MAX` misses, so that the filter never fills up.
struct Doorkeeper {
    bits: Box<[u64]>,
    misses: usize,
}

impl Default for Doorkeeper {
    fn default() -> Doorkeeper {
        Doorkeeper {
            bits: vec![0; DOORKEEPER_BITS / 64].into_boxed_slice(),
            misses: 0,
        }
    }
}

impl Doorkeeper {
    /// Notes a miss of the subject hashed to `hash`; whether it missed before (and may come in).
    fn admit(&mut self, hash: u64) -> bool {
        self.misses += 1;
        if self.misses > DOORKEEPER_MISSES_MAX {
            self.bits.fill(0);
            self.misses = 1;
        }
        let bit = hash as usize % DOORKEEPER_BITS;
        let (word, mask) = (bit / 64, 1u64 << (bit % 64));
        let seen = self.bits[word] & mask != 0;
        self.bits[word] |= mask;
        seen
    }
}

/// One subscription of a connection on this shard.
pub struct LocalSub {
    pub conn: Rc<Client>,
    pub sid: u64,
    pub pattern: Arc<str>,
    pub queue: Option<Arc<str>>,
    /// The message header frame for this subscription, encoded once (native protocol).
    pub header: Bytes,
    /// The subscription id as a NATS client sent it, for `MSG` lines (NATS protocol).
    pub nats_sid: Option<Bytes>,
    /// Messages still to deliver before the subscription ends by itself; `u64::MAX`: no limit.
    pub remaining: Cell<u64>,
    /// Set once the subscription has ended; cached routes may still point at it until cleared.
    pub closed: Cell<bool>,
    /// Messages delivered so far.
    pub delivered: Cell<u64>,
}

/// What a pattern in the matcher stands for.
pub enum Entry {
    Local(Rc<LocalSub>),
    Remote {
        shard: ShardId,
        queue: Option<Arc<str>>,
    },
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        match (self, other) {
            (Entry::Local(a), Entry::Local(b)) => Rc::ptr_eq(a, b),
            (
                Entry::Remote {
                    shard: a,
                    queue: qa,
                },
                Entry::Remote {
                    shard: b,
                    queue: qb,
                },
            ) => a == b && qa == qb,
            _ => false,
        }
    }
}

/// A queue group's members that match one subject.
pub struct Group {
    pub name: Arc<str>,
    pub local: Vec<Rc<LocalSub>>,
    /// One entry per remote member: the shard it lives on.
    pub remote: Vec<ShardId>,
}

/// Everything a message on one subject must reach.
#[derive(Default)]
pub struct Route {
    /// Plain (non-queue) subscriptions on this shard.
    pub local: Vec<Rc<LocalSub>>,
    /// Shards with plain interest, as a bit set.
    pub remote: u64,
    pub groups: Vec<Group>,
}

impl Route {
    /// Whether anyone, here or on another shard, wants the subject.
    pub fn is_wanted(&self) -> bool {
        !self.local.is_empty() || self.remote != 0 || !self.groups.is_empty()
    }

    /// Whether everyone it reaches is a NATS subscription on this shard (no queue group, no other
    /// shard): a NATS message can then go out from its parts, with no frame made for it.
    pub fn is_nats_only(&self) -> bool {
        self.remote == 0
            && self.groups.is_empty()
            && self.local.iter().all(|s| s.nats_sid.is_some())
    }

    fn add(&mut self, entry: &Entry) {
        match entry {
            Entry::Local(sub) => match &sub.queue {
                None => {
                    if !self.local.iter().any(|s| Rc::ptr_eq(s, sub)) {
                        self.local.push(sub.clone());
                    }
                }
                Some(name) => {
                    let group = self.group_mut(name);
                    if !group.local.iter().any(|s| Rc::ptr_eq(s, sub)) {
                        group.local.push(sub.clone());
                    }
                }
            },
            Entry::Remote { shard, queue } => match queue {
                None => self.remote |= 1 << shard.0,
                Some(name) => self.group_mut(name).remote.push(*shard),
            },
        }
    }

    fn group_mut(&mut self, name: &Arc<str>) -> &mut Group {
        let index = match self.groups.iter().position(|g| g.name == *name) {
            Some(index) => index,
            None => {
                self.groups.push(Group {
                    name: name.clone(),
                    local: Vec::new(),
                    remote: Vec::new(),
                });
                self.groups.len() - 1
            }
        };
        &mut self.groups[index]
    }

    /// The local members of the named group, if any.
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| &*g.name == name)
    }
}

/// The matcher plus its route cache.
#[derive(Default)]
pub struct Interest {
    list: Sublist<Entry>,
    cache: HashMap<Box<str>, Rc<Route>, ahash::RandomState>,
    /// The route of a subject nobody wants: shared, never cached, so that publishing to many
    /// distinct subjects (a stream's users, devices, sessions) neither allocates nor churns.
    empty: Rc<Route>,
    doorkeeper: Doorkeeper,
}

impl Interest {
    /// Files an entry under a pattern.
    pub fn insert(&mut self, pattern: &str, entry: Entry) {
        self.list.insert(pattern, entry);
        self.forget_routes(pattern);
    }

    /// Removes one entry equal to `entry` under `pattern`.
    pub fn remove(&mut self, pattern: &str, entry: &Entry) -> bool {
        let removed = self.list.remove(pattern, entry);
        if removed {
            self.forget_routes(pattern);
        }
        removed
    }

    /// Drops the cached routes a change of interest in `pattern` can alter: the one subject of a
    /// literal pattern, or the subjects a wildcard matches. The other hot routes stay, so a storm
    /// of subscriptions does not make every publish look its route up again.
    fn forget_routes(&mut self, pattern: &str) {
        if self.cache.is_empty() {
            return;
        }
        if pattern.split('.').any(|token| token == "*" || token == ">") {
            self.cache.retain(|subject, _| !matches(pattern, subject));
        } else {
            self.cache.remove(pattern);
        }
    }

    /// The route for a literal subject, from the cache when possible.
    pub fn route(&mut self, subject: &str) -> Rc<Route> {
        if let Some(route) = self.cache.get(subject) {
            return route.clone();
        }
        if self.list.is_empty() {
            return self.empty.clone();
        }
        let mut route = Route::default();
        self.list.for_each_match(subject, |entry| route.add(entry));
        if !route.is_wanted() {
            return self.empty.clone();
        }
        let route = Rc::new(route);
        if !self.doorkeeper.admit(self.cache.hasher().hash_one(subject)) {
            return route;
        }
        if self.cache.len() >= ROUTE_CACHE_ENTRIES_MAX {
            // Drop an eighth, not everything: no pause to free 64k entries at once, and most of
            // the hot subjects stay.
            let mut n = 0u32;
            self.cache.retain(|_, _| {
                n = n.wrapping_add(1);
                n % 8 != 0
            });
        }
        self.cache.insert(subject.into(), route.clone());
        route
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(shard: u32) -> Entry {
        Entry::Remote {
            shard: ShardId(shard),
            queue: None,
        }
    }

    #[test]
    fn a_change_of_interest_drops_only_the_routes_it_can_alter() {
        let mut interest = Interest::default();
        interest.insert("orders.>", remote(1));
        interest.insert("users.42", remote(1));
        // Routed twice: a subject is cached on its second miss.
        for subject in [
            "orders.eu",
            "orders.us",
            "users.42",
            "orders.eu",
            "orders.us",
            "users.42",
        ] {
            assert_eq!(interest.route(subject).remote, 1 << 1);
        }
        assert_eq!(interest.cache.len(), 3);

        interest.insert("orders.eu", remote(2));
        assert!(
            !interest.cache.contains_key("orders.eu"),
            "the literal's route is dropped"
        );
        assert_eq!(interest.cache.len(), 2, "the others stay");
        assert_eq!(interest.route("orders.eu").remote, (1 << 1) | (1 << 2));

        interest.insert("users.*", remote(3));
        assert!(
            !interest.cache.contains_key("users.42"),
            "a wildcard drops what it matches"
        );
        assert!(interest.cache.contains_key("orders.us"));
        assert_eq!(interest.route("users.42").remote, (1 << 1) | (1 << 3));

        assert!(interest.remove("orders.>", &remote(1)));
        assert_eq!(interest.route("orders.us").remote, 0, "removal is seen too");
    }

    #[test]
    fn subjects_routed_once_are_not_cached() {
        let mut interest = Interest::default();
        interest.insert("_INBOX.abc.*", remote(1));
        let routed = 2 * ROUTE_CACHE_ENTRIES_MAX;
        for n in 0..routed {
            let subject = format!("_INBOX.abc.{n}");
            assert_eq!(interest.route(&subject).remote, 1 << 1);
        }
        // Collisions in the doorkeeper let a few in: far fewer than were routed.
        assert!(
            interest.cache.len() < routed / 10,
            "{} one-off subjects cached",
            interest.cache.len()
        );
        interest.route("_INBOX.abc.again");
        assert!(!interest.cache.contains_key("_INBOX.abc.again"));
        interest.route("_INBOX.abc.again");
        assert!(interest.cache.contains_key("_INBOX.abc.again"));
    }
}
