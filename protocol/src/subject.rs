//! Subjects and patterns.
//!
//! A subject is tokens separated by `.`: no empty token, no whitespace, at most
//! [`SUBJECT_TOKENS_MAX`] tokens and [`SUBJECT_BYTES_MAX`] bytes. A pattern may also use `*` as a
//! whole token (exactly one token) and `>` as the last token (one or more tokens).

use thiserror::Error;

use crate::limits::{QUEUE_BYTES_MAX, SUBJECT_BYTES_MAX, SUBJECT_TOKENS_MAX};

/// Why a subject, pattern or queue name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SubjectError {
    #[error("subject is empty")]
    Empty,
    #[error("subject is {length} bytes, more than {max}")]
    TooLong { length: usize, max: usize },
    #[error("subject has more than {max} tokens")]
    TooManyTokens { max: usize },
    #[error("subject has an empty token at {index}")]
    EmptyToken { index: usize },
    #[error("subject contains whitespace or a control character")]
    Whitespace,
    #[error("wildcard in a subject that must be literal")]
    WildcardInLiteral,
    #[error("'>' may only be the last token")]
    FullWildcardNotLast,
    #[error("wildcard characters must be a whole token")]
    PartialWildcard,
    #[error("queue group name is invalid")]
    InvalidQueue,
    #[error("subject is not valid UTF-8")]
    NotUtf8,
}

/// Checks a subject that messages are published to: no wildcards.
pub fn validate_subject(subject: &str) -> Result<(), SubjectError> {
    validate(subject, false)
}

/// Checks a subject given as bytes (as the NATS protocol carries it) and returns it as a string:
/// one pass over the bytes for both the rules and the UTF-8 check in the usual all-ASCII case.
pub fn validate_subject_bytes(subject: &[u8]) -> Result<&str, SubjectError> {
    let text = if subject.is_ascii() {
        // SAFETY: ASCII bytes are valid UTF-8.
        unsafe { std::str::from_utf8_unchecked(subject) }
    } else {
        std::str::from_utf8(subject).map_err(|_| SubjectError::NotUtf8)?
    };
    validate(text, false)?;
    Ok(text)
}

/// Checks a subscription pattern: wildcards allowed.
pub fn validate_pattern(pattern: &str) -> Result<(), SubjectError> {
    validate(pattern, true)
}

/// Checks a queue group name: one token-like word, no dots required, no whitespace.
pub fn validate_queue(queue: &str) -> Result<(), SubjectError> {
    if queue.is_empty()
        || queue.len() > QUEUE_BYTES_MAX
        || queue.bytes().any(|b| b <= b' ' || b == 0x7f)
    {
        return Err(SubjectError::InvalidQueue);
    }
    Ok(())
}

fn validate(subject: &str, wildcards: bool) -> Result<(), SubjectError> {
    if subject.is_empty() {
        return Err(SubjectError::Empty);
    }
    if subject.len() > SUBJECT_BYTES_MAX {
        return Err(SubjectError::TooLong {
            length: subject.len(),
            max: SUBJECT_BYTES_MAX,
        });
    }
    // One pass over the bytes (every publish is checked): the checks and their order per token are
    // those of the definition above: token count, empty, whitespace, wildcards.
    let bytes = subject.as_bytes();
    let (mut index, mut start, mut bad_byte) = (0usize, 0usize, false);
    for at in 0..=bytes.len() {
        let b = bytes.get(at).copied().unwrap_or(b'.');
        if b != b'.' {
            bad_byte |= b <= b' ' || b == 0x7f;
            continue;
        }
        let token = &bytes[start..at];
        if index >= SUBJECT_TOKENS_MAX {
            return Err(SubjectError::TooManyTokens {
                max: SUBJECT_TOKENS_MAX,
            });
        }
        if token.is_empty() {
            return Err(SubjectError::EmptyToken { index });
        }
        if bad_byte {
            return Err(SubjectError::Whitespace);
        }
        let last = at == bytes.len();
        match token {
            b"*" | b">" if !wildcards => return Err(SubjectError::WildcardInLiteral),
            b">" if !last => return Err(SubjectError::FullWildcardNotLast),
            b"*" | b">" => {}
            _ if wildcards && token.iter().any(|&c| c == b'*' || c == b'>') => {
                return Err(SubjectError::PartialWildcard)
            }
            _ => {}
        }
        index += 1;
        start = at + 1;
    }
    Ok(())
}

/// Whether a literal `subject` matches `pattern`. The reference definition: simple and obviously
/// right, used by tests against the [`crate::sublist::Sublist`] and for one-off checks.
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(pt), Some(st)) if pt == st => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether every subject `inner` matches is also matched by `outer` (a subscription to `inner` is
/// within what `outer` allows).
pub fn covers(outer: &str, inner: &str) -> bool {
    let mut o = outer.split('.');
    let mut i = inner.split('.');
    loop {
        match (o.next(), i.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(t)) if t != ">" => {}
            (Some(ot), Some(it)) if ot == it && ot != "*" && ot != ">" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether some literal subject matches both patterns (two streams may not capture the same one).
pub fn overlaps(a: &str, b: &str) -> bool {
    let mut x = a.split('.');
    let mut y = b.split('.');
    loop {
        match (x.next(), y.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some("*"), Some(_)) | (Some(_), Some("*")) => {}
            (Some(p), Some(q)) if p == q => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_subjects_are_accepted() {
        for s in ["a", "user.42.audio", "a-b_c.D9", "_INBOX.abc.1"] {
            assert_eq!(validate_subject(s), Ok(()), "{s}");
        }
    }

    #[test]
    fn bad_subjects_are_refused_with_the_reason() {
        assert_eq!(validate_subject(""), Err(SubjectError::Empty));
        assert_eq!(
            validate_subject("a..b"),
            Err(SubjectError::EmptyToken { index: 1 })
        );
        assert_eq!(
            validate_subject(".a"),
            Err(SubjectError::EmptyToken { index: 0 })
        );
        assert_eq!(
            validate_subject("a."),
            Err(SubjectError::EmptyToken { index: 1 })
        );
        assert_eq!(validate_subject("a b"), Err(SubjectError::Whitespace));
        assert_eq!(validate_subject("a\tb"), Err(SubjectError::Whitespace));
        assert_eq!(
            validate_subject("a.*"),
            Err(SubjectError::WildcardInLiteral)
        );
        assert_eq!(
            validate_subject("a.>"),
            Err(SubjectError::WildcardInLiteral)
        );
        let long = "a".repeat(SUBJECT_BYTES_MAX + 1);
        assert!(matches!(
            validate_subject(&long),
            Err(SubjectError::TooLong { .. })
        ));
    }

    #[test]
    fn patterns_allow_whole_token_wildcards_only() {
        assert_eq!(validate_pattern("a.*.c"), Ok(()));
        assert_eq!(validate_pattern("a.>"), Ok(()));
        assert_eq!(validate_pattern(">"), Ok(()));
        assert_eq!(
            validate_pattern("a.>.c"),
            Err(SubjectError::FullWildcardNotLast)
        );
        assert_eq!(validate_pattern("a.b*"), Err(SubjectError::PartialWildcard));
        assert_eq!(validate_pattern("a.>b"), Err(SubjectError::PartialWildcard));
    }

    #[test]
    fn the_reference_matcher_follows_the_wildcard_rules() {
        assert!(matches("a.*.c", "a.b.c"));
        assert!(!matches("a.*.c", "a.b.d"));
        assert!(!matches("a.*", "a.b.c"));
        assert!(matches("a.>", "a.b.c"));
        assert!(!matches("a.>", "a"));
        assert!(matches(">", "a"));
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a.b.c"));
    }

    #[test]
    fn patterns_overlap_when_one_subject_matches_both() {
        assert!(overlaps("a.b", "a.b"));
        assert!(overlaps("a.*", "a.b"));
        assert!(overlaps("a.>", "a.b.c"));
        assert!(overlaps(">", "x"));
        assert!(overlaps("*.b", "a.*"));
        assert!(!overlaps("a.b", "a.c"));
        assert!(!overlaps("a.*", "a.b.c"));
        assert!(!overlaps("a.>", "a"));
        assert!(!overlaps("orders.*", "users.>"));
    }

    #[test]
    fn queue_names_without_whitespace_are_accepted() {
        assert_eq!(validate_queue("workers"), Ok(()));
        assert_eq!(validate_queue("w.1"), Ok(()));
        assert_eq!(validate_queue(""), Err(SubjectError::InvalidQueue));
        assert_eq!(validate_queue("a b"), Err(SubjectError::InvalidQueue));
    }
}
