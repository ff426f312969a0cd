"""A NATS client, unchanged, retrying a publish through another node after the node leading its
stream died with the publish unanswered: the retry carries the same message id, so the stream
keeps the message once, whether the first publish reached the other nodes or not. Usage:
retry_after_failover.py <url> <stream>. Creates the stream (three replicas) through <url> and
prints "created <leader>" (the leader's name where stream info tells it, else "-"); reads the URL
of a node that will live on from stdin, publishes once through it without waiting long for the
answer and prints "sent"; waits for a line on stdin (the leader is killed meanwhile), retries
until the publish is acknowledged, and prints "messages N" and "ok" when the stream holds it once."""

import asyncio
import sys
import time

import nats

from cluster_streams import add_replicated_stream


async def main(url: str, stream: str) -> None:
    nc = await nats.connect(url, connect_timeout=2)
    js = nc.jetstream()
    info = await add_replicated_stream(js, stream)
    deadline = time.monotonic() + 30
    leader = getattr(getattr(info, "cluster", None), "leader", None)
    while leader is None and getattr(info, "cluster", None) is not None:
        assert time.monotonic() < deadline, "the stream has no leader"
        await asyncio.sleep(0.2)
        info = await js.stream_info(stream)
        leader = info.cluster.leader
    await nc.close()
    leader = leader or "-"
    print(f"created {leader}", flush=True)

    loop = asyncio.get_running_loop()
    other = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
    nc = await nats.connect(other, connect_timeout=2, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream()
    subject, headers = f"{stream}.jobs", {"Nats-Msg-Id": "job-1"}
    try:
        await js.publish(subject, b"train model 7", timeout=0.5, headers=headers)
    except Exception:
        pass  # unanswered: the leader is about to die
    print("sent", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)

    deadline = time.monotonic() + 60
    while True:
        try:
            await js.publish(subject, b"train model 7", timeout=5, headers=headers)
            break
        except Exception:
            assert time.monotonic() < deadline, "the retry was never acknowledged"
            await asyncio.sleep(0.2)
    state = (await js.stream_info(stream)).state
    print(f"messages {state.messages}", flush=True)
    assert state.messages == 1, f"the message was stored {state.messages} times"
    await nc.close()
    print("ok", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
