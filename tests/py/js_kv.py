"""Drives a JetStream key-value bucket with nats-py, unchanged: create, put, get, update with a
revision, create, delete, purge. Usage: js_kv.py <url>. Prints "ok" when every check holds. The
same script runs against nats-server, so it describes NATS's behaviour."""

import asyncio
import sys
import time

import nats
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError


async def main(url: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    bucket = f"models{int(time.time() * 1000) % 1000000}"
    kv = await js.create_key_value(bucket=bucket, history=3)
    # Creating it again finds the same bucket.
    kv = await js.create_key_value(bucket=bucket, history=3)
    first = await kv.put("llama", b"v1")
    entry = await kv.get("llama")
    assert (entry.value, entry.revision) == (b"v1", first), entry
    second = await kv.update("llama", b"v2", last=first)
    assert second > first, (first, second)
    try:
        await kv.update("llama", b"v3", last=first)
        raise AssertionError("an update with a stale revision was stored")
    except KeyWrongLastSequenceError:
        pass
    try:
        await kv.create("llama", b"again")
        raise AssertionError("create of an existing key was stored")
    except KeyWrongLastSequenceError:
        pass
    await kv.create("mistral", b"m1")
    await kv.delete("llama")
    try:
        await kv.get("llama")
        raise AssertionError("a deleted key was found")
    except (KeyDeletedError, KeyNotFoundError):
        pass
    await kv.create("llama", b"v4")
    entry = await kv.get("llama")
    assert entry.value == b"v4", entry
    # Older revisions are kept up to the history.
    old = await kv.get("llama", revision=second)
    assert old.value == b"v2", old
    await kv.purge("mistral")
    try:
        await kv.get("mistral")
        raise AssertionError("a purged key was found")
    except (KeyDeletedError, KeyNotFoundError):
        pass
    status = await kv.status()
    assert status.bucket == bucket and status.history == 3, status
    await js.delete_key_value(bucket)
    await nc.close()
    print("ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
