"""What the cluster client scripts share: adding a three-replica stream to a cluster that may
have just started (it answers 503, or not at all, until its meta group has a leader)."""

import asyncio
import time


async def add_replicated_stream(js, name, seconds=30):
    """Adds stream `name` capturing `name.>` with three replicas, asking again until the cluster
    takes it; returns its info."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await js.add_stream(name=name, subjects=[f"{name}.>"], num_replicas=3)
        except Exception:
            assert time.monotonic() < deadline, f"stream {name} was never added"
            await asyncio.sleep(0.5)
