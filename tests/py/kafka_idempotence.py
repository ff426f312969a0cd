"""An idempotent kafka-python producer whose first produce is stored but never answered: a proxy
between it and the broker drops the connection instead of passing that answer on. The producer
sends the batch again with the same sequence numbers; the broker must answer it as already
stored, so that every record is there exactly once. Prints "ok" when that holds.

Arguments: the broker's Kafka address, and the port to proxy on (the broker advertises it)."""

import socket
import struct
import sys
import threading
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

PRODUCE = 0
dropped = threading.Event()


def read_frame(sock):
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        if not chunk:
            return None
        head += chunk
    (size,) = struct.unpack(">i", head)
    body = b""
    while len(body) < size:
        chunk = sock.recv(min(65536, size - len(body)))
        if not chunk:
            return None
        body += chunk
    return head + body


def pipe(client, broker):
    produces = set()

    def close_both():
        for s in (client, broker):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def upstream():
        try:
            while True:
                frame = read_frame(client)
                if frame is None:
                    break
                api_key, _version, correlation = struct.unpack(">hhi", frame[4:12])
                if api_key == PRODUCE:
                    produces.add(correlation)
                broker.sendall(frame)
        except OSError:
            pass
        close_both()

    def downstream():
        try:
            while True:
                frame = read_frame(broker)
                if frame is None:
                    break
                (correlation,) = struct.unpack(">i", frame[4:8])
                if correlation in produces and not dropped.is_set():
                    dropped.set()
                    break
                client.sendall(frame)
        except OSError:
            pass
        close_both()

    threading.Thread(target=upstream, daemon=True).start()
    threading.Thread(target=downstream, daemon=True).start()


def proxy(listener, target):
    while True:
        client, _ = listener.accept()
        broker = socket.create_connection(target)
        pipe(client, broker)


def main(broker_addr, proxy_port):
    host, port = broker_addr.rsplit(":", 1)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(proxy_port)))
    listener.listen()
    threading.Thread(target=proxy, args=(listener, (host, int(port))), daemon=True).start()

    producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{proxy_port}", acks="all",
                             enable_idempotence=True, retries=10, retry_backoff_ms=100,
                             request_timeout_ms=10000)
    first = [producer.send("once", value=b"first-%d" % i, partition=0) for i in range(10)]
    producer.flush()
    assert dropped.is_set(), "the proxy never saw a produce answer"
    second = [producer.send("once", value=b"second-%d" % i, partition=0) for i in range(10)]
    producer.flush()
    offsets = [f.get(timeout=10).offset for f in first + second]
    producer.close()
    assert offsets == list(range(20)), offsets

    consumer = KafkaConsumer(bootstrap_servers=broker_addr, enable_auto_commit=False)
    tp = TopicPartition("once", 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got = []
    deadline = time.time() + 15
    while len(got) < 21 and time.time() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            got.extend(r.value for r in records)
        if len(got) >= 20:
            got.extend(r.value for rs in consumer.poll(timeout_ms=1000).values() for r in rs)
            break
    consumer.close()
    want = [b"first-%d" % i for i in range(10)] + [b"second-%d" % i for i in range(10)]
    assert got == want, got


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
    print("ok")
