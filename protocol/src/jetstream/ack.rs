//! What a client publishes to a delivered message's ack subject, and the body of a pull request
//! (`CONSUMER.MSG.NEXT`).
//!
//! ```text
//! ack body:   "" | +ACK | +OK | -NAK [{"delay":<ns>} | <go duration>] | +WPI | +TERM [reason]
//!             | +NXT [pull body]
//! pull body:  "" (batch 1) | <n> (batch n)
//!             | {"batch":n,"expires":ns,"no_wait":b,"max_bytes":n,"idle_heartbeat":ns}
//! ```

use serde::Deserialize;
use thiserror::Error;

/// Longest delay a nak may ask for, or expiry a pull may have: a day. Longer is capped, so that a
/// client's number never overflows a deadline.
pub const DELAY_NS_MAX: u64 = 86_400 * 1_000_000_000;

/// An ack subject's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckBody<'a> {
    /// Done with the message.
    Ack,
    /// Deliver it again, now or after a delay (nanoseconds).
    Nak { delay_ns: Option<u64> },
    /// Still working: restart the ack wait.
    Progress,
    /// Never deliver it again.
    Term { reason: &'a str },
    /// Ack, then a pull request whose reply subject is the ack's reply subject.
    Next { request: &'a [u8] },
    /// Anything else: ignored, as nats-server does.
    Unknown,
}

/// Reads an ack body.
pub fn parse_ack(body: &[u8]) -> AckBody<'_> {
    let body = body.trim_ascii();
    match body {
        b"" | b"+ACK" | b"+OK" => return AckBody::Ack,
        b"+WPI" => return AckBody::Progress,
        _ => {}
    }
    if let Some(rest) = body.strip_prefix(b"-NAK") {
        return AckBody::Nak {
            delay_ns: parse_nak_delay(rest.trim_ascii()),
        };
    }
    if let Some(rest) = body.strip_prefix(b"+TERM") {
        return AckBody::Term {
            reason: std::str::from_utf8(rest.trim_ascii()).unwrap_or(""),
        };
    }
    if let Some(rest) = body.strip_prefix(b"+NXT") {
        return AckBody::Next {
            request: rest.trim_ascii(),
        };
    }
    AckBody::Unknown
}

fn parse_nak_delay(rest: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Delay {
        delay: i64,
    }
    if rest.is_empty() {
        return None;
    }
    let ns = if rest[0] == b'{' {
        let delay: Delay = serde_json::from_slice(rest).ok()?;
        u64::try_from(delay.delay).ok()?
    } else {
        parse_go_duration(std::str::from_utf8(rest).ok()?)?
    };
    Some(ns.min(DELAY_NS_MAX))
}

/// Reads a Go duration such as `5s`, `1m30s`, `250ms` or `1.5h`, in nanoseconds (saturating).
pub fn parse_go_duration(text: &str) -> Option<u64> {
    let mut rest = text.trim();
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    Some(if total >= u64::MAX as f64 {
        u64::MAX
    } else {
        total as u64
    })
}

/// A pull request, with nats-server's defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullRequest {
    /// Messages wanted, at least 1.
    pub batch: u64,
    /// How long the request waits, in nanoseconds; 0 = until filled.
    pub expires_ns: u64,
    /// End at once (with a 404 status) when nothing is deliverable.
    pub no_wait: bool,
    /// Most payload bytes to send in all; 0 = no limit.
    pub max_bytes: u64,
    /// Send a `100 Idle Heartbeat` status this often while waiting; 0 = never.
    pub idle_heartbeat_ns: u64,
}

/// Why a pull request is refused (sent back as `400 Bad Request - <reason>`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PullError {
    #[error("{0}")]
    Json(String),
    #[error("heartbeat value too large")]
    HeartbeatTooLarge,
}

/// Reads a pull request body.
pub fn parse_pull(body: &[u8]) -> Result<PullRequest, PullError> {
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Json {
        batch: i64,
        expires: i64,
        no_wait: bool,
        max_bytes: i64,
        idle_heartbeat: i64,
    }
    let body = body.trim_ascii();
    let mut request = PullRequest {
        batch: 1,
        expires_ns: 0,
        no_wait: false,
        max_bytes: 0,
        idle_heartbeat_ns: 0,
    };
    if body.first() == Some(&b'{') {
        let json: Json =
            serde_json::from_slice(body).map_err(|e| PullError::Json(e.to_string()))?;
        let positive = |n: i64| u64::try_from(n).unwrap_or(0);
        request.batch = positive(json.batch).max(1);
        request.expires_ns = positive(json.expires).min(DELAY_NS_MAX);
        request.no_wait = json.no_wait;
        request.max_bytes = positive(json.max_bytes);
        request.idle_heartbeat_ns = positive(json.idle_heartbeat);
        if request.idle_heartbeat_ns > 0
            && request.idle_heartbeat_ns.saturating_mul(2) > request.expires_ns
        {
            return Err(PullError::HeartbeatTooLarge);
        }
    } else if let Some(n) = std::str::from_utf8(body)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
    {
        request.batch = u64::try_from(n).unwrap_or(0).max(1);
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_ack_form_is_read() {
        assert_eq!(parse_ack(b""), AckBody::Ack);
        assert_eq!(parse_ack(b"+ACK"), AckBody::Ack);
        assert_eq!(parse_ack(b"+OK"), AckBody::Ack);
        assert_eq!(parse_ack(b"+WPI"), AckBody::Progress);
        assert_eq!(parse_ack(b"-NAK"), AckBody::Nak { delay_ns: None });
        assert_eq!(
            parse_ack(br#"-NAK {"delay": 2000000000}"#),
            AckBody::Nak {
                delay_ns: Some(2_000_000_000)
            }
        );
        assert_eq!(
            parse_ack(b"-NAK 1m30s"),
            AckBody::Nak {
                delay_ns: Some(90_000_000_000)
            }
        );
        assert_eq!(
            parse_ack(b"+TERM bad input"),
            AckBody::Term {
                reason: "bad input"
            }
        );
        assert_eq!(parse_ack(b"+TERM"), AckBody::Term { reason: "" });
        assert_eq!(
            parse_ack(br#"+NXT {"batch":2}"#),
            AckBody::Next {
                request: br#"{"batch":2}"#
            }
        );
        assert_eq!(parse_ack(b"what"), AckBody::Unknown);
    }

    #[test]
    fn nak_delays_are_capped() {
        assert_eq!(
            parse_ack(br#"-NAK {"delay": 9223372036854775807}"#),
            AckBody::Nak {
                delay_ns: Some(DELAY_NS_MAX)
            }
        );
        assert_eq!(
            parse_ack(br#"-NAK {"delay": -5}"#),
            AckBody::Nak { delay_ns: None }
        );
    }

    #[test]
    fn go_durations_are_read() {
        assert_eq!(parse_go_duration("250ms"), Some(250_000_000));
        assert_eq!(parse_go_duration("1.5h"), Some(5_400_000_000_000));
        assert_eq!(parse_go_duration("2us"), Some(2_000));
        assert_eq!(parse_go_duration("0"), Some(0));
        assert_eq!(parse_go_duration("5"), None);
        assert_eq!(parse_go_duration("5y"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn pull_bodies_follow_the_servers_defaults() {
        let plain = parse_pull(b"").unwrap();
        assert_eq!(
            (plain.batch, plain.expires_ns, plain.no_wait),
            (1, 0, false)
        );
        assert_eq!(parse_pull(b"7").unwrap().batch, 7);
        assert_eq!(parse_pull(b"0").unwrap().batch, 1);
        let js = parse_pull(
            br#"{"batch":10,"max_bytes":0,"idle_heartbeat":15000000000,"expires":30000000000}"#,
        )
        .unwrap();
        assert_eq!(js.batch, 10);
        assert_eq!(js.expires_ns, 30_000_000_000);
        assert_eq!(js.idle_heartbeat_ns, 15_000_000_000);
        let py = parse_pull(br#"{"batch":5,"expires":999900000,"no_wait":true}"#).unwrap();
        assert!(py.no_wait);
        assert_eq!(
            parse_pull(br#"{"batch":1,"expires":1000,"idle_heartbeat":600}"#),
            Err(PullError::HeartbeatTooLarge)
        );
        assert!(matches!(parse_pull(b"{nope"), Err(PullError::Json(_))));
    }

    proptest! {
        #[test]
        fn any_body_parses_without_panic(body in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = parse_ack(&body);
            let _ = parse_pull(&body);
        }

        #[test]
        fn pulls_never_ask_for_nothing(batch in any::<i64>(), expires in any::<i64>()) {
            let body = format!(r#"{{"batch":{batch},"expires":{expires}}}"#);
            let request = parse_pull(body.as_bytes()).unwrap();
            prop_assert!(request.batch >= 1);
            prop_assert!(request.expires_ns <= DELAY_NS_MAX);
        }
    }
}
