"""nats-py, unchanged, on a three-node cluster: a key-value bucket with three replicas and a
history of 2 keeps, on every node, only the two newest revisions of a key put five times, and the
same ones; a stream with three replicas and max_msgs 10 keeps the newest 10 of 30 on every node,
and every node lists its consumer.
Prints "ok" when every check holds."""

import asyncio
import sys

import nats
import nats.errors
import nats.js.errors
from nats.js.api import ConsumerConfig, KeyValueConfig


async def history(url, bucket, key, want):
    """The values of `key` as the node at `url` holds them, once it holds `want` of them."""
    nc = await nats.connect(url, connect_timeout=5, allow_reconnect=False)
    js = nc.jetstream(timeout=5)
    kv = await js.key_value(bucket)
    values, info = [], None
    for _ in range(100):
        try:
            entries = await kv.history(key)
        except nats.js.errors.NoKeysError:
            entries = []  # Not caught up yet.
        values = [e.value for e in entries]
        info = await js.stream_info("KV_" + bucket)
        if len(values) == want and info.state.messages == want:
            break
        await asyncio.sleep(0.1)
    await nc.close()
    return values, info.state if info else None


async def main(urls, bucket):
    urls = urls.split(",")
    nc = await nats.connect(urls[0], connect_timeout=5)
    js = nc.jetstream(timeout=5)
    kv = None
    for _ in range(60):
        try:
            # A new cluster may not have elected its leader yet.
            kv = await js.create_key_value(KeyValueConfig(bucket=bucket, history=2, replicas=3))
            break
        except (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError):
            await asyncio.sleep(0.5)
    assert kv is not None, "the bucket was never created"
    for i in range(5):
        await kv.put("job.1", f"v{i}".encode())
    await nc.close()
    seen = [(url, *(await history(url, bucket, "job.1", 2))) for url in urls]
    for url, values, state in seen:
        assert values == [b"v3", b"v4"], seen

    nc = await nats.connect(urls[0], connect_timeout=5)
    js = nc.jetstream(timeout=5)
    await js.add_stream(name=bucket + "_LIMITED", subjects=[bucket + ".limited"], num_replicas=3,
                        max_msgs=10)
    for i in range(30):
        await js.publish(bucket + ".limited", f"m{i}".encode())
    await js.add_consumer(bucket + "_LIMITED", ConsumerConfig(durable_name="readers",
                                                              ack_policy="explicit"))
    await nc.close()
    for url in urls:
        nc = await nats.connect(url, connect_timeout=5)
        js = nc.jetstream(timeout=5)
        state = None
        for _ in range(100):
            state = (await js.stream_info(bucket + "_LIMITED")).state
            if (state.messages, state.first_seq, state.last_seq) == (10, 21, 30):
                break
            await asyncio.sleep(0.1)
        assert (state.messages, state.first_seq, state.last_seq) == (10, 21, 30), (url, state)
        first = await js.get_msg(bucket + "_LIMITED", 21)
        assert first.data == b"m20", (url, first.data)
        # Every node lists the consumer, wherever it was made.
        names = []
        for _ in range(50):
            names = [c.name for c in await js.consumers_info(bucket + "_LIMITED")]
            if names == ["readers"]:
                break
            await asyncio.sleep(0.1)
        assert names == ["readers"], (url, names)
        await nc.close()
    print("ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
