"""Drives JetStream pull consumers with nats-py, unchanged: create, fetch, ack, nak, term,
redelivery after the ack wait, consumer info, and a consumer shared by two connections. Usage:
js_consumers.py <url> <section>... Prints "ok" when every check holds. The same script runs
against nats-server, so it describes NATS's behaviour."""

import asyncio
import sys
import time

import nats
from nats.errors import TimeoutError
from nats.js.api import AckPolicy, ConsumerConfig


async def pull(nc, js, jsm, tag: str) -> None:
    name = f"PUL{tag}"
    await jsm.add_stream(name=name, subjects=[f"pul{tag}.>"])
    for i in range(10):
        await js.publish(f"pul{tag}.x", str(i).encode())
    sub = await js.pull_subscribe(f"pul{tag}.>", durable="w", stream=name)
    # One at a time: a fetch of more leaves a pull request open that later messages go to.
    msgs = [(await sub.fetch(1, timeout=5))[0] for _ in range(4)]
    assert [m.data for m in msgs] == [b"0", b"1", b"2", b"3"], msgs
    first = msgs[0].metadata
    assert (first.sequence.stream, first.sequence.consumer, first.num_delivered) == (1, 1, 1), first
    assert first.stream == name and first.consumer == "w", first
    assert msgs[0].subject == f"pul{tag}.x", msgs[0].subject
    for m in msgs:
        await m.ack()
    info = await jsm.consumer_info(name, "w")
    assert info.num_pending == 6, info
    assert info.delivered.stream_seq == 4, info

    # A nak brings the message back, counted as a redelivery; a term ends one for good. Two
    # connections share the consumer: between them, every message once. (The server may take
    # a nak after a pull that followed it, so the order of what comes next is not fixed.)
    nc2 = await nats.connect(nc.connected_url.geturl())
    sub2 = await nc2.jetstream().pull_subscribe(f"pul{tag}.>", durable="w", stream=name)
    (m,) = await sub.fetch(1, timeout=5)
    naked = m.data
    await m.nak()
    termed = None
    seen = {}
    subs = [sub, sub2]
    for i in range(20):
        try:
            (m,) = await subs[i % 2].fetch(1, timeout=1)
        except TimeoutError:
            break
        seen.setdefault(m.data, []).append(m.metadata.num_delivered)
        if termed is None and m.data != naked:
            termed = m.data
            await m.term()
            await nc.flush()
            continue
        await m.ack_sync()
    assert seen.pop(naked) == [2], (naked, seen)
    assert seen == {str(i).encode(): [1] for i in range(5, 10)}, seen

    # A batch.
    for i in range(10, 15):
        await js.publish(f"pul{tag}.x", str(i).encode())
    batch = await sub.fetch(5, timeout=5)
    assert [m.data for m in batch] == [str(i).encode() for i in range(10, 15)], batch
    for m in batch:
        await m.ack_sync()

    # Nothing left: a fetch times out.
    try:
        await sub.fetch(1, timeout=0.5)
        raise AssertionError("a fetch got a message from an empty consumer")
    except TimeoutError:
        pass
    info = await jsm.consumer_info(name, "w")
    assert (info.num_pending, info.num_ack_pending) == (0, 0), info
    await nc2.close()
    await jsm.delete_stream(name)


async def redelivery(nc, js, jsm, tag: str) -> None:
    name = f"RED{tag}"
    await jsm.add_stream(name=name, subjects=[f"red{tag}.>"])
    await js.publish(f"red{tag}.x", b"slow job")
    config = ConsumerConfig(durable_name="slow", ack_wait=1.0, ack_policy=AckPolicy.EXPLICIT)
    sub = await js.pull_subscribe(f"red{tag}.>", durable="slow", stream=name, config=config)
    (m,) = await sub.fetch(1, timeout=5)
    assert m.metadata.num_delivered == 1, m.metadata
    # Not acked within the ack wait: delivered again.
    (again,) = await sub.fetch(1, timeout=5)
    assert again.data == b"slow job" and again.metadata.num_delivered == 2, again.metadata
    await again.ack_sync()
    info = await jsm.consumer_info(name, "slow")
    assert info.num_ack_pending == 0 and info.delivered.consumer_seq == 2, info
    names = await jsm.consumers_info(name)
    assert [c.name for c in names] == ["slow"], names
    await jsm.delete_stream(name)


async def main(url: str, sections: list) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    jsm = nc.jsm()
    tag = str(int(time.time() * 1000) % 1000000)
    for section in sections:
        if section == "pull":
            await pull(nc, js, jsm, tag)
        elif section == "redelivery":
            await redelivery(nc, js, jsm, tag)
        else:
            raise SystemExit(f"unknown section {section}")
    await nc.close()
    print("ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
