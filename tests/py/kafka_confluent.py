"""Drives Sluice's Kafka port with confluent-kafka (librdkafka 2.1x), unchanged: a topic created
and listed, keyed records with headers from an idempotent producer, a consumer group that
commits and a second member of it that resumes there, offsets by time, the group as the admin
client lists and describes it, and the topic's settings and the cluster as it describes them.
Prints "ok" when every check holds."""

import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

TOPIC = "cf.events"
RECORDS = 300


def main(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(TOPIC, num_partitions=3,
                                                replication_factor=1)]).values():
        future.result(10)
    assert TOPIC in admin.list_topics(timeout=10).topics

    before = int(time.time() * 1000)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "acks": "all", "linger.ms": 5})
    delivered = []

    def on_delivery(err, msg):
        assert err is None, err
        delivered.append((msg.partition(), msg.offset()))

    for i in range(RECORDS):
        producer.produce(TOPIC, key=b"key-%d" % (i % 17), value=b"value-%d" % i,
                         headers=[("n", str(i).encode())], on_delivery=on_delivery)
    assert producer.flush(20) == 0
    assert len(delivered) == RECORDS
    for p in range(3):
        offsets = sorted(o for (q, o) in delivered if q == p)
        assert offsets == list(range(len(offsets))), (p, offsets[:5])

    config = {"bootstrap.servers": bootstrap, "group.id": "cf-group",
              "auto.offset.reset": "earliest", "enable.auto.commit": False}
    consumer = Consumer(config)
    consumer.subscribe([TOPIC])
    got = []
    deadline = time.time() + 30
    while len(got) < RECORDS and time.time() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        got.append(msg)
    assert len(got) == RECORDS, len(got)
    assert sorted(m.value() for m in got) == sorted(b"value-%d" % i for i in range(RECORDS))
    assert all(m.headers() == [("n", m.value()[6:])] for m in got)
    consumer.commit(asynchronous=False)
    committed = consumer.committed([TopicPartition(TOPIC, p) for p in range(3)], timeout=10)
    ends = {p: sum(1 for (q, _) in delivered if q == p) for p in range(3)}
    assert {tp.partition: tp.offset for tp in committed} == ends, committed
    times = consumer.offsets_for_times([TopicPartition(TOPIC, p, before) for p in range(3)],
                                       timeout=10)
    assert all(tp.offset == 0 for tp in times), times
    consumer.close()

    # A new member of the group resumes at the commits: nothing is read again.
    again = Consumer(config)
    again.subscribe([TOPIC])
    deadline = time.time() + 8
    extra = []
    while time.time() < deadline:
        msg = again.poll(0.5)
        if msg is not None and msg.error() is None:
            extra.append(msg)
    assert again.assignment(), "the second member got no partitions"
    assert extra == [], [(m.partition(), m.offset()) for m in extra]
    again.close()

    # The topic's settings, and the cluster, as admin clients read them.
    resource = ConfigResource(ResourceType.TOPIC, TOPIC)
    entries = admin.describe_configs([resource])[resource].result(10)
    assert entries["retention.ms"].value == "-1", entries["retention.ms"]
    assert entries["cleanup.policy"].value == "delete"
    cluster = admin.describe_cluster().result(10)
    assert cluster.cluster_id == "sluice" and len(cluster.nodes) == 1, cluster

    listed = admin.list_consumer_groups().result(10)
    assert "cf-group" in [g.group_id for g in listed.valid], listed.valid
    described = admin.describe_consumer_groups(["cf-group"])["cf-group"].result(10)
    assert described.group_id == "cf-group", described
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1])
