"""kafka-python, unchanged, on a three-node cluster: a topic created with a replication factor of 3
becomes a replicated stream; batches of several records produced through one node (gzip-compressed
too) take consecutive offsets, each record reported where it was stored; the records read back
through another node are every one produced, in order, with their keys, values and headers.
Prints "ok" when every check holds."""

import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import InvalidReplicationFactorError


def produce(bootstrap, topic, start, count, compression):
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                             batch_size=64 * 1024, compression_type=compression)
    futures = []
    for i in range(start, start + count):
        futures.append((i, producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode(),
                                         partition=0, headers=[("n", str(i).encode())])))
    producer.flush()
    offsets = {}
    for i, future in futures:
        offsets[i] = future.get(timeout=10).offset
    producer.close()
    return offsets


def consume(bootstrap, topic, want):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got = []
    deadline = time.time() + 30
    while len(got) < want and time.time() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            got.extend(records)
    consumer.close()
    return got


def main(first, second, topic):
    admin = KafkaAdminClient(bootstrap_servers=first)
    try:
        admin.create_topics([NewTopic(topic + "-two", num_partitions=1, replication_factor=2)])
        raise AssertionError("a replication factor other than 1 or the cluster's size was taken")
    except InvalidReplicationFactorError:
        pass
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=3)])
    admin.close()

    offsets = produce(first, topic, 0, 200, None)
    offsets.update(produce(second, topic, 200, 100, "gzip"))
    # Every record where the answer said, one after the other, in the order sent.
    assert sorted(offsets.values()) == list(range(300)), sorted(offsets.values())[:20]
    assert all(offsets[i] < offsets[i + 1] for i in range(299))

    got = consume(second, topic, 300)
    assert len(got) == 300, len(got)
    for record in got:
        i = int(record.key[1:])
        assert record.offset == offsets[i], (record.offset, offsets[i])
        assert record.value == f"v{i}".encode()
        assert record.headers == [("n", str(i).encode())], record.headers
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
