//! The JetStream API as NATS clients speak it: its subjects, the JSON of its requests and
//! answers, the ack and pull bodies, header blocks and times. Pure codecs, like the rest of this
//! crate; the broker maps them onto its streams and consumers.
//!
//! - [`subject`]: `$JS.API.*` request subjects and `$JS.ACK.*` reply subjects.
//! - [`json`]: request and response bodies, error codes, defaults.
//! - [`ack`]: ack bodies (`+ACK`, `-NAK`, `+WPI`, `+TERM`, `+NXT`) and pull requests.
//! - [`headers`]: NATS header blocks and status messages.
//! - [`time`]: RFC 3339 times with nanoseconds.
//! - [`seq`]: how a partition's offsets read as stream sequences.

pub mod ack;
pub mod headers;
pub mod json;
pub mod seq;
pub mod subject;
pub mod time;

/// Runs every JetStream decoder over `data` and checks what must hold of what they accept: ack
/// subjects and header blocks written back read the same, pulls never ask for nothing, and
/// configs with their defaults filled in are a fixed point. Panics when something does not hold.
/// The fuzz target and the corpus replay both call it.
#[doc(hidden)]
pub fn check_decoders(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = subject::parse_api_subject(&text);
    if let Some(ack) = subject::parse_ack_reply(&text) {
        assert_eq!(subject::parse_ack_reply(&ack.subject()), Some(ack));
    }
    if let ack::AckBody::Next { request } = ack::parse_ack(data) {
        let _ = ack::parse_pull(request);
    }
    if let Ok(pull) = ack::parse_pull(data) {
        assert!(pull.batch >= 1);
        assert!(pull.expires_ns <= ack::DELAY_NS_MAX);
        assert!(pull.idle_heartbeat_ns == 0 || pull.idle_heartbeat_ns * 2 <= pull.expires_ns);
    }
    if let Ok(block) = headers::Headers::parse(data) {
        let mut builder = headers::HeaderBuilder::default();
        for (k, v) in block.iter() {
            builder.add(k, v);
        }
        let written = match block.status() {
            Some((code, description)) => builder.build_status(code, description),
            None => builder.build(),
        };
        let again = headers::Headers::parse(&written).expect("a written block reads");
        assert!(again.iter().eq(block.iter()));
        assert_eq!(again.status(), block.status());
    }
    if let Ok(config) = json::parse_request::<json::StreamConfig>(data) {
        let effective = config.effective();
        let written = serde_json::to_vec(&effective).expect("a config serializes");
        let again: json::StreamConfig = json::parse_request(&written).expect("a config reads");
        assert_eq!(again.effective(), effective);
    }
    if let Ok(request) = json::parse_request::<json::ConsumerCreateRequest>(data) {
        let effective = request.config.effective();
        let written = serde_json::to_vec(&effective).expect("a config serializes");
        let again: json::ConsumerConfig = json::parse_request(&written).expect("a config reads");
        assert_eq!(again.effective(), effective);
    }
}
