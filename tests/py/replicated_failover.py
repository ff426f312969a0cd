"""A NATS client, unchanged, publishing to a replicated stream of a three-node cluster: it learns
the other nodes from the first one's INFO (connect_urls), and when the node it is connected to
dies it reconnects to another and its publishes go on, with message ids so that a publish retried
after a lost answer is stored once. Usage: replicated_failover.py <url> <stream>. Prints
"phase 1" once the first half is acknowledged, then waits for a line on stdin (the node it is
connected to is killed meanwhile), and prints "ok" when every check holds."""

import asyncio
import sys
import time

import nats


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
    urls = nc._server_info.get("connect_urls") or []
    assert len(urls) == 3, nc._server_info
    first = nc.connected_url.netloc
    js = nc.jetstream(timeout=5)
    info = await js.add_stream(name=stream, subjects=[f"{stream}.>"], num_replicas=3)
    assert info.config.num_replicas == 3, info.config
    deadline = time.monotonic() + 30
    for i in range(50):
        await publish(js, f"{stream}.a", i, deadline)
    print("phase 1", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    deadline = time.monotonic() + 60
    for i in range(50, 100):
        await publish(js, f"{stream}.a", i, deadline)
    assert nc.connected_url.netloc != first, "still connected to the node that was killed"
    info = await js.stream_info(stream)
    assert info.state.messages == 100, info.state
    await nc.close()
    print("ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
