//! What a partition remembers to check a JetStream publish before storing it: the message ids seen
//! within the duplicate window (`Nats-Msg-Id`), the last id, and the last offset of every subject.
//! The checks run in the order the appends are stored, so "the last" always means the message
//! stored just before.
//!
//! Bounds: ids are forgotten once older than the window, and at most `IDS_MAX` are kept (the
//! oldest go first); subjects are kept for as long as the partition holds a message on them.

use std::collections::{HashMap, VecDeque};

use sluice_protocol::jetstream::headers::{
    Headers, EXPECTED_LAST_MSG_ID, EXPECTED_LAST_SEQUENCE, EXPECTED_LAST_SUBJECT_SEQUENCE,
    EXPECTED_STREAM, MSG_ID, ROLLUP,
};
use sluice_protocol::jetstream::json::ApiError;

/// Message ids a partition remembers at most, however long its window: a client sending a new id
/// with every publish at a million per second would otherwise keep two minutes of them.
pub const IDS_MAX: usize = 1 << 20;

/// What to do with a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Store it.
    Store,
    /// Its id was stored already, at this offset: ack that again, store nothing.
    Duplicate { offset: u64 },
    /// An expectation does not hold: refuse it with this error.
    Refuse(ApiError),
}

/// The limits a JetStream stream refuses new messages past (`discard: new`), and the largest
/// message it takes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_msgs: Option<u64>,
    pub max_bytes: Option<u64>,
    pub max_msg_size: Option<u64>,
    /// Messages kept per subject: past it, a subject's oldest goes (KV history).
    pub max_msgs_per_subject: Option<u64>,
    /// Whether `Nats-Rollup` is allowed.
    pub allow_rollup: bool,
}

impl Limits {
    /// The limits of a JetStream config.
    pub fn of(config: &sluice_protocol::jetstream::json::StreamConfig) -> Limits {
        use sluice_protocol::jetstream::json::Discard;
        let limit = |n: i64| u64::try_from(n).ok().filter(|&n| n > 0);
        let discard_new = config.discard == Discard::New;
        Limits {
            max_msgs: limit(config.max_msgs).filter(|_| discard_new),
            max_bytes: limit(config.max_bytes).filter(|_| discard_new),
            max_msg_size: limit(config.max_msg_size),
            max_msgs_per_subject: limit(config.max_msgs_per_subject),
            allow_rollup: config.allow_rollup_hdrs,
        }
    }
}

/// A publish to check.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    pub subject: &'a str,
    pub headers: &'a [u8],
    /// Headers and payload, in bytes.
    pub size: u64,
}

/// Where the partition stands when the publish would be stored.
#[derive(Debug, Clone, Copy)]
pub struct Position {
    /// The first offset still stored.
    pub first: u64,
    /// The offset the publish would be stored at.
    pub next: u64,
    /// Bytes stored.
    pub bytes: u64,
}

/// A partition's memory of ids and subjects.
#[derive(Debug, Default, Clone)]
pub struct PublishChecks {
    limits: Limits,
    window_ns: u64,
    ids: HashMap<String, u64>,
    /// (stored at, id), oldest first: the order ids leave the window.
    ids_by_age: VecDeque<(u64, String)>,
    last_id: Option<String>,
    /// Subject → offsets of its messages, oldest first: every one on a stream with a limit per
    /// subject or rollups (which need them), else only the last.
    subjects: HashMap<String, VecDeque<u64>>,
}

/// What storing a message removes besides: older messages of its subject (past the limit per
/// subject, or rolled up), or everything before it (a rollup of the stream).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removal {
    pub offsets: Vec<u64>,
    pub below: Option<u64>,
}

impl PublishChecks {
    /// Checks that remember ids for `window_ns` and refuse what passes `limits`.
    pub fn new(window_ns: u64, limits: Limits) -> PublishChecks {
        PublishChecks {
            limits,
            window_ns,
            ..PublishChecks::default()
        }
    }

    /// Decides about a publish to stream `stream` that would be stored at `at`; `sequence` turns
    /// an offset into the stream sequence clients see. Time is `now_ns`.
    pub fn check(
        &mut self,
        stream: &str,
        incoming: Incoming<'_>,
        at: Position,
        now_ns: u64,
        sequence: impl Fn(u64) -> u64,
    ) -> Verdict {
        self.expire(now_ns);
        if let Some(refusal) = self.over_limits(incoming, at) {
            return Verdict::Refuse(refusal);
        }
        let Ok(headers) = Headers::parse(incoming.headers) else {
            return Verdict::Store;
        };
        if headers.is_empty() {
            return Verdict::Store;
        }
        let (subject, next_offset) = (incoming.subject, at.next);
        if let Some(id) = headers.get(MSG_ID) {
            if let Some(&offset) = self.ids.get(id) {
                return Verdict::Duplicate { offset };
            }
        }
        if let Some(expected) = headers.get(EXPECTED_STREAM) {
            if expected != stream {
                return Verdict::Refuse(ApiError::expected_stream_mismatch());
            }
        }
        let last_seq = next_offset.checked_sub(1).map_or(0, &sequence);
        match headers.get_u64(EXPECTED_LAST_SEQUENCE) {
            Ok(Some(expected)) if expected != last_seq => {
                return Verdict::Refuse(ApiError::wrong_last_sequence(last_seq));
            }
            Err(bad) => return Verdict::Refuse(bad_number(EXPECTED_LAST_SEQUENCE, bad)),
            _ => {}
        }
        if let Some(rollup) = headers.get(ROLLUP) {
            if !self.limits.allow_rollup {
                return Verdict::Refuse(ApiError::rollup_not_permitted());
            }
            if rollup != "sub" && rollup != "all" {
                return Verdict::Refuse(ApiError::bad_request(format!(
                    "rollup value invalid: {rollup}"
                )));
            }
        }
        match headers.get_u64(EXPECTED_LAST_SUBJECT_SEQUENCE) {
            Ok(Some(expected)) => {
                let last = self.last_of(subject).map_or(0, &sequence);
                if expected != last {
                    return Verdict::Refuse(ApiError::wrong_last_sequence(last));
                }
            }
            Err(bad) => return Verdict::Refuse(bad_number(EXPECTED_LAST_SUBJECT_SEQUENCE, bad)),
            Ok(None) => {}
        }
        if let Some(expected) = headers.get(EXPECTED_LAST_MSG_ID) {
            let last = self.last_id.as_deref().unwrap_or("");
            if expected != last {
                return Verdict::Refuse(ApiError::wrong_last_msg_id(last));
            }
        }
        Verdict::Store
    }

    /// The refusal of a publish past the stream's limits, if it is.
    fn over_limits(&self, incoming: Incoming<'_>, at: Position) -> Option<ApiError> {
        let limits = &self.limits;
        if limits.max_msg_size.is_some_and(|max| incoming.size > max) {
            return Some(ApiError::new(
                400,
                10054,
                "message size exceeds maximum allowed",
            ));
        }
        if limits.max_msgs.is_some_and(|max| at.next - at.first >= max) {
            return Some(ApiError::new(503, 10077, "maximum messages exceeded"));
        }
        if limits
            .max_bytes
            .is_some_and(|max| at.bytes.saturating_add(incoming.size) > max)
        {
            return Some(ApiError::new(503, 10077, "maximum bytes exceeded"));
        }
        None
    }

    /// Whether every offset of a subject is kept (not only its last).
    pub fn keeps_all(&self) -> bool {
        self.limits.max_msgs_per_subject.is_some() || self.limits.allow_rollup
    }

    /// Notes a message stored at `offset` (after `check` said to store it, or while recovering);
    /// returns what it removes besides.
    pub fn stored(
        &mut self,
        subject: &str,
        headers: &[u8],
        offset: u64,
        stored_ns: u64,
    ) -> Removal {
        let keeps_all = self.keeps_all();
        let offsets = match self.subjects.get_mut(subject) {
            Some(offsets) => offsets,
            None => self.subjects.entry(subject.to_owned()).or_default(),
        };
        if !keeps_all {
            offsets.clear();
        }
        offsets.push_back(offset);
        let mut removal = Removal::default();
        let Ok(headers) = Headers::parse(headers) else {
            return removal;
        };
        match headers.get(ROLLUP) {
            Some("sub") if self.limits.allow_rollup => {
                removal.offsets.extend(offsets.drain(..offsets.len() - 1));
            }
            Some("all") if self.limits.allow_rollup => {
                removal.below = Some(offset);
            }
            _ => {}
        }
        if let Some(max) = self.limits.max_msgs_per_subject {
            while offsets.len() as u64 > max {
                removal.offsets.extend(offsets.pop_front());
            }
        }
        if let Some(id) = headers.get(MSG_ID) {
            self.last_id = Some(id.to_owned());
            if self.window_ns > 0 && self.ids.insert(id.to_owned(), offset).is_none() {
                self.ids_by_age.push_back((stored_ns, id.to_owned()));
                if self.ids_by_age.len() > IDS_MAX {
                    if let Some((_, oldest)) = self.ids_by_age.pop_front() {
                        self.ids.remove(&oldest);
                    }
                }
            }
        }
        removal
    }

    /// Forgets deleted messages of a subject.
    pub fn deleted(&mut self, subject: &str, gone: &[u64]) {
        if let Some(offsets) = self.subjects.get_mut(subject) {
            offsets.retain(|o| !gone.contains(o));
            if offsets.is_empty() {
                self.subjects.remove(subject);
            }
        }
    }

    /// The offsets of every message kept on `subject`, oldest first (only the last on a stream
    /// that keeps no more).
    #[cfg(test)]
    pub fn offsets_of(&self, subject: &str) -> Vec<u64> {
        self.subjects
            .get(subject)
            .map(|o| o.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The subjects `filter` matches, each with its offsets (see `offsets_of`).
    pub fn matching(&self, filter: &str) -> Vec<(String, Vec<u64>)> {
        self.subjects
            .iter()
            .filter(|(subject, _)| sluice_protocol::subject::matches(filter, subject))
            .map(|(subject, offsets)| (subject.clone(), offsets.iter().copied().collect()))
            .collect()
    }

    /// The offsets of the last message of every subject any of `filters` matches (all subjects
    /// without filters), in offset order.
    pub fn lasts_matching(&self, filters: &[String]) -> Vec<u64> {
        let mut lasts: Vec<u64> = self
            .subjects
            .iter()
            .filter(|(subject, _)| {
                filters.is_empty()
                    || filters
                        .iter()
                        .any(|f| sluice_protocol::subject::matches(f, subject))
            })
            .filter_map(|(_, offsets)| offsets.back().copied())
            .collect();
        lasts.sort_unstable();
        lasts
    }

    /// Messages at or past `from` on the subjects any of `filters` matches; `None` when this
    /// partition does not keep every offset of its subjects (then it cannot tell).
    pub fn count_matching_from(&self, filters: &[String], from: u64) -> Option<u64> {
        if !self.keeps_all() {
            return None;
        }
        let count = self
            .subjects
            .iter()
            .filter(|(subject, _)| {
                filters
                    .iter()
                    .any(|f| sluice_protocol::subject::matches(f, subject))
            })
            .map(|(_, offsets)| offsets.iter().rev().take_while(|&&o| o >= from).count() as u64)
            .sum();
        Some(count)
    }

    /// The offset of the last message on `subject`.
    pub fn last_of(&self, subject: &str) -> Option<u64> {
        self.subjects.get(subject)?.back().copied()
    }

    /// Forgets the messages below `first_offset` (retention or a purge removed them).
    pub fn removed_below(&mut self, first_offset: u64) {
        self.subjects.retain(|_, offsets| {
            while offsets.front().is_some_and(|&o| o < first_offset) {
                offsets.pop_front();
            }
            !offsets.is_empty()
        });
    }

    /// Forgets the ids that left the window.
    fn expire(&mut self, now_ns: u64) {
        let horizon = now_ns.saturating_sub(self.window_ns);
        while let Some((at, _)) = self.ids_by_age.front() {
            if *at >= horizon {
                break;
            }
            if let Some((_, id)) = self.ids_by_age.pop_front() {
                self.ids.remove(&id);
            }
        }
    }
}

fn bad_number(header: &str, value: &str) -> ApiError {
    ApiError::bad_request(format!("{header} is not a number: {value:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEC: u64 = 1_000_000_000;

    fn block(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut builder = sluice_protocol::jetstream::headers::HeaderBuilder::default();
        for (k, v) in fields {
            builder.add(k, v);
        }
        builder.build()
    }

    fn plus_one(offset: u64) -> u64 {
        offset + 1
    }

    fn publish<'a>(subject: &'a str, headers: &'a [u8]) -> Incoming<'a> {
        Incoming {
            subject,
            headers,
            size: headers.len() as u64,
        }
    }

    fn at(next: u64) -> Position {
        Position {
            first: 0,
            next,
            bytes: 0,
        }
    }

    #[test]
    fn an_id_seen_within_the_window_is_a_duplicate_of_its_first_store() {
        let mut checks = PublishChecks::new(120 * SEC, Limits::default());
        let h = block(&[(MSG_ID, "m1")]);
        assert_eq!(
            checks.check("S", publish("a", &h), at(0), SEC, plus_one),
            Verdict::Store
        );
        checks.stored("a", &h, 0, SEC);
        assert_eq!(
            checks.check("S", publish("a", &h), at(1), 2 * SEC, plus_one),
            Verdict::Duplicate { offset: 0 }
        );
        // Past the window it is new again.
        assert_eq!(
            checks.check("S", publish("a", &h), at(1), 122 * SEC, plus_one),
            Verdict::Store
        );
    }

    #[test]
    fn expectations_refuse_with_the_actual_value() {
        let mut checks = PublishChecks::new(120 * SEC, Limits::default());
        checks.stored("a", b"", 0, SEC);
        checks.stored("b", &block(&[(MSG_ID, "x")]), 1, SEC);
        let refuse = |checks: &mut PublishChecks, fields: &[(&str, &str)]| {
            checks.check("S", publish("a", &block(fields)), at(2), 2 * SEC, plus_one)
        };
        assert_eq!(
            refuse(&mut checks, &[(EXPECTED_LAST_SEQUENCE, "5")]),
            Verdict::Refuse(ApiError::wrong_last_sequence(2))
        );
        assert_eq!(
            refuse(&mut checks, &[(EXPECTED_LAST_SEQUENCE, "2")]),
            Verdict::Store
        );
        assert_eq!(
            refuse(&mut checks, &[(EXPECTED_LAST_SUBJECT_SEQUENCE, "0")]),
            Verdict::Refuse(ApiError::wrong_last_sequence(1))
        );
        assert_eq!(
            refuse(&mut checks, &[(EXPECTED_LAST_SUBJECT_SEQUENCE, "1")]),
            Verdict::Store
        );
        assert_eq!(
            refuse(&mut checks, &[(EXPECTED_LAST_MSG_ID, "y")]),
            Verdict::Refuse(ApiError::wrong_last_msg_id("x"))
        );
        assert_eq!(
            refuse(&mut checks, &[(EXPECTED_LAST_MSG_ID, "x")]),
            Verdict::Store
        );
        assert_eq!(
            refuse(&mut checks, &[(EXPECTED_STREAM, "OTHER")]),
            Verdict::Refuse(ApiError::expected_stream_mismatch())
        );
        assert!(matches!(
            refuse(&mut checks, &[(EXPECTED_LAST_SEQUENCE, "two")]),
            Verdict::Refuse(e) if e.code == 400
        ));
    }

    #[test]
    fn limits_refuse_what_would_pass_them() {
        let limits = Limits {
            max_msgs: Some(2),
            max_bytes: Some(100),
            max_msg_size: Some(40),
            ..Limits::default()
        };
        let mut checks = PublishChecks::new(0, limits);
        let small = Incoming {
            subject: "a",
            headers: b"",
            size: 10,
        };
        let position = |first, next, bytes| Position { first, next, bytes };
        assert_eq!(
            checks.check("S", small, position(0, 1, 10), SEC, plus_one),
            Verdict::Store
        );
        let refused = |v: Verdict| match v {
            Verdict::Refuse(e) => e.description,
            other => panic!("stored: {other:?}"),
        };
        assert_eq!(
            refused(checks.check("S", small, position(0, 2, 20), SEC, plus_one)),
            "maximum messages exceeded"
        );
        // Once older messages are gone, there is room again.
        assert_eq!(
            checks.check("S", small, position(1, 2, 10), SEC, plus_one),
            Verdict::Store
        );
        assert_eq!(
            refused(checks.check("S", small, position(1, 2, 95), SEC, plus_one)),
            "maximum bytes exceeded"
        );
        let big = Incoming { size: 41, ..small };
        assert_eq!(
            refused(checks.check("S", big, position(0, 0, 0), SEC, plus_one)),
            "message size exceeds maximum allowed"
        );
    }

    #[test]
    fn a_subject_keeps_its_newest_revisions_and_rollups_remove_the_rest() {
        let limits = Limits {
            max_msgs_per_subject: Some(2),
            allow_rollup: true,
            ..Limits::default()
        };
        let mut checks = PublishChecks::new(0, limits);
        assert_eq!(checks.stored("k", b"", 0, SEC), Removal::default());
        checks.stored("k", b"", 1, SEC);
        checks.stored("j", b"", 2, SEC);
        let evicted = checks.stored("k", b"", 3, SEC);
        assert_eq!(evicted.offsets, [0]);
        assert_eq!(checks.offsets_of("k"), [1, 3]);
        let rollup = checks.stored("k", &block(&[(ROLLUP, "sub")]), 4, SEC);
        assert_eq!(rollup.offsets, [1, 3]);
        assert_eq!(checks.offsets_of("k"), [4]);
        let all = checks.stored("j", &block(&[(ROLLUP, "all")]), 5, SEC);
        assert_eq!(all.below, Some(5));
        checks.deleted("k", &[4]);
        assert_eq!(checks.last_of("k"), None);
        assert_eq!(checks.offsets_of("j"), [2, 5]);
    }

    #[test]
    fn rollups_need_permission() {
        let mut checks = PublishChecks::new(0, Limits::default());
        assert_eq!(
            checks.check(
                "S",
                publish("a", &block(&[(ROLLUP, "sub")])),
                at(0),
                SEC,
                plus_one
            ),
            Verdict::Refuse(ApiError::rollup_not_permitted())
        );
    }

    #[test]
    fn a_subject_whose_messages_were_removed_has_no_last() {
        let mut checks = PublishChecks::new(0, Limits::default());
        checks.stored("a", b"", 0, SEC);
        checks.stored("b", b"", 1, SEC);
        checks.removed_below(1);
        assert_eq!(checks.last_of("a"), None);
        assert_eq!(checks.last_of("b"), Some(1));
    }

    proptest! {
        /// Against a model: an id is a duplicate exactly when it was stored less than a window ago.
        #[test]
        fn duplicates_follow_the_window(
            publishes in proptest::collection::vec((0u8..8, 0u64..5), 1..200),
        ) {
            let window = 10 * SEC;
            let mut checks = PublishChecks::new(window, Limits::default());
            let mut model: HashMap<String, (u64, u64)> = HashMap::new();
            let (mut now, mut next) = (SEC, 0u64);
            for (id, advance) in publishes {
                now += advance * SEC;
                let id = format!("id{id}");
                let h = block(&[(MSG_ID, &id)]);
                let want = match model.get(&id) {
                    Some(&(offset, at)) if at >= now.saturating_sub(window) => Verdict::Duplicate { offset },
                    _ => Verdict::Store,
                };
                let got = checks.check("S", publish("s", &h), at(next), now, plus_one);
                prop_assert_eq!(&got, &want);
                if got == Verdict::Store {
                    checks.stored("s", &h, next, now);
                    model.insert(id, (next, now));
                    next += 1;
                }
            }
        }
    }
}
