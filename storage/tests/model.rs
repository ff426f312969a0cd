//! Random appends (of one-offset records and of spans), reads, reopens, crashes (a copy of the files
//! taken while the log is open), truncations of the head and of the tail (with appends in flight,
//! inside spans, past the end, across segments), retention and reads (anywhere, and on in order)
//! against a simple in-memory model.
//! Each run prints its seed; `SLUICE_SEED=<seed>` replays one.

mod common;

use std::collections::VecDeque;

use bytes::Bytes;
use common::{copy_dir, run, Scratch};
use sluice_storage::{AppendTicket, FsyncPolicy, LogConfig, PartitionLog, StorageError};

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

/// The model: for each offset from the log's start on, the record that takes it (its first offset,
/// its count and its body).
type Model = VecDeque<(u64, u32, Bytes)>;

/// Orders an append of up to seven random records (spans half of the time), adds it to the model,
/// and returns its ticket with the offset its records end at.
fn order_append(
    log: &PartitionLog,
    model: &mut Model,
    start: u64,
    rng: &mut fastrand::Rng,
) -> (AppendTicket, u64) {
    let n = rng.usize(1..8);
    let batch: Vec<Bytes> = (0..n).map(|_| random_body(rng)).collect();
    let spans = rng.bool();
    let counts: Vec<u32> = (0..n)
        .map(|_| if spans { rng.u32(1..6) } else { 1 })
        .collect();
    let ticket = log.append_spans(&batch, |i| counts[i]).unwrap();
    let mut offset = ticket.first_offset();
    assert_eq!(offset, start + model.len() as u64, "append offset");
    for (body, &count) in batch.into_iter().zip(&counts) {
        for _ in 0..count {
            model.push_back((offset, count, body.clone()));
        }
        offset += u64::from(count);
    }
    (ticket, offset)
}

/// Cuts the log's tail at a random offset (sometimes inside a span, past the end, or with an
/// append still in flight) and checks the outcome against the model, which is cut to match.
async fn truncate_tail(
    log: &PartitionLog,
    model: &mut Model,
    start: u64,
    rng: &mut fastrand::Rng,
    op: usize,
) {
    let in_flight = (rng.u8(..3) == 0).then(|| order_append(log, model, start, rng));
    let end = start + model.len() as u64;
    let mut cut = if rng.u8(..10) == 0 {
        end + rng.u64(1..3)
    } else {
        start + rng.u64(..=model.len() as u64)
    };
    // Offsets inside spans are common: move half of those cuts to the span's start (or the log's,
    // which `truncate_before` may have put inside a span), so that most truncations go through.
    if cut < end && rng.bool() {
        cut = model[(cut - start) as usize].0.max(start);
    }
    let taker = (cut < end).then(|| model[(cut - start) as usize].clone());
    let outcome = log.truncate_from(cut).await;
    let applied = match taker {
        _ if cut > end => {
            let refused = matches!(outcome, Err(StorageError::TruncationOutOfRange { offset, .. }) if offset == cut);
            assert!(refused, "op {op}: cut at {cut} past {end}: {outcome:?}");
            false
        }
        Some((first, count, _)) if first != cut => {
            let refused = matches!(outcome, Err(StorageError::NotRecordBoundary { record_offset, record_end, .. })
                if record_offset == first && record_end == first + u64::from(count));
            assert!(refused, "op {op}: cut at {cut} inside a span: {outcome:?}");
            false
        }
        _ => {
            outcome.unwrap_or_else(|e| panic!("op {op}: cut at {cut}: {e}"));
            model.truncate((cut - start) as usize);
            cut < end
        }
    };
    assert_eq!(
        log.next_assigned_offset(),
        start + model.len() as u64,
        "op {op}"
    );
    if let Some((ticket, ticket_end)) = in_flight {
        let durable = ticket.durable().await;
        if applied && ticket_end > cut {
            let truncated =
                matches!(durable, Err(StorageError::Truncated { offset }) if offset == cut);
            assert!(truncated, "op {op}: a cut append's ticket: {durable:?}");
        } else {
            durable.unwrap_or_else(|e| panic!("op {op}: a kept append's ticket: {e}"));
        }
    }
}

fn check_seed(seed: u64) {
    println!("storage model seed {seed} (replay with SLUICE_SEED={seed})");
    let dir = Scratch::new("model");
    let root = dir.path.clone();
    run(move || async move {
        let mut path = root.join("log");
        let mut rng = fastrand::Rng::with_seed(seed);
        let config = LogConfig {
            fsync: [FsyncPolicy::Always, FsyncPolicy::Never][rng.usize(..2)],
            segment_bytes_max: rng.u64(4096..32768),
            index_interval_bytes: rng.u64(256..4096),
            cache_bytes_max: rng.usize(0..16384),
            record_bytes_max: 16 * 1024,
            ..LogConfig::default()
        };
        let mut start = 0u64;
        let mut cursor = None;
        let mut model = Model::new();
        let mut log = PartitionLog::open(&path, config.clone()).await.unwrap();
        for op in 0..OPS_PER_SEED {
            match rng.u8(..100) {
                0..=44 => {
                    let (ticket, _) = order_append(&log, &mut model, start, &mut rng);
                    ticket.durable().await.unwrap();
                }
                45..=69 => {
                    let end = start + model.len() as u64;
                    // Half of the reads go on from where the last one stopped, as a consumer does
                    // (and find what was read ahead for them).
                    let from = match cursor.filter(|c| (start..end).contains(c) && rng.bool()) {
                        Some(c) => c,
                        None => start + rng.u64(..=model.len() as u64),
                    };
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
                    cursor = Some(expected);
                    assert!(
                        got.len() == 1 || bytes <= max,
                        "op {op}: {bytes} bytes for a budget of {max}"
                    );
                }
                70..=76 => {
                    log.close().await.unwrap();
                    log = PartitionLog::open(&path, config.clone()).await.unwrap();
                }
                77..=80 => {
                    // A crash: the files as they are while the log is open; the log goes on from
                    // the copy.
                    let crashed = root.join(format!("crash-{op}"));
                    copy_dir(&path, &crashed);
                    log.close().await.unwrap();
                    let _ = std::fs::remove_dir_all(&path);
                    path = crashed;
                    log = PartitionLog::open(&path, config.clone()).await.unwrap();
                }
                81..=89 => truncate_tail(&log, &mut model, start, &mut rng, op).await,
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
