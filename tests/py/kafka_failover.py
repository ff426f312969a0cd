"""kafka-python, unchanged, given every node of a three-node cluster as bootstrap servers: it
produces to a replicated topic through the first node, that node dies, and it produces on (and
reads everything back) through the others. Prints "phase 1" once the first half is acknowledged,
waits for a line on stdin (the node is killed meanwhile), and prints "ok" when every check
holds."""

import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic


def main(bootstrap, topic):
    servers = bootstrap.split(",")
    admin = KafkaAdminClient(bootstrap_servers=servers)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=3)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=5,
                             retries=10, request_timeout_ms=6000, reconnect_backoff_max_ms=500,
                             metadata_max_age_ms=1000)
    for i in range(50):
        producer.send(topic, value=f"m-{i:03}".encode(), partition=0).get(timeout=10)
    print("phase 1", flush=True)
    sys.stdin.readline()
    deadline = time.time() + 60
    for i in range(50, 100):
        while True:
            try:
                producer.send(topic, value=f"m-{i:03}".encode(), partition=0).get(timeout=10)
                break
            except Exception as e:
                if time.time() > deadline:
                    raise
                print(f"retrying {i}: {e!r}", file=sys.stderr)
                time.sleep(0.5)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=servers[1:], enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got = []
    end = time.time() + 30
    while len(got) < 100 and time.time() < end:
        for records in consumer.poll(timeout_ms=500).values():
            got.extend(r.value.decode() for r in records)
    consumer.close()
    seen = sorted(set(got))
    assert seen == [f"m-{i:03}" for i in range(100)], seen[:5]
    print("ok", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
