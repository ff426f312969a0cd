"""kafka-python, unchanged, on a three-node cluster, bootstrapped with all three nodes. A topic
created without a replication factor is one topic on every node: Metadata names three brokers and
the partition's leader among them. The test kills the leading node while the producer runs: the
producer finds the new leader and goes on, and every record it was told was stored is read back,
at the offset it was told, in the order sent, through the nodes left.

Prints "leader HOST:PORT" once the first records are stored, then reads a line (the servers left,
comma-separated) once that node is dead, and prints "ok" when every check holds."""

import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

FIRST = 300
TOTAL = 900


def read_all(bootstrap, topic, want):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got = []
    deadline = time.time() + 60
    while len(got) < want and time.time() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            got.extend((r.offset, r.value.decode()) for r in records)
    consumer.close()
    return got


def main(servers, topic):
    bootstrap = servers.split(",")
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=-1)])
    brokers = admin.describe_cluster()["brokers"]
    admin.close()
    assert len({b.get("node_id", b.get("broker_id")) for b in brokers}) == 3, brokers

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                             max_in_flight_requests_per_connection=1, retries=1000,
                             retry_backoff_ms=200, request_timeout_ms=10000,
                             delivery_timeout_ms=120000)
    tp = TopicPartition(topic, 0)
    acked = {}
    failed = []

    def send(start, end):
        futures = [(i, producer.send(topic, value=f"m{i:05d}".encode(), partition=0))
                   for i in range(start, end)]
        producer.flush(timeout=120)
        for i, future in futures:
            try:
                acked[i] = future.get(timeout=1).offset
            except Exception as e:  # noqa: BLE001 - any failure is reported below
                failed.append((i, repr(e)))

    send(0, FIRST)
    leader = producer._metadata.leader_for_partition(tp)
    broker = producer._metadata.broker_metadata(leader)
    assert broker is not None, leader
    print(f"leader {broker.host}:{broker.port}", flush=True)
    left = sys.stdin.readline().strip().split(",")

    # Sent after the leader died: the producer learns the new one from the nodes left.
    for start in range(FIRST, TOTAL, 100):
        send(start, start + 100)
    producer.close()
    assert not failed, failed[:5]
    assert len(acked) == TOTAL, len(acked)

    got = read_all(left, topic, TOTAL)
    at = dict(got)
    for i, offset in acked.items():
        assert at.get(offset) == f"m{i:05d}", (i, offset, at.get(offset))
    # In the order sent: a record retried after the leader died may be stored twice, never
    # before one sent earlier.
    firsts, seen = [], set()
    for _, value in got:
        if value not in seen:
            seen.add(value)
            firsts.append(value)
    assert firsts == [f"m{i:05d}" for i in range(TOTAL)], firsts[:10]
    print("ok", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
