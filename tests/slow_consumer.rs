//! A subscriber that stops reading is cut off as a slow consumer; a fast one on the same subject
//! receives everything.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Broker;
use sluice_protocol::op::{Op, Subscribe};
use sluice_protocol::ArchivedOp;

const MESSAGES: usize = 32_000;
const BATCH: usize = 1000;
const PAYLOAD_BYTES: usize = 1024;

#[test]
fn a_slow_consumer_is_cut_off_while_a_fast_one_gets_everything() {
    let broker = Broker::start(&["--max-pending", "4194304"]);
    let mut slow = broker.raw_on_shard(0);
    slow.send(&Op::Sub(Subscribe {
        sid: 9,
        subject: "firehose",
        queue: None,
    }));
    slow.send(&Op::Ping);
    assert!(matches!(slow.read_frame().unwrap().op(), ArchivedOp::Pong));

    let fast_client = broker.client_on_shard(0);
    let fast = fast_client.subscribe("firehose").unwrap();
    fast_client.flush().unwrap();
    let progress = Arc::new(AtomicUsize::new(0));
    let reader = {
        let progress = progress.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while n < MESSAGES {
                let message = fast
                    .next_timeout(common::PATIENCE)
                    .expect("fast consumer keeps up");
                assert_eq!(message.payload().len(), PAYLOAD_BYTES);
                n += 1;
                progress.store(n, Ordering::Relaxed);
            }
            n
        })
    };

    // The publisher never gets more than two batches ahead of the fast consumer, so that one is fast
    // by construction, while the slow one falls behind by everything.
    let publisher = broker.client_on_shard(1);
    let payload = vec![b'p'; PAYLOAD_BYTES];
    for batch in 0..MESSAGES / BATCH {
        for _ in 0..BATCH {
            publisher.publish("firehose", &payload).unwrap();
        }
        publisher.flush().unwrap();
        let deadline = Instant::now() + common::PATIENCE;
        while progress.load(Ordering::Relaxed) + 2 * BATCH < (batch + 1) * BATCH {
            assert!(Instant::now() < deadline, "the fast consumer stalled");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert_eq!(reader.join().unwrap(), MESSAGES);
    assert!(broker.wait_for_log("slow consumer"));

    // The slow client now reads: it finds fewer messages than were sent, then the end of the stream.
    let mut received = 0;
    while let Some(frame) = slow.read_frame() {
        if matches!(frame.op(), ArchivedOp::Msg { .. }) {
            received += 1;
        }
    }
    assert!(
        received < MESSAGES,
        "the slow consumer was cut off ({received} of {MESSAGES})"
    );
}
