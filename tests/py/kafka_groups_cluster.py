"""kafka-python, unchanged, consumer groups on a three-node cluster.

A topic created with a replication factor of 1 is one topic on every node. Two members of one
group, each bootstrapped through a different node, split the topic's two
partitions between them: one node coordinates the group whichever node is asked. They commit what
they took. The test kills the coordinating node: a new member through the nodes left resumes from
the commits, reading only what came after. The test starts the node again, which coordinates the
group again: a member then resumes from the commits made while that node was away.

Prints "coordinator HOST:PORT", reads a line (the servers left, comma-separated) once that node
is dead, prints "resumed", reads a line once it is back, and prints "ok"."""

import sys
import threading
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

GROUP = "workers"


def produce(bootstrap, topic, start, count):
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", retries=100,
                             retry_backoff_ms=200)
    for i in range(start, start + count):
        producer.send(topic, value=f"r{i:04d}".encode(), partition=i % 2)
    producer.flush(timeout=60)
    producer.close()


def member(bootstrap, topic):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=GROUP,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             session_timeout_ms=10000, heartbeat_interval_ms=500)
    consumer.subscribe([topic])
    return consumer


def split(consumers, want, seconds=60):
    """Each member polls in a thread of its own, as members do, until every one holds a
    partition and `want` records came in all; returns each one's values and partitions."""
    got = [[] for _ in consumers]
    held = [set() for _ in consumers]

    def run(i):
        deadline = time.time() + seconds
        while time.time() < deadline:
            for records in consumers[i].poll(timeout_ms=200).values():
                got[i].extend(r.value.decode() for r in records)
            held[i] = set(consumers[i].assignment())
            if sum(map(len, got)) >= want and all(held):
                return

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(consumers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return got, held


def resume(bootstrap, topic, start, count):
    """A new member alone: it takes both partitions and must read only records from `start`."""
    consumer = member(bootstrap, topic)
    (got,), _ = split([consumer], count)
    time.sleep(1)
    got.extend(r.value.decode() for rs in consumer.poll(timeout_ms=500).values() for r in rs)
    assert sorted(got) == [f"r{i:04d}" for i in range(start, start + count)], sorted(got)[:10]
    consumer.commit()
    consumer.close()


def main(servers, topic):
    nodes = servers.split(",")
    admin = KafkaAdminClient(bootstrap_servers=nodes)
    # One copy, as asked of Kafka, is a topic on every node of a cluster.
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    admin.close()

    produce(nodes, topic, 0, 200)
    first, second = member([nodes[0]], topic), member([nodes[1]], topic)
    got, held = split([first, second], 200)
    # One partition each, and each took its own partition's records: none went to both.
    assert len(held[0]) == 1 and len(held[1]) == 1 and held[0] != held[1], held
    assert len(got[0]) == 100 and len(got[1]) == 100, (len(got[0]), len(got[1]))
    assert sorted(got[0] + got[1]) == [f"r{i:04d}" for i in range(200)]
    for consumer in (first, second):
        consumer.commit()
    coordinator = first._coordinator.coordinator_id
    broker = first._client.cluster.broker_metadata(coordinator)
    first.close()
    second.close()
    print(f"coordinator {broker.host}:{broker.port}", flush=True)

    left = sys.stdin.readline().strip().split(",")
    produce(left, topic, 200, 100)
    resume(left, topic, 200, 100)
    print("resumed", flush=True)

    sys.stdin.readline()
    produce(left, topic, 300, 50)
    resume(nodes, topic, 300, 50)
    print("ok", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
