//! Names of streams, consumers and users: one rule for every port, NATS's. A name is printable,
//! holds no whitespace and none of `. * > / \`, and is 1 to 255 bytes long. So a name is always
//! one token of a subject and one component of a path, never a way out of the data directory.

use thiserror::Error;

/// Longest name, in bytes (NATS's limit, and the longest file name Linux file systems take).
pub const NAME_BYTES_MAX: usize = 255;

/// Why a name is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("a name cannot be empty")]
    Empty,
    #[error("a name is at most {NAME_BYTES_MAX} bytes, not {bytes}")]
    TooLong { bytes: usize },
    #[error("a name cannot hold {ch:?} (byte {at}): names are printable, with no whitespace and none of . * > / \\")]
    Forbidden { at: usize, ch: char },
}

/// Checks a stream, consumer or user name.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(NameError::TooLong { bytes: name.len() });
    }
    match name.char_indices().find(|&(_, c)| {
        c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\')
    }) {
        Some((at, ch)) => Err(NameError::Forbidden { at, ch }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_that_could_leave_a_directory_or_split_a_subject_are_refused() {
        for bad in [
            "",
            "/tmp/x",
            "../../../../tmp/x",
            "..",
            ".",
            "a.b",
            "a b",
            "a\tb",
            "a*",
            "a>",
            "a\\b",
            "/var/lib/sluice/streams",
            "a\u{0}b",
            "a\nb",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            validate_name(&"n".repeat(NAME_BYTES_MAX + 1)),
            Err(NameError::TooLong {
                bytes: NAME_BYTES_MAX + 1
            })
        );
        for good in ["orders", "ORDERS_2", "billing-eu", "ünïcödé", "a:b", "$x"] {
            assert_eq!(validate_name(good), Ok(()), "{good:?}");
        }
        assert_eq!(validate_name(&"n".repeat(NAME_BYTES_MAX)), Ok(()));
    }

    proptest! {
        #[test]
        fn a_valid_name_is_one_normal_path_component(name in "\\PC{0,40}") {
            if validate_name(&name).is_ok() {
                let mut parts = std::path::Path::new(&name).components();
                prop_assert!(matches!(parts.next(), Some(std::path::Component::Normal(_))));
                prop_assert!(parts.next().is_none());
                prop_assert!(!name.contains('.'));
            }
        }
    }
}
