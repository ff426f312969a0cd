"""Watches a JetStream key-value bucket with nats-py, unchanged: keys, history and a watcher that
sees the current values and then every change. These run on ordered push consumers. Usage:
js_kv_watch.py <url>. Prints "ok" when every check holds. The same script runs against nats-server,
so it describes NATS's behaviour."""

import asyncio
import sys
import time

import nats


async def main(url: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    bucket = f"watch{int(time.time() * 1000) % 1000000}"
    kv = await js.create_key_value(bucket=bucket, history=5)
    await kv.put("a", b"1")
    await kv.put("b", b"2")
    await kv.put("a", b"3")
    await kv.put("c", b"4")
    await kv.delete("c")

    keys = await kv.keys()
    assert sorted(keys) == ["a", "b"], keys
    history = await kv.history("a")
    assert [e.value for e in history] == [b"1", b"3"], history

    watcher = await kv.watchall()
    initial = []
    while True:
        entry = await watcher.updates(timeout=5)
        if entry is None:
            break
        initial.append((entry.key, entry.value, entry.operation))
    # The current value of each key, in the order they were last written; c's is a delete.
    assert [(k, v) for k, v, _ in initial if v] == [("b", b"2"), ("a", b"3")], initial
    assert ("c", "DEL") in [(k, op) for k, _, op in initial], initial
    await kv.put("d", b"5")
    update = await watcher.updates(timeout=5)
    assert (update.key, update.value) == ("d", b"5"), update
    await watcher.stop()
    await js.delete_key_value(bucket)
    await nc.close()
    print("ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
