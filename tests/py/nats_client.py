"""Drives Sluice's NATS port with nats-py, unchanged. Exits 0 and prints "ok" when every check holds."""

import asyncio
import sys

import nats
from nats.errors import NoRespondersError, TimeoutError


async def until_subscribed(sub_client, pub_client, name: str) -> None:
    """Waits until subscriptions made on sub_client are in force, with a probe subscription made
    after them: nats-py's flush() writes its PING ahead of SUBs still in its buffer, so the PONG does
    not prove that a SUB reached the server; a message the probe receives does (interest from one
    connection travels in order)."""
    probe = await sub_client.subscribe("probe." + name)
    while True:
        await pub_client.publish("probe." + name, b"p")
        await pub_client.flush()
        try:
            await probe.next_msg(timeout=0.05)
            break
        except TimeoutError:
            pass
    await probe.unsubscribe()


async def main(url: str) -> None:
    sub_client = await nats.connect(url)
    pub_client = await nats.connect(url)

    # Pub/sub with wildcards and headers.
    star = await sub_client.subscribe("user.*.audio")
    full = await sub_client.subscribe("user.>")
    await until_subscribed(sub_client, pub_client, "wildcards")
    await pub_client.publish("user.7.audio", b"chunk")
    await pub_client.publish("user.7.text", b"text", headers={"Trace": "9"})
    await pub_client.flush()
    m = await star.next_msg(timeout=5)
    assert (m.subject, m.data) == ("user.7.audio", b"chunk"), m
    a = await full.next_msg(timeout=5)
    b = await full.next_msg(timeout=5)
    assert [a.subject, b.subject] == ["user.7.audio", "user.7.text"], (a, b)
    assert b.headers and b.headers.get("Trace") == "9", b.headers

    # Queue group: every message to exactly one member.
    got = []

    async def member(msg):
        got.append(msg.data)

    q1 = await sub_client.subscribe("work", queue="workers", cb=member)
    q2 = await pub_client.subscribe("work", queue="workers", cb=member)
    await until_subscribed(sub_client, pub_client, "queue1")
    await until_subscribed(pub_client, sub_client, "queue2")
    for i in range(100):
        await pub_client.publish("work", str(i).encode())
    await pub_client.flush()
    for _ in range(100):
        if len(got) == 100:
            break
        await asyncio.sleep(0.05)
    assert sorted(int(x) for x in got) == list(range(100)), len(got)
    await q1.unsubscribe()
    await q2.unsubscribe()

    # Request/reply, and no responders.
    async def echo(msg):
        await msg.respond(msg.data.upper())

    await sub_client.subscribe("svc.upper", cb=echo)
    await until_subscribed(sub_client, pub_client, "svc")
    reply = await pub_client.request("svc.upper", b"hello", timeout=5)
    assert reply.data == b"HELLO", reply
    try:
        await pub_client.request("nobody.home", b"x", timeout=2)
        raise AssertionError("a request nobody answers must fail")
    except NoRespondersError:
        pass
    except TimeoutError:
        raise AssertionError("expected no responders, got a timeout")

    # Auto-unsubscribe after two messages.
    limited = await sub_client.subscribe("limited", max_msgs=2)
    await until_subscribed(sub_client, pub_client, "limited")
    for _ in range(3):
        await pub_client.publish("limited", b"m")
    await pub_client.flush()
    await limited.next_msg(timeout=5)
    await limited.next_msg(timeout=5)
    try:
        await limited.next_msg(timeout=0.5)
        raise AssertionError("a third message after max_msgs=2")
    except Exception as e:  # nats-py raises TimeoutError or a closed-subscription error
        assert not isinstance(e, AssertionError), e

    await sub_client.close()
    await pub_client.close()
    print("ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
