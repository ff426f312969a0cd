"""nats-py, unchanged, on a three-node cluster: a key-value bucket with three replicas and a
history of 2 keeps, on every node, only the two newest revisions of a key put five times, and the
same ones; a purged key's history is gone everywhere. Prints "ok" when every check holds."""

import asyncio
import sys

import nats
import nats.errors
import nats.js.errors
from nats.js.api import KeyValueConfig


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
    print("ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
