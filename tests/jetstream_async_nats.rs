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

#[test]
fn a_pull_consumer_fetches_and_acks() {
    use async_nats::jetstream::consumer::{pull, PullConsumer};
    use futures::StreamExt;
    let broker = Broker::start(&[]);
    runtime().block_on(async {
        let js = context(&broker).await;
        let stream = js
            .create_stream(stream::Config {
                name: "WORK".into(),
                subjects: vec!["work.>".into()],
                ..Default::default()
            })
            .await
            .expect("create stream");
        for i in 0..10 {
            let job = Publish::build().payload(format!("job {i}").into());
            assert_eq!(publish(&js, "work.train", job).await.0, i + 1);
        }
        let consumer: PullConsumer = stream
            .create_consumer(pull::Config {
                durable_name: Some("trainers".into()),
                filter_subject: "work.train".into(),
                ..Default::default()
            })
            .await
            .expect("create consumer");
        let mut got = Vec::new();
        while got.len() < 10 {
            let mut batch = consumer
                .fetch()
                .max_messages(4)
                .messages()
                .await
                .expect("fetch");
            while let Some(message) = batch.next().await {
                let message = message.expect("message");
                let info = message.info().expect("ack subject");
                assert_eq!(info.delivered, 1);
                got.push((info.stream_sequence, message.payload.clone()));
                message.ack().await.expect("ack");
            }
        }
        let want: Vec<_> = (0..10)
            .map(|i| (i + 1, bytes::Bytes::from(format!("job {i}"))))
            .collect();
        assert_eq!(got, want);
        let mut consumer = consumer;
        let info = consumer.info().await.expect("consumer info");
        assert_eq!(info.num_pending, 0);
        assert_eq!(info.delivered.stream_sequence, 10);
    });
}

#[test]
fn a_key_value_bucket_puts_gets_updates_and_deletes() {
    use async_nats::jetstream::kv;
    let broker = Broker::start(&[]);
    runtime().block_on(async {
        let js = context(&broker).await;
        let bucket = js
            .create_key_value(kv::Config {
                bucket: "models".into(),
                history: 3,
                ..Default::default()
            })
            .await
            .expect("create bucket");
        let first = bucket.put("llama", "v1".into()).await.expect("put");
        assert_eq!(
            bucket.get("llama").await.expect("get").as_deref(),
            Some(&b"v1"[..])
        );
        let second = bucket
            .update("llama", "v2".into(), first)
            .await
            .expect("update with the current revision");
        assert!(second > first);
        assert!(
            bucket.update("llama", "v3".into(), first).await.is_err(),
            "an update with a stale revision was stored"
        );
        assert!(bucket.create("llama", "again".into()).await.is_err());
        bucket.create("mistral", "m1".into()).await.expect("create");
        bucket.delete("llama").await.expect("delete");
        assert_eq!(bucket.get("llama").await.expect("get"), None);
        // A deleted key may be created again.
        bucket
            .create("llama", "v4".into())
            .await
            .expect("create after delete");
        assert_eq!(
            bucket.get("llama").await.expect("get").as_deref(),
            Some(&b"v4"[..])
        );
        let entry = bucket
            .entry("mistral")
            .await
            .expect("entry")
            .expect("mistral");
        assert_eq!(entry.operation, kv::Operation::Put);
        bucket.purge("mistral").await.expect("purge");
        assert_eq!(bucket.get("mistral").await.expect("get"), None);
    });
}
