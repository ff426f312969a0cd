//! The options of a NATS `CONNECT`: a JSON object, of which the broker reads the fields below.
//!
//! As nats-server (which unmarshals the JSON into a struct and drops the connection if that
//! fails), a `CONNECT` whose JSON is invalid, is not an object, or gives one of these fields a value
//! of the wrong type is refused; `null` stands for an absent field, and a `null` document for an
//! empty one. Unknown fields are ignored. nats-server only logs the reason; the broker also sends it
//! in an `-ERR` line, so a client author sees it.

use serde_json::{Map, Value};
use thiserror::Error;

/// What a client asked for in `CONNECT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Answer every operation with `+OK`.
    pub verbose: bool,
    /// Deliver the client's own messages to its subscriptions.
    pub echo: bool,
    /// Answer a request nobody listens to with a 503 status (needs `headers`).
    pub no_responders: bool,
    /// The client understands `HMSG`.
    pub headers: bool,
    pub user: Option<String>,
    pub pass: Option<String>,
    pub auth_token: Option<String>,
}

impl Default for ConnectOptions {
    /// The options of an empty `CONNECT {}`: nats-server's defaults.
    fn default() -> ConnectOptions {
        ConnectOptions {
            verbose: false,
            echo: true,
            no_responders: false,
            headers: false,
            user: None,
            pass: None,
            auth_token: None,
        }
    }
}

/// Why a `CONNECT` was refused. The texts go to the client in `-ERR`, so they hold no quote.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConnectError {
    #[error("Invalid CONNECT: not JSON (line {line}, column {column})")]
    NotJson { line: usize, column: usize },
    #[error("Invalid CONNECT: the options must be a JSON object")]
    NotAnObject,
    #[error("Invalid CONNECT: {field} must be a {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
}

/// Parses the JSON of a `CONNECT` line.
pub fn parse_connect(json: &[u8]) -> Result<ConnectOptions, ConnectError> {
    let value: Value = serde_json::from_slice(json).map_err(|e| ConnectError::NotJson {
        line: e.line(),
        column: e.column(),
    })?;
    let fields = match value {
        Value::Object(fields) => fields,
        Value::Null => Map::new(),
        _ => return Err(ConnectError::NotAnObject),
    };
    let defaults = ConnectOptions::default();
    Ok(ConnectOptions {
        verbose: flag(&fields, "verbose")?.unwrap_or(defaults.verbose),
        echo: flag(&fields, "echo")?.unwrap_or(defaults.echo),
        no_responders: flag(&fields, "no_responders")?.unwrap_or(defaults.no_responders),
        headers: flag(&fields, "headers")?.unwrap_or(defaults.headers),
        user: text(&fields, "user")?,
        pass: text(&fields, "pass")?,
        auth_token: text(&fields, "auth_token")?,
    })
}

fn flag(fields: &Map<String, Value>, field: &'static str) -> Result<Option<bool>, ConnectError> {
    match fields.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ConnectError::WrongType {
            field,
            expected: "boolean",
        }),
    }
}

fn text(fields: &Map<String, Value>, field: &'static str) -> Result<Option<String>, ConnectError> {
    match fields.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ConnectError::WrongType {
            field,
            expected: "string",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_connect_is_read_with_nats_server_defaults() {
        let options = parse_connect(
            br#"{"verbose":true,"pedantic":false,"lang":"rust","version":"0.46","protocol":1,
                "echo":false,"headers":true,"no_responders":true,"user":"ann","pass":"s3cret"}"#,
        )
        .unwrap();
        assert_eq!(
            options,
            ConnectOptions {
                verbose: true,
                echo: false,
                no_responders: true,
                headers: true,
                user: Some("ann".into()),
                pass: Some("s3cret".into()),
                auth_token: None,
            }
        );
        assert_eq!(parse_connect(b"{}"), Ok(ConnectOptions::default()));
        assert_eq!(parse_connect(b"null"), Ok(ConnectOptions::default()));
        assert_eq!(
            parse_connect(br#"{"auth_token":null,"verbose":null}"#),
            Ok(ConnectOptions::default())
        );
    }

    #[test]
    fn a_connect_that_is_not_an_object_of_the_right_types_is_refused() {
        for bad in [&b"[]"[..], b"\"x\"", b"1", b"true"] {
            assert_eq!(
                parse_connect(bad),
                Err(ConnectError::NotAnObject),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_connect(b"{\"verbose\":"),
            Err(ConnectError::NotJson {
                line: 1,
                column: 11
            })
        );
        assert!(matches!(
            parse_connect(b""),
            Err(ConnectError::NotJson { .. })
        ));
        assert_eq!(
            parse_connect(br#"{"verbose":"yes"}"#),
            Err(ConnectError::WrongType {
                field: "verbose",
                expected: "boolean"
            })
        );
        assert_eq!(
            parse_connect(br#"{"pass":1}"#),
            Err(ConnectError::WrongType {
                field: "pass",
                expected: "string"
            })
        );
        let message = parse_connect(b"[]").unwrap_err().to_string();
        assert!(!message.contains('\''), "{message}");
    }
}
