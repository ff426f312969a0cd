"""nats-py, unchanged, on a three-node cluster, through any node: 200 publishes to a stream with three replicas,
sent without waiting for each other, each expecting the stream's last sequence to be the one the
publish before it takes (Nats-Expected-Last-Sequence): every one is stored, in order. Prints "ok"
when every check holds."""

import asyncio
import sys

import nats

from cluster_streams import add_replicated_stream


async def main(url, name):
    nc = await nats.connect(url, connect_timeout=5)
    js = nc.jetstream(timeout=10)
    await add_replicated_stream(js, name)
    acks = await asyncio.gather(*[
        js.publish(name + ".x", f"m-{i}".encode(), headers={"Nats-Expected-Last-Sequence": str(i)})
        for i in range(200)
    ])
    assert [a.seq for a in acks] == list(range(1, 201)), [a.seq for a in acks][:10]
    await nc.close()
    print("ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
