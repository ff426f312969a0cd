"""A NATS client, unchanged, connected to one node of a cluster while another is not up yet: it
is told the nodes it can reconnect to (INFO connect_urls, which nats-py adds to its server pool)
and, when the missing node comes, told again by a new INFO. Usage: connect_urls.py <url> <now> <then>. Prints "have <now>" once it knows at least
<now> servers, waits for <then>, and prints "ok"."""

import asyncio
import sys
import time

import nats


def servers(nc) -> set:
    """The servers the client would reconnect to: the one it was given and those announced."""
    return {uri.netloc for uri in nc.servers}


async def wait_for(nc, count: int) -> None:
    deadline = time.monotonic() + 30
    while len(servers(nc)) < count:
        assert time.monotonic() < deadline, servers(nc)
        await asyncio.sleep(0.1)


async def main(url: str, now: int, then: int) -> None:
    nc = await nats.connect(url, connect_timeout=2)
    await wait_for(nc, now)
    print(f"have {now}", flush=True)
    await wait_for(nc, then)
    await nc.close()
    print("ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
