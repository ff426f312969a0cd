//! NATS header blocks: what JetStream reads from a publish (`Nats-Msg-Id`, the expectations, rollups)
//! and the status messages it sends (`100 Idle Heartbeat`, `404 No Messages`, `408 Request Timeout`).
//!
//! ```text
//! NATS/1.0[ <status>[ <description>]]\r\n
//! <Key>: <Value>\r\n          zero or more
//! \r\n
//! ```
//!
//! Reading borrows from the block; keys compare without regard to ASCII case.

use thiserror::Error;

/// The first line of every header block.
pub const VERSION_LINE: &str = "NATS/1.0";

pub const MSG_ID: &str = "Nats-Msg-Id";
pub const EXPECTED_STREAM: &str = "Nats-Expected-Stream";
pub const EXPECTED_LAST_SEQUENCE: &str = "Nats-Expected-Last-Sequence";
pub const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";
pub const EXPECTED_LAST_MSG_ID: &str = "Nats-Expected-Last-Msg-Id";
pub const ROLLUP: &str = "Nats-Rollup";
pub const STREAM: &str = "Nats-Stream";
pub const SUBJECT: &str = "Nats-Subject";
pub const SEQUENCE: &str = "Nats-Sequence";
pub const TIME_STAMP: &str = "Nats-Time-Stamp";
pub const LAST_CONSUMER: &str = "Nats-Last-Consumer";
pub const LAST_STREAM: &str = "Nats-Last-Stream";
pub const PENDING_MESSAGES: &str = "Nats-Pending-Messages";
pub const PENDING_BYTES: &str = "Nats-Pending-Bytes";
pub const MSG_SIZE: &str = "Nats-Msg-Size";
pub const CONSUMER_STALLED: &str = "Nats-Consumer-Stalled";

/// Why a header block cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HeaderError {
    #[error("headers must start with {VERSION_LINE:?}")]
    NoVersion,
    #[error("headers must end with an empty line")]
    Unterminated,
    #[error("header line {line} has no ':'")]
    NoColon { line: usize },
    #[error("headers are not UTF-8")]
    NotUtf8,
}

/// A checked header block.
#[derive(Debug, Clone, Copy)]
pub struct Headers<'a> {
    /// The status code and its description, from the first line, if any.
    status: Option<(u16, &'a str)>,
    /// The lines after the first, without the final empty line.
    fields: &'a str,
}

impl<'a> Headers<'a> {
    /// Reads a block. An empty block (a publish with header length 0) has no fields.
    pub fn parse(block: &'a [u8]) -> Result<Headers<'a>, HeaderError> {
        if block.is_empty() {
            return Ok(Headers {
                status: None,
                fields: "",
            });
        }
        let text = std::str::from_utf8(block).map_err(|_| HeaderError::NotUtf8)?;
        let text = text
            .strip_suffix("\r\n\r\n")
            .ok_or(HeaderError::Unterminated)?;
        let (first, fields) = match text.split_once("\r\n") {
            Some((first, fields)) => (first, fields),
            None => (text, ""),
        };
        let status_text = first
            .strip_prefix(VERSION_LINE)
            .ok_or(HeaderError::NoVersion)?
            .trim();
        let status = if status_text.is_empty() {
            None
        } else {
            let (code, description) = status_text.split_once(' ').unwrap_or((status_text, ""));
            code.parse::<u16>().ok().map(|c| (c, description.trim()))
        };
        for (line, field) in fields.split("\r\n").enumerate() {
            if !field.is_empty() && !field.contains(':') {
                return Err(HeaderError::NoColon { line: line + 1 });
            }
        }
        Ok(Headers { status, fields })
    }

    /// The status code and description of a status message.
    pub fn status(&self) -> Option<(u16, &'a str)> {
        self.status
    }

    /// Every (key, value), in order, values trimmed.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.fields
            .split("\r\n")
            .filter(|line| !line.is_empty())
            .filter_map(|line| line.split_once(':'))
            .map(|(k, v)| (k.trim(), v.trim()))
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    }

    /// The first value of `key` as a number; `Err` when present but not a number.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, &'a str> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| v),
        }
    }

    /// Whether there is no field at all.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

/// Builds a header block.
#[derive(Debug, Default, Clone)]
pub struct HeaderBuilder {
    fields: String,
}

impl HeaderBuilder {
    /// A builder starting from a stored block's fields (its status line, if any, is dropped).
    pub fn from_block(block: &[u8]) -> HeaderBuilder {
        let mut builder = HeaderBuilder::default();
        if let Ok(headers) = Headers::parse(block) {
            for (k, v) in headers.iter() {
                builder.add(k, v);
            }
        }
        builder
    }

    /// Adds a field.
    pub fn add(&mut self, key: &str, value: &str) -> &mut HeaderBuilder {
        self.fields.push_str(key);
        self.fields.push_str(": ");
        self.fields.push_str(value);
        self.fields.push_str("\r\n");
        self
    }

    /// Adds a numeric field.
    pub fn add_u64(&mut self, key: &str, value: u64) -> &mut HeaderBuilder {
        self.add(key, itoa::Buffer::new().format(value))
    }

    /// The block without a status line.
    pub fn build(&self) -> Vec<u8> {
        self.finish(VERSION_LINE)
    }

    /// The block of a status message: `NATS/1.0 <code> <description>`.
    pub fn build_status(&self, code: u16, description: &str) -> Vec<u8> {
        let mut first = String::with_capacity(VERSION_LINE.len() + 8 + description.len());
        first.push_str(VERSION_LINE);
        first.push(' ');
        first.push_str(itoa::Buffer::new().format(code));
        if !description.is_empty() {
            first.push(' ');
            first.push_str(description);
        }
        self.finish(&first)
    }

    fn finish(&self, first: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(first.len() + self.fields.len() + 4);
        out.extend_from_slice(first.as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(self.fields.as_bytes());
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// A status message's header block with no fields.
pub fn status_block(code: u16, description: &str) -> Vec<u8> {
    HeaderBuilder::default().build_status(code, description)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_publish_block_is_read() {
        let block =
            b"NATS/1.0\r\nNats-Msg-Id: abc\r\nnats-expected-last-subject-sequence: 4\r\n\r\n";
        let headers = Headers::parse(block).unwrap();
        assert_eq!(headers.status(), None);
        assert_eq!(headers.get(MSG_ID), Some("abc"));
        assert_eq!(headers.get_u64(EXPECTED_LAST_SUBJECT_SEQUENCE), Ok(Some(4)));
        assert_eq!(headers.get(ROLLUP), None);
    }

    #[test]
    fn status_lines_are_read() {
        let headers = Headers::parse(b"NATS/1.0 404 No Messages\r\n\r\n").unwrap();
        assert_eq!(headers.status(), Some((404, "No Messages")));
        assert!(headers.is_empty());
        let headers = Headers::parse(b"NATS/1.0 503\r\n\r\n").unwrap();
        assert_eq!(headers.status(), Some((503, "")));
    }

    #[test]
    fn an_empty_block_has_no_fields() {
        let headers = Headers::parse(b"").unwrap();
        assert!(headers.is_empty());
        assert_eq!(headers.get(MSG_ID), None);
    }

    #[test]
    fn malformed_blocks_are_refused() {
        assert_eq!(
            Headers::parse(b"HTTP/1.1\r\n\r\n").unwrap_err(),
            HeaderError::NoVersion
        );
        assert_eq!(
            Headers::parse(b"NATS/1.0").unwrap_err(),
            HeaderError::Unterminated
        );
        assert_eq!(
            Headers::parse(b"NATS/1.0\r\nno colon\r\n\r\n").unwrap_err(),
            HeaderError::NoColon { line: 1 }
        );
    }

    #[test]
    fn status_messages_are_written_as_clients_expect() {
        let mut builder = HeaderBuilder::default();
        builder
            .add_u64(PENDING_MESSAGES, 3)
            .add_u64(PENDING_BYTES, 0);
        assert_eq!(
            builder.build_status(408, "Request Timeout"),
            b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 3\r\nNats-Pending-Bytes: 0\r\n\r\n"
        );
        assert_eq!(status_block(503, ""), b"NATS/1.0 503\r\n\r\n");
    }

    proptest! {
        #[test]
        fn built_blocks_read_back(
            fields in proptest::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,15}", "[ -~&&[^:]]{0,20}"), 0..6),
            status in proptest::option::of((100u16..600, "[A-Za-z ]{0,20}")),
        ) {
            let mut builder = HeaderBuilder::default();
            for (k, v) in &fields {
                builder.add(k, v);
            }
            let block = match &status {
                Some((code, description)) => builder.build_status(*code, description),
                None => builder.build(),
            };
            let headers = Headers::parse(&block).unwrap();
            let read: Vec<_> = headers.iter().collect();
            let want: Vec<_> = fields.iter().map(|(k, v)| (k.as_str(), v.trim())).collect();
            prop_assert_eq!(read, want);
            prop_assert_eq!(headers.status().map(|s| s.0), status.as_ref().map(|s| s.0));
        }

        #[test]
        fn any_bytes_parse_without_panic(block in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Headers::parse(&block).map(|h| h.iter().count());
        }
    }
}
