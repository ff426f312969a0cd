"""nats-py, unchanged, on a three-node cluster: an ack sent with ack_sync is kept once it is
answered. A durable pull consumer of a three-replica stream takes 20 messages through the first
node and acks 10 of them with ack_sync; the test kills that node at once. Through the second node
the consumer goes on: the 10 acked never come again, the 10 taken and not acked come again, and
the rest follow.

Prints "acked" once the 10 acks are answered, reads a line once the node is dead, and prints "ok"
when every check holds. With "pause" after the arguments, prints "taken" and reads a line before
it acks (the test cuts the link between the first two nodes then)."""

import asyncio
import sys

import nats
from nats.js.api import ConsumerConfig

from cluster_streams import add_replicated_stream

TOTAL = 40


async def main(first, second, stream, pause):
    nc = await nats.connect(first, allow_reconnect=False)
    js = nc.jetstream()
    await add_replicated_stream(js, stream)
    for i in range(TOTAL):
        await js.publish(f"{stream}.t", f"m{i:03d}".encode())
    config = ConsumerConfig(ack_wait=3)
    sub = await js.pull_subscribe(f"{stream}.t", durable="workers", config=config)
    taken = await sub.fetch(20, timeout=10)
    assert len(taken) == 20, len(taken)
    if pause:
        print("taken", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for message in taken[:10]:
        await message.ack_sync(timeout=5)
    print("acked", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    acked = {m.data.decode() for m in taken[:10]}
    nc2 = await nats.connect(second)
    js2 = nc2.jetstream()
    seen = set()
    deadline = asyncio.get_running_loop().time() + 60
    while len(seen) < TOTAL - 10 and asyncio.get_running_loop().time() < deadline:
        try:
            sub2 = await js2.pull_subscribe(f"{stream}.t", durable="workers", config=config)
            for message in await sub2.fetch(10, timeout=2):
                value = message.data.decode()
                assert value not in acked, f"{value} was acked and came again"
                seen.add(value)
                await message.ack()
        except (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError):
            continue
    want = {f"m{i:03d}" for i in range(10, TOTAL)}
    assert seen == want, sorted(want - seen)[:10]
    await nc2.close()
    print("ok", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:] == ["pause"]))
