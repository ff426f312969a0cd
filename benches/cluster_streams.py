"""Adds streams one after the other through a node of a cluster, with nats-py, and prints how
fast each 500 went: the cost of a registry change as the meta group's log grows.

    benches/cluster_streams.py nats://127.0.0.1:4222 3000

Start the cluster first (three `sluice serve --name nI --cluster ... --routes ...`); the
interpreter is the one `./test` installs: target/py-venv/bin/python."""

import asyncio
import sys
import time

import nats


async def main(url, count):
    nc = await nats.connect(url)
    js = nc.jetstream(timeout=30)
    last = time.time()
    for i in range(count):
        await js.add_stream(name=f"u{i}", subjects=[f"u.{i}.>"])
        if (i + 1) % 500 == 0:
            now = time.time()
            print(f"{i + 1} streams: the last 500 in {now - last:.1f} s ({500 / (now - last):.0f}/s)",
                  flush=True)
            last = now
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
