"""Drives Sluice's Kafka port with kafka-python, unchanged: topics created, listed and deleted,
keyed records produced with each ack level, read back from the beginning, offsets looked up by
time, a message published on the NATS port read as a Kafka record, and Kafka records read by a
JetStream consumer. Prints "ok" when every check holds."""

import asyncio
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError


def consume_all(bootstrap, topic, partitions, want):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=10000)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    got = []
    deadline = time.time() + 20
    while len(got) < want and time.time() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            got.extend(records)
    consumer.close()
    return got


def main(bootstrap, nats_url):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic("orders.eu", num_partitions=3, replication_factor=1)])
    assert "orders.eu" in admin.list_topics(), admin.list_topics()
    try:
        admin.create_topics([NewTopic("orders.eu", num_partitions=3, replication_factor=1)])
        raise AssertionError("creating an existing topic succeeded")
    except TopicAlreadyExistsError:
        pass

    before = int(time.time() * 1000)
    sent = {}
    for acks in (0, 1, "all"):
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks=acks, linger_ms=2)
        futures = []
        for i in range(30):
            key = f"{acks}-{i}".encode()
            value = f"value {acks} {i}".encode()
            futures.append(producer.send("orders.eu", key=key, value=value, partition=i % 3,
                                         headers=[("h", b"x")]))
            sent[key] = value
        producer.flush()
        for f in futures:
            meta = f.get(timeout=10)
            if acks != 0:
                assert meta.offset >= 0, meta
        producer.close()

    got = consume_all(bootstrap, "orders.eu", 3, len(sent))
    assert len(got) == len(sent), (len(got), len(sent))
    assert {r.key: r.value for r in got} == sent
    assert all(r.headers == [("h", b"x")] for r in got), got[0].headers
    for p in range(3):
        offsets = [r.offset for r in got if r.partition == p]
        assert offsets == list(range(30)), (p, offsets)

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    tps = [TopicPartition("orders.eu", p) for p in range(3)]
    assert consumer.beginning_offsets(tps) == {tp: 0 for tp in tps}
    assert consumer.end_offsets(tps) == {tp: 30 for tp in tps}
    by_time = consumer.offsets_for_times({tp: before for tp in tps})
    assert all(by_time[tp].offset == 0 for tp in tps), by_time
    future = consumer.offsets_for_times({tp: int(time.time() * 1000) + 60000 for tp in tps})
    assert all(future[tp] is None for tp in tps), future
    consumer.close()

    # A message published on the NATS port to the topic's subject is a Kafka record.
    admin.create_topics([NewTopic("interop", num_partitions=1, replication_factor=1)])

    async def publish():
        import nats
        nc = await nats.connect(nats_url)
        await nc.publish("interop", b"from nats", headers={"Trace": "t1"})
        await nc.flush()
        await nc.close()

    if nats_url:
        asyncio.run(publish())
        got = consume_all(bootstrap, "interop", 1, 1)
        assert [r.value for r in got] == [b"from nats"], got
        assert ("Trace", b"t1") in got[0].headers, got[0].headers

    # Kafka records, in a compressed batch, read by a JetStream consumer: one message per
    # record, the value as payload, the key and headers as NATS headers.
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", compression_type="gzip",
                             linger_ms=20)
    for i in range(5):
        producer.send("clicks.eu", key=b"user-%d" % i, value=b"click %d" % i,
                      headers=[("trace", b"t%d" % i)])
    producer.flush()
    producer.close()

    async def read_with_jetstream():
        import nats
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        sub = await js.pull_subscribe("clicks.eu", durable="reader", stream="clicks~eu")
        msgs = await sub.fetch(5, timeout=5)
        seen = []
        for m in msgs:
            seen.append((m.subject, m.data, dict(m.headers or {}), m.metadata.sequence.stream))
            await m.ack()
        await nc.close()
        return seen

    if nats_url:
        seen = asyncio.run(read_with_jetstream())
        assert seen == [("clicks.eu", b"click %d" % i,
                         {"Kafka-Key": "user-%d" % i, "trace": "t%d" % i}, i + 1)
                        for i in range(5)], seen

    admin.delete_topics(["orders.eu"])
    deadline = time.time() + 10
    while "orders.eu" in admin.list_topics() and time.time() < deadline:
        time.sleep(0.1)
    assert "orders.eu" not in admin.list_topics()
    admin.close()
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "")
