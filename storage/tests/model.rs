//! Random appends (of one-offset records and of spans), reads, reopens, truncations and retention
//! against a simple in-memory model.
//! Each run prints its seed; `SLUICE_SEED=<seed>` replays one.

mod common;

use std::collections::VecDeque;

use bytes::Bytes;
use common::{run, Scratch};
use sluice_storage::{FsyncPolicy, LogConfig, PartitionLog};

const SEEDS: usize = 12;
const OPS_PER_SEED: usize = 150;

fn random_body(rng: &mut fastrand::Rng) -> Bytes {
    let len = match rng.u8(..10) {
        0 => rng.usize(2000..9000),
        1 => 0,
        _ => rng.usize(1..300),
    };
    Bytes::from((0..len).map(|_| rng.u8(..)).collect::<Vec<u8>>())
}

fn check_seed(seed: u64) {
    println!("storage model seed {seed} (replay with SLUICE_SEED={seed})");
    let dir = Scratch::new("model");
    let path = dir.path.clone();
    run(move || async move {
        let mut rng = fastrand::Rng::with_seed(seed);
        let config = LogConfig {
            fsync: [FsyncPolicy::Always, FsyncPolicy::Never][rng.usize(..2)],
            segment_bytes_max: rng.u64(4096..32768),
            index_interval_bytes: rng.u64(256..4096),
            cache_bytes_max: rng.usize(0..16384),
            record_bytes_max: 16 * 1024,
            ..LogConfig::default()
        };
        // The model: for each offset from `start` on, the record that takes it (its first offset,
        // its count and its body).
        let mut start = 0u64;
        let mut model: VecDeque<(u64, u32, Bytes)> = VecDeque::new();
        let mut log = PartitionLog::open(&path, config.clone()).await.unwrap();
        for op in 0..OPS_PER_SEED {
            match rng.u8(..100) {
                0..=49 => {
                    let n = rng.usize(1..8);
                    let batch: Vec<Bytes> = (0..n).map(|_| random_body(&mut rng)).collect();
                    let spans = rng.bool();
                    let counts: Vec<u32> = (0..n)
                        .map(|_| if spans { rng.u32(1..6) } else { 1 })
                        .collect();
                    let first = log
                        .append_spans(&batch, |i| counts[i])
                        .unwrap()
                        .durable()
                        .await
                        .unwrap();
                    assert_eq!(first, start + model.len() as u64, "op {op}: append offset");
                    let mut offset = first;
                    for (body, &count) in batch.into_iter().zip(&counts) {
                        for _ in 0..count {
                            model.push_back((offset, count, body.clone()));
                        }
                        offset += u64::from(count);
                    }
                }
                50..=79 => {
                    let end = start + model.len() as u64;
                    let from = start + rng.u64(..=model.len() as u64);
                    let max = rng.usize(1..20000);
                    let got = log.read(from, max).await.unwrap();
                    if from == end {
                        assert!(got.is_empty());
                        continue;
                    }
                    assert!(
                        !got.is_empty(),
                        "op {op}: read from {from} returned nothing"
                    );
                    let mut bytes = 0;
                    let mut expected = model[(from - start) as usize].0;
                    for r in &got {
                        assert_eq!(r.offset, expected, "op {op}: offsets consecutive");
                        let at = r.offset.max(from) - start;
                        let (offset, count, body) = &model[at as usize];
                        assert_eq!(
                            (r.offset, r.count, &r.body),
                            (*offset, *count, body),
                            "op {op}: record"
                        );
                        expected = r.end();
                        bytes += r.body.len();
                    }
                    assert!(
                        got.len() == 1 || bytes <= max,
                        "op {op}: {bytes} bytes for a budget of {max}"
                    );
                }
                80..=89 => {
                    log.close().await.unwrap();
                    log = PartitionLog::open(&path, config.clone()).await.unwrap();
                }
                90..=95 => {
                    let cut = start + rng.u64(..=model.len() as u64);
                    log.truncate_before(cut).await.unwrap();
                    while start < cut {
                        model.pop_front();
                        start += 1;
                    }
                }
                _ => {
                    // Retention keeps whole segments and never the active one, so the log may
                    // exceed its limit by about one segment.
                    let keep = rng.u64(8192..65536);
                    let config = LogConfig {
                        retention_bytes_max: Some(keep),
                        ..config.clone()
                    };
                    log.close().await.unwrap();
                    log = PartitionLog::open(&path, config.clone()).await.unwrap();
                    log.apply_retention(sluice_storage::now_ns()).await.unwrap();
                    let first = log.first_offset();
                    assert!(first >= start);
                    while start < first {
                        model.pop_front();
                        start += 1;
                    }
                    assert!(log.size_bytes() <= keep + config.segment_bytes_max + 16 * 1024);
                }
            }
            assert_eq!(log.first_offset(), start, "op {op}: first offset");
            assert_eq!(
                log.next_offset(),
                start + model.len() as u64,
                "op {op}: next offset"
            );
        }
        log.close().await.unwrap();
    });
}

#[test]
fn the_log_agrees_with_a_simple_model() {
    match std::env::var("SLUICE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(seed) => check_seed(seed),
        None => {
            for _ in 0..SEEDS {
                check_seed(fastrand::u64(..));
            }
        }
    }
}
