//! Existing NATS clients against Sluice's NATS port: the `async-nats` crate, unchanged, for pub/sub,
//! wildcards, queue groups, request/reply, headers, no responders, auto-unsubscribe, large payloads,
//! and messages crossing between NATS and native clients both ways.

mod common;

use std::time::Duration;

use common::{receive, until_subscribed, Broker};
use futures::StreamExt;

const WAIT: Duration = Duration::from_secs(10);

async fn next(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("a message in time")
        .expect("the subscription is open")
}

async fn nats(broker: &Broker) -> async_nats::Client {
    async_nats::connect(format!("nats://{}", broker.nats_addr))
        .await
        .expect("connect with async-nats")
}

#[tokio::test]
async fn pub_sub_wildcards_and_headers() {
    let broker = Broker::start(&[]);
    let client = nats(&broker).await;
    let mut star = client.subscribe("user.*.audio").await.unwrap();
    let mut full = client.subscribe("user.>").await.unwrap();
    client.flush().await.unwrap();
    let other = nats(&broker).await;
    other
        .publish("user.42.audio", "chunk".into())
        .await
        .unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Trace", "7");
    other
        .publish_with_headers("user.42.text", headers, "text".into())
        .await
        .unwrap();
    other.flush().await.unwrap();
    let m = next(&mut star).await;
    assert_eq!(m.subject.as_str(), "user.42.audio");
    assert_eq!(&m.payload[..], b"chunk");
    let a = next(&mut full).await;
    let b = next(&mut full).await;
    assert_eq!(a.subject.as_str(), "user.42.audio");
    assert_eq!(b.subject.as_str(), "user.42.text");
    assert_eq!(b.headers.unwrap().get("Trace").unwrap().as_str(), "7");
}

#[tokio::test]
async fn queue_groups_share_and_requests_get_replies() {
    let broker = Broker::start(&[]);
    let a = nats(&broker).await;
    let b = nats(&broker).await;
    let mut qa = a.queue_subscribe("work", "workers".into()).await.unwrap();
    let mut qb = b.queue_subscribe("work", "workers".into()).await.unwrap();
    a.flush().await.unwrap();
    b.flush().await.unwrap();
    let publisher = nats(&broker).await;
    // Queue members only get some probes: wait for the group through a plain subscriber on each
    // member's connection.
    let mut seen_a = a.subscribe("work").await.unwrap();
    let mut seen_b = b.subscribe("work").await.unwrap();
    until_subscribed(&publisher, "work", &mut [&mut seen_a, &mut seen_b]).await;
    drop((seen_a, seen_b));
    for sub in [&mut qa, &mut qb] {
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
        }
    }
    for i in 0..200 {
        publisher
            .publish("work", format!("{i}").into())
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    let mut total = 0;
    for sub in [&mut qa, &mut qb] {
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(500), sub.next()).await {
            total += 1;
        }
    }
    assert_eq!(total, 200);

    let replier = nats(&broker).await;
    let mut requests = replier.subscribe("svc.echo").await.unwrap();
    replier.flush().await.unwrap();
    until_subscribed(&publisher, "svc.echo", &mut [&mut requests]).await;
    tokio::spawn(async move {
        while let Some(req) = requests.next().await {
            if let Some(reply) = req.reply {
                replier.publish(reply, req.payload).await.unwrap();
            }
        }
    });
    let requester = nats(&broker).await;
    let answer = tokio::time::timeout(WAIT, requester.request("svc.echo", "ping".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&answer.payload[..], b"ping");
    let nobody = requester.request("nobody.home", "x".into()).await;
    assert!(
        matches!(&nobody, Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders),
        "{nobody:?}"
    );
}

#[tokio::test]
async fn auto_unsubscribe_and_large_payloads() {
    let broker = Broker::start(&["--max-payload", "1048576"]);
    let client = nats(&broker).await;
    let mut sub = client.subscribe("big").await.unwrap();
    sub.unsubscribe_after(2).await.unwrap();
    // Probes on another subject of the same connection: interest travels in order, so once the
    // probe subscription is in force, so is the first (which must not count the probes).
    let mut probe = client.subscribe("probe.big").await.unwrap();
    client.flush().await.unwrap();
    let publisher = nats(&broker).await;
    until_subscribed(&publisher, "probe.big", &mut [&mut probe]).await;
    let payload = vec![7u8; 1_000_000];
    for _ in 0..3 {
        publisher
            .publish("big", payload.clone().into())
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    assert_eq!(next(&mut sub).await.payload.len(), 1_000_000);
    assert_eq!(next(&mut sub).await.payload.len(), 1_000_000);
    let third = tokio::time::timeout(Duration::from_millis(500), sub.next()).await;
    assert!(matches!(third, Ok(None) | Err(_)), "no third message");
}

#[tokio::test]
async fn nats_and_native_clients_exchange_messages_both_ways() {
    let broker = Broker::start(&[]);
    let native = broker.client();
    let native_sub = native.subscribe("bridge.to_native").unwrap();
    native.flush().unwrap();
    let client = nats(&broker).await;
    let mut nats_sub = client.subscribe("bridge.to_nats").await.unwrap();
    client.flush().await.unwrap();
    client
        .publish("bridge.to_native", "from nats".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let got = tokio::task::spawn_blocking(move || receive(&native_sub, 1))
        .await
        .unwrap();
    assert_eq!(got[0].payload(), b"from nats");
    native.publish("bridge.to_nats", "from native").unwrap();
    native.flush().unwrap();
    assert_eq!(&next(&mut nats_sub).await.payload[..], b"from native");
}
