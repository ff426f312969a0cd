"""Connects to a NATS server that maps client certificates to users (Sluice's --tls-map,
nats-server's verify_and_map) with nats-py, unchanged. Exits 0 and prints "ok" when every check
holds.

Arguments: URL CA_PEM ALICE_CERT ALICE_KEY MALLORY_CERT MALLORY_KEY. alice's certificate names the
user alice, who may publish and subscribe under alice.>; mallory's names no user."""

import asyncio
import ssl
import sys

import nats


def context(ca: str, cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.load_cert_chain(cert, key)
    return ctx


async def main(url, ca, alice_cert, alice_key, mallory_cert, mallory_key) -> None:
    errors = []

    async def on_error(e):
        errors.append(str(e))

    alice = await nats.connect(
        url, tls=context(ca, alice_cert, alice_key), error_cb=on_error, allow_reconnect=False
    )
    sub = await alice.subscribe("alice.in")
    await alice.flush()
    await alice.publish("alice.in", b"mine")
    m = await sub.next_msg(timeout=5)
    assert m.data == b"mine", m

    # Outside alice's permissions: an error, and the connection goes on.
    await alice.publish("bob.in", b"not mine")
    await alice.flush()
    for _ in range(100):
        if errors:
            break
        await asyncio.sleep(0.05)
    assert any("permissions violation" in e.lower() for e in errors), errors
    await alice.publish("alice.in", b"still here")
    m = await sub.next_msg(timeout=5)
    assert m.data == b"still here", m
    await alice.close()

    # A certificate that names no user is refused.
    refused = None
    try:
        mallory = await nats.connect(
            url,
            tls=context(ca, mallory_cert, mallory_key),
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=5,
            error_cb=on_error,
        )
        await mallory.close()
    except Exception as e:  # nats-py raises the server's -ERR or a closed connection.
        refused = e
    assert refused is not None, "mallory got in"
    print("ok")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:7]))
