"""Kafka consumer groups on Sluice, driven by kafka-python unchanged.

`before`: a group of one commits offsets and a new consumer of the group resumes there; a group
of two splits the partitions between its members, each record read once; a client outside any
group commits too; admin calls list and describe groups and their offsets.
`after` (the broker restarted in between): the committed offsets are still there and consumers
resume from them.
Prints "ok" when every check holds."""

import sys
import threading
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.structs import OffsetAndMetadata

TOPIC = "jobs"
PARTITIONS = 4
PER_PARTITION = 50
RESUME_AT = 30


def consumer(bootstrap, group, **extra):
    return KafkaConsumer(TOPIC, bootstrap_servers=bootstrap, group_id=group,
                         auto_offset_reset="earliest", enable_auto_commit=False, **extra)


def drain(c, want, seconds=30):
    got = []
    deadline = time.time() + seconds
    while len(got) < want and time.time() < deadline:
        for records in c.poll(timeout_ms=500).values():
            got.extend(records)
    return got


def resume_from_commits(bootstrap):
    """A new member of group "solo" starts at its committed offsets, and reads nothing twice."""
    c = consumer(bootstrap, "solo")
    want = PARTITIONS * (PER_PARTITION - RESUME_AT)
    got = drain(c, want)
    # Anything more would be a re-read below the committed offsets.
    got.extend(drain(c, 1, seconds=2))
    c.close(autocommit=False)
    assert len(got) == want, (len(got), want)
    firsts = {}
    for r in got:
        firsts.setdefault(r.partition, r.offset)
    assert firsts == {p: RESUME_AT for p in range(PARTITIONS)}, firsts


def before(bootstrap):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=1)])
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for p in range(PARTITIONS):
        for i in range(PER_PARTITION):
            producer.send(TOPIC, key=b"k%d" % i, value=b"p%d-%d" % (p, i), partition=p)
    producer.flush()
    producer.close()

    # A group of one reads everything, commits RESUME_AT for each partition, and leaves.
    c = consumer(bootstrap, "solo")
    got = drain(c, PARTITIONS * PER_PARTITION)
    assert len(got) == PARTITIONS * PER_PARTITION, len(got)
    assert c.assignment() == {TopicPartition(TOPIC, p) for p in range(PARTITIONS)}
    c.commit({TopicPartition(TOPIC, p): OffsetAndMetadata(RESUME_AT, "m", -1)
              for p in range(PARTITIONS)})
    committed = {p: c.committed(TopicPartition(TOPIC, p)) for p in range(PARTITIONS)}
    assert committed == {p: RESUME_AT for p in range(PARTITIONS)}, committed
    c.close(autocommit=False)
    resume_from_commits(bootstrap)

    # A group of two: both members join one generation and split the partitions.
    members = [consumer(bootstrap, "pair") for _ in range(2)]
    results = [[], []]
    assignments = [set(), set()]

    def run(i):
        deadline = time.time() + 40
        while time.time() < deadline:
            for records in members[i].poll(timeout_ms=300).values():
                results[i].extend(records)
            assignments[i] = set(members[i].assignment())
            if (len(results[0]) + len(results[1]) >= PARTITIONS * PER_PARTITION
                    and assignments[0] and assignments[1]):
                return

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a, b = assignments
    assert a and b and not (a & b), (a, b)
    assert len(a | b) == PARTITIONS, (a, b)
    seen = [(r.partition, r.offset) for r in results[0] + results[1]]
    assert len(seen) == len(set(seen)) == PARTITIONS * PER_PARTITION, len(seen)
    for i in range(2):
        assert {r.partition for r in results[i]} <= {tp.partition for tp in assignments[i]}
    described = admin.describe_groups(["pair"])
    text = repr(described)
    assert "Stable" in text and "range" in text, text
    for m in members:
        m.close(autocommit=False)

    # A client that assigns partitions itself commits outside any generation.
    manual = KafkaConsumer(bootstrap_servers=bootstrap, group_id="manual",
                           enable_auto_commit=False)
    tp = TopicPartition(TOPIC, 1)
    manual.assign([tp])
    manual.commit({tp: OffsetAndMetadata(7, "", -1)})
    assert manual.committed(tp) == 7
    manual.close(autocommit=False)

    groups = {g[0] if isinstance(g, tuple) else g["group_id"] for g in admin.list_groups()}
    assert {"solo", "pair", "manual"} <= groups, groups
    offsets = admin.list_group_offsets("solo")["solo"]
    assert {tp.partition: om.offset for tp, om in offsets.items()} == \
        {p: RESUME_AT for p in range(PARTITIONS)}, offsets
    admin.close()


def after(bootstrap):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    offsets = admin.list_group_offsets("manual")["manual"]
    assert {tp.partition: om.offset for tp, om in offsets.items()} == {1: 7}, offsets
    admin.close()
    resume_from_commits(bootstrap)


if __name__ == "__main__":
    {"before": before, "after": after}[sys.argv[2]](sys.argv[1])
    print("ok")
