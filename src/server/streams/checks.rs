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
    EXPECTED_STREAM, MSG_ID,
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

/// A partition's memory of ids and subjects.
#[derive(Debug, Default)]
pub struct PublishChecks {
    window_ns: u64,
    ids: HashMap<String, u64>,
    /// (stored at, id), oldest first: the order ids leave the window.
    ids_by_age: VecDeque<(u64, String)>,
    last_id: Option<String>,
    /// Subject → offset of its last message.
    last_by_subject: HashMap<String, u64>,
}

impl PublishChecks {
    /// Checks that remember ids for `window_ns`.
    pub fn new(window_ns: u64) -> PublishChecks {
        PublishChecks {
            window_ns,
            ..PublishChecks::default()
        }
    }

    /// Decides about a publish of `subject` with `headers` to stream `stream`, whose next offset
    /// (in this partition) is `next_offset`; `sequence` turns an offset into the stream sequence
    /// clients see. Time is `now_ns`.
    pub fn check(
        &mut self,
        stream: &str,
        subject: &str,
        headers: &[u8],
        next_offset: u64,
        now_ns: u64,
        sequence: impl Fn(u64) -> u64,
    ) -> Verdict {
        self.expire(now_ns);
        let Ok(headers) = Headers::parse(headers) else {
            return Verdict::Store;
        };
        if headers.is_empty() {
            return Verdict::Store;
        }
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
        match headers.get_u64(EXPECTED_LAST_SUBJECT_SEQUENCE) {
            Ok(Some(expected)) => {
                let last = self
                    .last_by_subject
                    .get(subject)
                    .map_or(0, |&o| sequence(o));
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

    /// Notes a message stored at `offset` (after `check` said to store it, or while recovering).
    pub fn stored(&mut self, subject: &str, headers: &[u8], offset: u64, stored_ns: u64) {
        match self.last_by_subject.get_mut(subject) {
            Some(last) => *last = offset,
            None => {
                self.last_by_subject.insert(subject.to_owned(), offset);
            }
        }
        let Ok(headers) = Headers::parse(headers) else {
            return;
        };
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
    }

    /// The offset of the last message on `subject`.
    pub fn last_of(&self, subject: &str) -> Option<u64> {
        self.last_by_subject.get(subject).copied()
    }

    /// Forgets every subject whose last message is below `first_offset` (retention or a purge
    /// removed it).
    pub fn removed_below(&mut self, first_offset: u64) {
        self.last_by_subject
            .retain(|_, &mut offset| offset >= first_offset);
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

    #[test]
    fn an_id_seen_within_the_window_is_a_duplicate_of_its_first_store() {
        let mut checks = PublishChecks::new(120 * SEC);
        let h = block(&[(MSG_ID, "m1")]);
        assert_eq!(checks.check("S", "a", &h, 0, SEC, plus_one), Verdict::Store);
        checks.stored("a", &h, 0, SEC);
        assert_eq!(
            checks.check("S", "a", &h, 1, 2 * SEC, plus_one),
            Verdict::Duplicate { offset: 0 }
        );
        // Past the window it is new again.
        assert_eq!(
            checks.check("S", "a", &h, 1, 122 * SEC, plus_one),
            Verdict::Store
        );
    }

    #[test]
    fn expectations_refuse_with_the_actual_value() {
        let mut checks = PublishChecks::new(120 * SEC);
        checks.stored("a", b"", 0, SEC);
        checks.stored("b", &block(&[(MSG_ID, "x")]), 1, SEC);
        let refuse = |checks: &mut PublishChecks, fields: &[(&str, &str)]| {
            checks.check("S", "a", &block(fields), 2, 2 * SEC, plus_one)
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
    fn a_subject_whose_messages_were_removed_has_no_last() {
        let mut checks = PublishChecks::new(0);
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
            let mut checks = PublishChecks::new(window);
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
                let got = checks.check("S", "s", &h, next, now, plus_one);
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
