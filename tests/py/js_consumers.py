"""Drives JetStream pull consumers with nats-py, unchanged: create, fetch, ack, nak, term,
redelivery after the ack wait, consumer info, and a consumer shared by two connections. Usage:
js_consumers.py <url> <section>... Prints "ok" when every check holds. The same script runs
against nats-server, so it describes NATS's behaviour."""

import asyncio
import datetime
import json
import sys
import time

import nats
from nats.errors import TimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError


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


async def policies(nc, js, jsm, tag: str) -> None:
    name = f"POL{tag}"
    await jsm.add_stream(name=name, subjects=[f"pol{tag}.>"])
    for i in range(6):
        await js.publish(f"pol{tag}.x", str(i).encode())
    # Ack all: an ack covers every delivery up to it.
    config = ConsumerConfig(durable_name="all", ack_policy=AckPolicy.ALL)
    sub = await js.pull_subscribe(f"pol{tag}.>", durable="all", stream=name, config=config)
    msgs = [(await sub.fetch(1, timeout=5))[0] for _ in range(3)]
    await msgs[2].ack_sync()
    info = await jsm.consumer_info(name, "all")
    assert (info.num_ack_pending, info.ack_floor.stream_seq) == (0, 3), info
    # Ack none: nothing waits for an ack.
    config = ConsumerConfig(durable_name="none", ack_policy=AckPolicy.NONE)
    sub = await js.pull_subscribe(f"pol{tag}.>", durable="none", stream=name, config=config)
    msgs = [(await sub.fetch(1, timeout=5))[0] for _ in range(3)]
    assert [m.data for m in msgs] == [b"0", b"1", b"2"], msgs
    info = await jsm.consumer_info(name, "none")
    assert (info.num_ack_pending, info.delivered.stream_seq) == (0, 3), info
    # Backoff: each delivery waits its own step for the ack (one message, so only it can come).
    await jsm.add_stream(name=f"BAK{tag}", subjects=[f"bak{tag}.>"])
    await js.publish(f"bak{tag}.x", b"retry me")
    config = ConsumerConfig(
        durable_name="back", ack_policy=AckPolicy.EXPLICIT, backoff=[0.5, 5.0], max_deliver=3
    )
    sub = await js.pull_subscribe(f"bak{tag}.>", durable="back", stream=f"BAK{tag}", config=config)
    (m,) = await sub.fetch(1, timeout=5)
    started = time.monotonic()
    (again,) = await sub.fetch(1, timeout=5)
    waited = time.monotonic() - started
    assert again.data == m.data and again.metadata.num_delivered == 2, again.metadata
    assert 0.3 < waited < 3, waited
    try:
        await sub.fetch(1, timeout=1.5)
        raise AssertionError("the second backoff step was not waited")
    except TimeoutError:
        pass
    await jsm.delete_stream(f"BAK{tag}")
    # Max deliveries: after the last, the message is not delivered again, and an advisory says so.
    await jsm.add_stream(name=f"MAX{tag}", subjects=[f"max{tag}.>"])
    await js.publish(f"max{tag}.x", b"poison")
    advisories = await nc.subscribe(f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.MAX{tag}.>")
    config = ConsumerConfig(
        durable_name="capped", ack_policy=AckPolicy.EXPLICIT, ack_wait=0.5, max_deliver=2
    )
    sub = await js.pull_subscribe(f"max{tag}.>", durable="capped", stream=f"MAX{tag}", config=config)
    for delivery in (1, 2):
        (m,) = await sub.fetch(1, timeout=5)
        assert m.metadata.num_delivered == delivery, m.metadata
    # (nats-server notices the last delivery ran out while a pull waits.)
    try:
        await sub.fetch(1, timeout=1.5)
        raise AssertionError("a message was delivered past max_deliver")
    except TimeoutError:
        pass
    advisory = json.loads((await advisories.next_msg(timeout=5)).data)
    assert advisory["type"] == "io.nats.jetstream.advisory.v1.max_deliver", advisory
    assert (advisory["consumer"], advisory["stream_seq"], advisory["deliveries"]) == ("capped", 1, 2), advisory
    await jsm.delete_stream(f"MAX{tag}")
    # Consumers made, deleted and made again on one connection each keep their own messages.
    await jsm.add_stream(name=f"SID{tag}", subjects=[f"sid{tag}.>"])
    for i in range(2):
        await js.publish(f"sid{tag}.x", str(i).encode())
    one = await js.pull_subscribe(f"sid{tag}.>", durable="one", stream=f"SID{tag}")
    two = await js.pull_subscribe(f"sid{tag}.>", durable="two", stream=f"SID{tag}")
    (m,) = await one.fetch(1, timeout=5)
    await m.ack_sync()
    assert await jsm.delete_consumer(f"SID{tag}", "one")
    three = await js.pull_subscribe(f"sid{tag}.>", durable="three", stream=f"SID{tag}")
    for sub in (two, three):
        (m,) = await sub.fetch(1, timeout=5)
        assert m.data == b"0", m
        await m.ack_sync()
    await jsm.delete_stream(f"SID{tag}")
    # Delete: the consumer is gone.
    assert await jsm.delete_consumer(name, "all")
    try:
        await jsm.consumer_info(name, "all")
        raise AssertionError("a deleted consumer was found")
    except NotFoundError:
        pass
    await jsm.delete_stream(name)


async def replay(nc, js, jsm, tag: str) -> None:
    name = f"REP{tag}"
    await jsm.add_stream(name=name, subjects=[f"rep{tag}.>"])
    for i in range(3):
        await js.publish(f"rep{tag}.x", str(i).encode())
    await asyncio.sleep(0.05)
    middle = datetime.datetime.now(datetime.timezone.utc)
    await asyncio.sleep(0.05)
    for i in range(3, 6):
        await js.publish(f"rep{tag}.x", str(i).encode())
    cases = [
        ("byseq", ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=5), b"4"),
        ("bytime", ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=middle), b"3"),
        ("last", ConsumerConfig(deliver_policy=DeliverPolicy.LAST), b"5"),
        ("all", ConsumerConfig(deliver_policy=DeliverPolicy.ALL), b"0"),
    ]
    for durable, config, first in cases:
        config.durable_name = durable
        sub = await js.pull_subscribe(f"rep{tag}.>", durable=durable, stream=name, config=config)
        (m,) = await sub.fetch(1, timeout=5)
        assert m.data == first, (durable, m.data)
    await jsm.delete_stream(name)


async def push(nc, js, jsm, tag: str) -> None:
    name = f"PSH{tag}"
    await jsm.add_stream(name=name, subjects=[f"psh{tag}.>"])
    for i in range(3):
        await js.publish(f"psh{tag}.x", str(i).encode())
    sub = await js.subscribe(f"psh{tag}.>", durable="pusher", manual_ack=True)
    got = []
    for _ in range(3):
        m = await sub.next_msg(timeout=5)
        got.append(m.data)
        await m.ack_sync()
    assert got == [b"0", b"1", b"2"], got
    await js.publish(f"psh{tag}.x", b"3")
    m = await sub.next_msg(timeout=5)
    assert m.data == b"3" and m.metadata.sequence.stream == 4, m
    await m.nak()
    again = await sub.next_msg(timeout=5)
    assert again.data == b"3" and again.metadata.num_delivered == 2, again.metadata
    await again.ack_sync()
    info = await jsm.consumer_info(name, "pusher")
    assert (info.num_pending, info.num_ack_pending) == (0, 0), info
    await sub.unsubscribe()
    await jsm.delete_stream(name)


async def queue(nc, js, jsm, tag: str) -> None:
    """A push consumer with a deliver group: two workers on two connections share its messages."""
    name = f"QUE{tag}"
    await jsm.add_stream(name=name, subjects=[f"que{tag}.>"])
    nc2 = await nats.connect(nc.connected_url.geturl())
    js2 = nc2.jetstream()
    first = await js.subscribe(f"que{tag}.>", queue="workers", manual_ack=True)
    second = await js2.subscribe(f"que{tag}.>", queue="workers", manual_ack=True)
    await asyncio.sleep(0.2)
    for i in range(40):
        await js.publish(f"que{tag}.x", str(i).encode())
    got = {1: [], 2: []}
    for worker, sub in ((1, first), (2, second)):
        while True:
            try:
                m = await sub.next_msg(timeout=1)
            except TimeoutError:
                break
            got[worker].append(int(m.data))
            await m.ack_sync()
    everything = sorted(got[1] + got[2])
    assert everything == list(range(40)), got
    assert got[1] and got[2], got
    await nc2.close()
    await jsm.delete_stream(name)


async def flow(nc, js, jsm, tag: str) -> None:
    """Push consumers with flow control, ephemeral and durable: 8 MiB go through a window that
    starts at 2 MiB, so they arrive only if the client's answers reach the server."""
    name = f"FLW{tag}"
    await jsm.add_stream(name=name, subjects=[f"flw{tag}.>"])
    body = b"x" * 2048
    count = 4000
    for start in range(0, count, 250):
        acks = await asyncio.gather(
            *(js.publish(f"flw{tag}.x", body + str(i).encode()) for i in range(start, start + 250))
        )
        assert [a.seq for a in acks] == list(range(start + 1, start + 251)), acks
    for durable in (None, "flowing"):
        config = ConsumerConfig(ack_policy=AckPolicy.NONE)
        sub = await js.subscribe(
            f"flw{tag}.>", durable=durable, config=config, flow_control=True, idle_heartbeat=0.5
        )
        info = await sub.consumer_info()
        assert info.config.flow_control, info.config
        for i in range(count):
            m = await sub.next_msg(timeout=5)
            assert m.data == body + str(i).encode(), (durable, i, m.data[-8:])
        await sub.unsubscribe()
    await jsm.delete_stream(name)


async def durable_push_made(nc, js, jsm, tag: str) -> None:
    """A durable push consumer made by a connection that then goes away (first half)."""
    name = "OUTLIVE"
    await jsm.add_stream(name=name, subjects=["outlive.>"])
    for i in range(3):
        await js.publish("outlive.x", str(i).encode())
    config = ConsumerConfig(durable_name="kept", deliver_subject="outlive-deliver", ack_policy=AckPolicy.EXPLICIT)
    await jsm.add_consumer(name, config=config)


async def durable_push_read(nc, js, jsm, tag: str) -> None:
    """Another connection binds to it and gets every message, old and new (second half)."""
    name = "OUTLIVE"
    sub = await js.subscribe("outlive.>", durable="kept", stream=name, manual_ack=True)
    await js.publish("outlive.x", b"3")
    got = []
    for _ in range(4):
        m = await sub.next_msg(timeout=5)
        got.append(m.data)
        await m.ack_sync()
    assert got == [b"0", b"1", b"2", b"3"], got
    info = await jsm.consumer_info(name, "kept")
    assert (info.num_pending, info.num_ack_pending) == (0, 0), info
    await sub.unsubscribe()
    await jsm.delete_stream(name)


async def dead_letters(nc, js, jsm, tag: str) -> None:
    """Sluice's own: a message that runs out of deliveries is copied to DLQ_<stream>_<consumer>,
    a stream JetStream clients can read."""
    name = f"DLQ{tag}"
    await jsm.add_stream(name=name, subjects=[f"dlq{tag}.>"])
    await js.publish(f"dlq{tag}.x", b"poison", headers={"Trace": "t1"})
    config = ConsumerConfig(durable_name="w", ack_policy=AckPolicy.EXPLICIT, ack_wait=0.3, max_deliver=2)
    sub = await js.pull_subscribe(f"dlq{tag}.>", durable="w", stream=name, config=config)
    for _ in range(2):
        await sub.fetch(1, timeout=5)
    dead = f"DLQ_{name}_w"
    for _ in range(50):
        info = await jsm.stream_info(dead)
        if info.state.messages == 1:
            break
        await asyncio.sleep(0.1)
    copy = await jsm.get_msg(dead, 1)
    assert copy.data == b"poison" and copy.headers.get("Trace") == "t1", copy
    await jsm.delete_stream(name)


SECTIONS = {
    "pull": pull,
    "replay": replay,
    "push": push,
    "queue": queue,
    "flow": flow,
    "durable_push_made": durable_push_made,
    "durable_push_read": durable_push_read,
    "dead_letters": dead_letters,
    "policies": policies,
    "redelivery": redelivery,
}


async def main(url: str, sections: list) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    jsm = nc.jsm()
    tag = str(int(time.time() * 1000) % 1000000)
    for section in sections:
        if section not in SECTIONS:
            raise SystemExit(f"unknown section {section}")
        await SECTIONS[section](nc, js, jsm, tag)
    await nc.close()
    print("ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
