//! Feeds arbitrary bytes to every body the stream API parses, and runs the broker's own checks on
//! whatever parses. Nothing may panic; what parses must come back the same through JSON; a stream
//! or consumer config that passes its checks has durations that convert without wrapping.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sluice::api::{
    ConsumerConfig, ConsumerName, MessageLocation, StreamConfig, StreamName, MAX_AGE_SECS_MAX,
};

/// Parses `data` as `T`; what parses must serialize and parse back to itself.
fn parse<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(data: &[u8]) -> Option<T> {
    let value: T = serde_json::from_slice(data).ok()?;
    let again: T = serde_json::from_slice(&serde_json::to_vec(&value).unwrap()).unwrap();
    assert_eq!(again, value, "JSON round trip changed the value");
    Some(value)
}

fuzz_target!(|data: &[u8]| {
    if let Some(config) = parse::<StreamConfig>(data) {
        let existing = [StreamConfig {
            name: "orders".into(),
            subjects: vec!["orders.>".into()],
            partitions: 1,
            max_age_secs: None,
            max_bytes: None, created_ns: 0, jetstream: None }];
        if config.check().is_ok() {
            let _ = config.check_against(&existing);
            let age = config.retention_age().expect("a checked age converts");
            assert!(age.is_none_or(|a| a.as_secs() <= MAX_AGE_SECS_MAX));
            assert!(age.is_none_or(|a| u64::try_from(a.as_nanos()).is_ok()));
        }
    }
    if let Some(config) = parse::<ConsumerConfig>(data) {
        if config.check().is_ok() {
            let wait = config.ack_wait().expect("a checked ack wait converts");
            assert!(u64::try_from(wait.as_nanos()).is_ok());
            let now = std::time::Instant::now();
            assert!(now.checked_add(wait).is_some());
        }
    }
    let _ = parse::<StreamName>(data);
    let _ = parse::<ConsumerName>(data);
    let _ = parse::<MessageLocation>(data);
});
