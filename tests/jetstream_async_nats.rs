//! The JetStream API driven by async-nats's `jetstream` module, unchanged: streams, publish acks,
//! message ids and expectations, and reading messages back, across a restart of the broker.

mod common;

use async_nats::jetstream::{self, message::PublishMessage as Publish, stream};
use common::{Broker, DataDir};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

async fn context(broker: &Broker) -> jetstream::Context {
    let client = async_nats::connect(broker.nats_addr.as_str())
        .await
        .expect("connect");
    jetstream::new(client)
}

/// Publishes and returns (seq, duplicate).
async fn publish(js: &jetstream::Context, subject: &str, message: Publish) -> (u64, bool) {
    let ack = js
        .send_publish(subject.to_string(), message)
        .await
        .expect("publish")
        .await
        .expect("ack");
    (ack.sequence, ack.duplicate)
}

#[test]
fn message_ids_revisions_and_deletes_survive_a_restart() {
    let dir = DataDir::new();
    let rt = runtime();
    {
        let broker = Broker::start_in(&dir.path, &[]);
        rt.block_on(async {
            let js = context(&broker).await;
            let stream = js
                .create_stream(stream::Config {
                    name: "KVLIKE".into(),
                    subjects: vec!["kv.>".into()],
                    max_messages_per_subject: 5,
                    ..Default::default()
                })
                .await
                .expect("create stream");
            assert_eq!(stream.cached_info().config.name, "KVLIKE");
            let first = Publish::build().payload("v1".into()).message_id("m1");
            assert_eq!(publish(&js, "kv.a", first).await, (1, false));
            let again = Publish::build().payload("v1".into()).message_id("m1");
            assert_eq!(publish(&js, "kv.a", again).await, (1, true));
            let update = Publish::build()
                .payload("v2".into())
                .expected_last_subject_sequence(1);
            assert_eq!(publish(&js, "kv.a", update).await, (2, false));
            let stale = Publish::build()
                .payload("v3".into())
                .expected_last_subject_sequence(1);
            let refused = js.send_publish("kv.a", stale).await.expect("publish").await;
            assert!(refused.is_err(), "a stale update was stored: {refused:?}");
            let create = Publish::build()
                .payload("b1".into())
                .expected_last_subject_sequence(0);
            assert_eq!(publish(&js, "kv.b", create).await, (3, false));
            // Seven revisions of kv.c (sequences 4 to 10) keep the newest five; one of those is
            // then deleted.
            for i in 0..7 {
                let put = Publish::build().payload(format!("c{i}").into());
                assert_eq!(publish(&js, "kv.c", put).await.0, 4 + i);
            }
            let mut stream = js.get_stream("KVLIKE").await.expect("get stream");
            assert!(stream.delete_message(8).await.expect("delete 8"));
            let info = stream.info().await.expect("info");
            assert_eq!(info.state.messages, 3 + 4);
        });
    }
    // The ids within the duplicate window and the last message of each subject are read back from
    // the log at start.
    let broker = Broker::start_in(&dir.path, &[]);
    rt.block_on(async {
        let js = context(&broker).await;
        let again = Publish::build().payload("v1".into()).message_id("m1");
        assert_eq!(publish(&js, "kv.a", again).await, (1, true));
        let stream = js.get_stream("KVLIKE").await.expect("get stream");
        let last = stream
            .get_last_raw_message_by_subject("kv.a")
            .await
            .expect("last message on kv.a");
        assert_eq!((last.sequence, &last.payload[..]), (2, &b"v2"[..]));
        let by_seq = stream.get_raw_message(3).await.expect("message 3");
        assert_eq!(by_seq.subject.as_str(), "kv.b");
        // The evicted revisions and the deleted message stay gone.
        for gone in [4, 5, 8] {
            assert!(
                stream.get_raw_message(gone).await.is_err(),
                "{gone} is back"
            );
        }
        let c = stream
            .get_last_raw_message_by_subject("kv.c")
            .await
            .expect("last of kv.c");
        assert_eq!((c.sequence, &c.payload[..]), (10, &b"c6"[..]));
        let update = Publish::build()
            .payload("v3".into())
            .expected_last_subject_sequence(2);
        assert_eq!(publish(&js, "kv.a", update).await, (11, false));
        let info = js
            .get_stream("KVLIKE")
            .await
            .expect("stream")
            .info()
            .await
            .expect("info")
            .clone();
        // kv.a: 1, 2 and 11; kv.b: 3; kv.c: 6, 7, 9, 10.
        assert_eq!(info.state.messages, 8);
        assert_eq!(
            (info.state.first_sequence, info.state.last_sequence),
            (1, 11)
        );
    });
}
