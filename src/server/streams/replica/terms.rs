//! Where each consensus term starts in a replicated partition's log.
//!
//! A replicated partition's log is its consensus log: entry `i` of the group is a record of the
//! partition, and nothing is written twice. The log itself keeps no terms, and the first entry of
//! every term is the new leader's empty entry, which takes no offset. Both are recovered from this
//! table: for each term the log holds, the index of its first (empty) entry and the offset its
//! first record takes. The entries after a term's start take consecutive offsets from there, so
//!
//! ```text
//! end_offset(i) = start.offset + (i - start.index)    for the last start with start.index <= i
//! offset(i)     = end_offset(i) - 1                    for an entry that is not a start
//! ```
//!
//! A membership change (a replica moved) is an entry without a record too: it has a row of its
//! own, in the term it was proposed in, which keeps the change itself, so that it can be sent to
//! a follower again. The formulas above hold with it, as with a term's start.
//!
//! The table changes once per term, per membership change and when a conflicting tail is cut, and
//! is written durably before the entries it describes are appended, so it never lags the log.

use serde::{Deserialize, Serialize};

/// An entry without a record: the first entry of a term, or a membership change. Its index, and
/// the offset of the next record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermStart {
    pub term: u64,
    pub index: u64,
    pub offset: u64,
    /// A membership change's entry (its encoded change), rather than a term's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<Vec<u8>>,
}

/// Every term start the log holds, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terms {
    starts: Vec<TermStart>,
}

impl Terms {
    /// The start of the term holding entry `index`, if the table reaches back that far.
    fn start_of(&self, index: u64) -> Option<&TermStart> {
        let after = self.starts.partition_point(|s| s.index <= index);
        after.checked_sub(1).map(|at| &self.starts[at])
    }

    /// The term of entry `index` (0 before the first term).
    pub fn term_of(&self, index: u64) -> u64 {
        self.start_of(index).map_or(0, |s| s.term)
    }

    /// The latest term in the table (0 if none).
    pub fn last_term(&self) -> u64 {
        self.starts.last().map_or(0, |s| s.term)
    }

    /// One past the offset of the last record at or before entry `index`: where the record of
    /// entry `index + 1` goes.
    pub fn end_offset(&self, index: u64) -> u64 {
        self.start_of(index)
            .map_or(0, |s| s.offset + (index - s.index))
    }

    /// Whether entry `index` has no record: the start of its term (an empty entry), or a
    /// membership change.
    pub fn is_start(&self, index: u64) -> bool {
        self.start_of(index).is_some_and(|s| s.index == index)
    }

    /// The membership change entry `index` is, if it is one.
    pub fn change_at(&self, index: u64) -> Option<&[u8]> {
        self.start_of(index)
            .filter(|s| s.index == index)
            .and_then(|s| s.change.as_deref())
    }

    /// The entry whose record is at `offset`, if the table reaches it.
    pub fn index_of_offset(&self, offset: u64) -> Option<u64> {
        // Several terms may start at one offset (terms without records): the last owns it.
        let after = self.starts.partition_point(|s| s.offset <= offset);
        let start = self.starts.get(after.checked_sub(1)?)?;
        Some(start.index + (offset - start.offset) + 1)
    }

    /// The last entry of a log whose records end before `next_offset` (0 if there is none).
    pub fn last_index(&self, next_offset: u64) -> u64 {
        self.starts
            .last()
            .map_or(0, |s| s.index + next_offset.saturating_sub(s.offset))
    }

    /// A table for a log restarted after entry `start.index` (a leader's snapshot): that entry
    /// is taken as its term's start, and the records after it take offsets from `start.offset`.
    pub fn restarted(start: TermStart) -> Terms {
        Terms {
            starts: vec![start],
        }
    }

    /// Records that a new term starts at entry `start.index` (or a membership change is made
    /// there), whose next record takes `start.offset`.
    pub fn push(&mut self, start: TermStart) {
        debug_assert!(self
            .starts
            .last()
            .is_none_or(|last| last.index < start.index
                && (last.term < start.term || start.change.is_some() && last.term == start.term)));
        self.starts.push(start);
    }

    /// Forgets the terms starting at or after entry `index` (a conflicting tail was cut).
    pub fn truncate_from(&mut self, index: u64) {
        self.starts.retain(|s| s.index < index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Term 1 starts at entry 1 (offset 0) with entries 2..=4 at offsets 0..=2; term 2 at entry 5
    /// with no record; term 3 at entry 6 with entries 7..=8 at offsets 3..=4.
    fn table() -> Terms {
        let mut terms = Terms::default();
        terms.push(TermStart {
            term: 1,
            index: 1,
            offset: 0,
            change: None,
        });
        terms.push(TermStart {
            term: 2,
            index: 5,
            offset: 3,
            change: None,
        });
        terms.push(TermStart {
            term: 3,
            index: 6,
            offset: 3,
            change: None,
        });
        terms
    }

    #[test]
    fn entries_map_to_offsets_and_back() {
        let terms = table();
        assert_eq!(terms.last_index(5), 8);
        for (index, offset) in [(2, 0), (3, 1), (4, 2), (7, 3), (8, 4)] {
            assert_eq!(terms.end_offset(index), offset + 1, "entry {index}");
            assert_eq!(
                terms.index_of_offset(offset),
                Some(index),
                "offset {offset}"
            );
            assert!(!terms.is_start(index));
        }
        for start in [1, 5, 6] {
            assert!(terms.is_start(start));
        }
        assert_eq!(terms.end_offset(5), 3);
        assert_eq!(terms.end_offset(6), 3);
        assert_eq!(
            [0, 1, 4, 5, 6, 8].map(|i| terms.term_of(i)),
            [0, 1, 1, 2, 3, 3]
        );
    }

    #[test]
    fn a_membership_change_takes_no_offset_and_keeps_its_change() {
        let mut terms = table();
        terms.push(TermStart {
            term: 3,
            index: 9,
            offset: 5,
            change: Some(vec![7, 7]),
        });
        assert_eq!(terms.last_index(7), 11);
        assert!(terms.is_start(9));
        assert_eq!(terms.change_at(9), Some(&[7u8, 7][..]));
        assert_eq!(terms.change_at(6), None);
        assert_eq!(terms.term_of(10), 3);
        assert_eq!(terms.end_offset(9), 5);
        assert_eq!(terms.end_offset(10), 6);
        assert_eq!(terms.index_of_offset(4), Some(8));
        assert_eq!(terms.index_of_offset(5), Some(10));
        terms.truncate_from(9);
        assert_eq!(terms.change_at(9), None);
    }

    #[test]
    fn cutting_a_tail_forgets_its_terms() {
        let mut terms = table();
        terms.truncate_from(5);
        assert_eq!(terms.last_term(), 1);
        assert_eq!(terms.last_index(3), 4);
        terms.push(TermStart {
            term: 4,
            index: 5,
            offset: 3,
            change: None,
        });
        assert_eq!(terms.term_of(5), 4);
        assert_eq!(terms.index_of_offset(3), Some(6));
    }

    #[test]
    fn an_empty_table_holds_nothing() {
        let terms = Terms::default();
        assert_eq!(terms.last_index(0), 0);
        assert_eq!(terms.term_of(3), 0);
        assert_eq!(terms.index_of_offset(0), None);
    }
}
