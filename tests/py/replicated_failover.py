"""A NATS client, unchanged, publishing to and consuming from a replicated stream of a three-node
cluster: it learns the other nodes from the first one's INFO (connect_urls), and when the node it
is connected to dies it reconnects to another; its publishes go on, with message ids so that a
publish retried after a lost answer is stored once, and its durable pull consumer goes on from
where it was: what it acked never comes again, what it took without acking does. Usage:
replicated_failover.py <url> <stream>. Prints "phase 1" once the first half is acknowledged and
partly consumed, then waits for a line on stdin (the node it is connected to is killed meanwhile),
and prints "ok" when every check holds."""

import asyncio
import sys
import time

import nats
from nats.js.api import ConsumerConfig

from cluster_streams import add_replicated_stream


async def publish(js, subject: str, i: int, deadline: float) -> None:
    """Publishes message i until it is acknowledged: a publish may fail while the client
    reconnects or the cluster elects a leader, and is retried with the same message id."""
    while True:
        try:
            await js.publish(
                subject, f"m-{i:03}".encode(), timeout=5, headers={"Nats-Msg-Id": f"m-{i:03}"}
            )
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def main(url: str, stream: str) -> None:
    nc = await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, connect_timeout=2)
    # The other nodes are announced (nats-server lists the others; Sluice every node).
    deadline = time.monotonic() + 20
    while len(nc._server_info.get("connect_urls") or []) < 2:
        assert time.monotonic() < deadline, nc._server_info
        await asyncio.sleep(0.2)
    first = nc.connected_url.netloc
    js = nc.jetstream(timeout=5)
    info = await add_replicated_stream(js, stream)
    assert info.config.num_replicas == 3, info.config
    deadline = time.monotonic() + 30
    for i in range(50):
        await publish(js, f"{stream}.a", i, deadline)
    psub = await js.pull_subscribe(f"{stream}.a", durable="workers", config=ConsumerConfig(ack_wait=10))
    acked = set()
    for msg in await psub.fetch(20, timeout=5):
        await msg.ack_sync()
        acked.add(msg.data.decode())
    unacked = {msg.data.decode() for msg in await psub.fetch(10, timeout=5)}
    assert len(acked) == 20 and len(unacked) == 10, (acked, unacked)
    await asyncio.sleep(0.5)  # the consumer's state is written down (and sent on) every 100 ms
    print("phase 1", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    deadline = time.monotonic() + 60
    for i in range(50, 100):
        await publish(js, f"{stream}.a", i, deadline)
    assert nc.connected_url.netloc != first, "still connected to the node that was killed"
    info = await js.stream_info(stream)
    assert info.state.messages == 100, info.state

    # The durable consumer goes on through the node the client is connected to now.
    seen = set()
    while len(seen) < 80 and time.monotonic() < deadline:
        try:
            msgs = await psub.fetch(20, timeout=2)
        except Exception:
            continue
        for msg in msgs:
            data = msg.data.decode()
            assert data not in acked, f"{data} was acked and came again"
            seen.add(data)
            await msg.ack_sync()
    want = {f"m-{i:03}" for i in range(100)} - acked
    assert seen == want, sorted(want - seen)
    assert unacked <= seen
    await nc.close()
    print("ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
