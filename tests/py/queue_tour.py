"""The queue-group tour with nats-py: two members of one group that auto-unsubscribe after two
messages (UNSUB sid 2), four messages published; every message must reach a member, every round.
Usage: queue_tour.py URL ROUNDS. Prints "ok" when every round holds."""

import asyncio
import sys

import nats
from nats.errors import TimeoutError


async def in_force(members, publisher, subject: str) -> None:
    """Waits until both members' subscriptions are in force: a probe subscription made after them on
    each member's connection receives a message (interest from one connection travels in order)."""
    for i, client in enumerate(members):
        probe = await client.subscribe(f"{subject}.probe.{i}")
        while True:
            await publisher.publish(f"{subject}.probe.{i}", b"p")
            await publisher.flush()
            try:
                await probe.next_msg(timeout=0.05)
                break
            except TimeoutError:
                pass
        await probe.unsubscribe()


async def round_trip(url: str, n: int) -> None:
    members = [await nats.connect(url) for _ in range(2)]
    publisher = await nats.connect(url)
    subject = f"jobs{n}"
    got = []

    def member_handler(index):
        async def handler(msg):
            got.append((msg.data.decode(), index))

        return handler

    for i, m in enumerate(members):
        sub = await m.subscribe(subject, queue="workers", cb=member_handler(i))
        await sub.unsubscribe(limit=2)  # UNSUB sid 2: the server ends it after two messages.
    await in_force(members, publisher, subject)
    for i in range(4):
        await publisher.publish(subject, f"job {i}".encode())
    await publisher.flush()
    for _ in range(200):
        if len(got) >= 4:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # A fifth would show up here.
    jobs = sorted(job for job, _ in got)
    shares = sorted(sum(1 for _, who in got if who == i) for i in range(2))
    assert jobs == ["job 0", "job 1", "job 2", "job 3"], f"round {n}: {got}"
    assert shares == [2, 2], f"round {n}: each member gets its share: {got}"
    for client in members + [publisher]:
        await client.close()


async def main(url: str, rounds: int) -> None:
    for n in range(rounds):
        await round_trip(url, n)
    print("ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
