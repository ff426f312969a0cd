//! Replays the `api_json` fuzzer's corpus (`fuzz/corpus/api_json/`) through the stream API's body
//! parsing and checks, as the fuzz target does, so every input it found interesting stays covered
//! by the normal test run.

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sluice::api::{
    ConsumerConfig, ConsumerName, MessageLocation, StreamConfig, StreamName, ACK_WAIT_MS_MAX,
    MAX_AGE_SECS_MAX,
};

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
        .collect();
    inputs.sort();
    inputs
}

/// Parses `data` as `T`; what parses must serialize and parse back to itself.
fn parse<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(data: &[u8]) -> Option<T> {
    let value: T = serde_json::from_slice(data).ok()?;
    let again: T = serde_json::from_slice(&serde_json::to_vec(&value).unwrap()).unwrap();
    assert_eq!(again, value, "JSON round trip changed the value");
    Some(value)
}

#[test]
fn the_api_json_corpus_never_panics_and_checked_configs_convert_without_wrapping() {
    let inputs = corpus("api_json");
    assert!(inputs.len() >= 10, "corpus has {} inputs", inputs.len());
    let (mut streams_ok, mut streams_refused) = (0, 0);
    let (mut consumers_ok, mut consumers_refused) = (0, 0);
    for data in &inputs {
        if let Some(config) = parse::<StreamConfig>(data) {
            match config.check() {
                Ok(()) => {
                    let age = config.retention_age().expect("a checked age converts");
                    assert!(age.is_none_or(|a| a.as_secs() <= MAX_AGE_SECS_MAX));
                    assert!(age.is_none_or(|a| u64::try_from(a.as_nanos()).is_ok()));
                    streams_ok += 1;
                }
                Err(_) => streams_refused += 1,
            }
        }
        if let Some(config) = parse::<ConsumerConfig>(data) {
            match config.check() {
                Ok(()) => {
                    let wait = config.ack_wait().expect("a checked ack wait converts");
                    assert!(wait.as_millis() <= u128::from(ACK_WAIT_MS_MAX));
                    assert!(std::time::Instant::now().checked_add(wait).is_some());
                    consumers_ok += 1;
                }
                Err(_) => consumers_refused += 1,
            }
        }
        let _ = parse::<StreamName>(data);
        let _ = parse::<ConsumerName>(data);
        let _ = parse::<MessageLocation>(data);
    }
    assert!(
        streams_ok > 0 && streams_refused > 0 && consumers_ok > 0 && consumers_refused > 0,
        "streams {streams_ok} ok, {streams_refused} refused; \
         consumers {consumers_ok} ok, {consumers_refused} refused"
    );
}
