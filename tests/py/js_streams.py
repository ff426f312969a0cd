"""Drives the JetStream stream API with nats-py, unchanged: streams, publish acks, message ids and
expectations. Usage: js_streams.py <url> <section>... Prints "ok" when every check of every named
section holds. The same script runs against nats-server, so it describes NATS's behaviour."""

import asyncio
import sys
import time

import nats
from nats.js.api import StreamConfig
from nats.js.errors import APIError, BadRequestError, KeyNotFoundError, NoStreamResponseError, NotFoundError


async def account(js, jsm) -> None:
    info = await jsm.account_info()
    assert info.limits is not None and info.api is not None, info


async def streams(js, jsm, tag: str) -> None:
    name = f"ORD{tag}"
    created = await jsm.add_stream(name=name, subjects=[f"orders{tag}.>"])
    assert created.config.name == name, created
    assert created.config.subjects == [f"orders{tag}.>"], created.config
    assert created.config.max_msgs == -1 and created.config.num_replicas == 1, created.config
    assert created.state.messages == 0 and created.state.last_seq == 0, created.state

    # Creating again with the same config answers with the stream; another config is refused.
    again = await jsm.add_stream(name=name, subjects=[f"orders{tag}.>"])
    assert again.config.name == name
    try:
        await jsm.add_stream(name=name, subjects=[f"other{tag}.>"])
        raise AssertionError("a different config was accepted")
    except BadRequestError as e:
        assert e.err_code == 10058, e

    # Publish acks count from 1 within the stream.
    for i in range(1, 4):
        ack = await js.publish(f"orders{tag}.new", f"order {i}".encode())
        assert (ack.stream, ack.seq, ack.duplicate) == (name, i, None), ack

    info = await jsm.stream_info(name)
    assert info.state.messages == 3, info.state
    assert (info.state.first_seq, info.state.last_seq) == (1, 3), info.state
    assert info.state.bytes > 0, info.state

    # Update: a new subject is taken.
    config = info.config
    config.subjects = [f"orders{tag}.>", f"returns{tag}.>"]
    updated = await jsm.update_stream(config)
    assert f"returns{tag}.>" in updated.config.subjects, updated.config
    ack = await js.publish(f"returns{tag}.x", b"back")
    assert ack.seq == 4, ack

    # Streams are listed and found by subject.
    names = await jsm.streams_info()
    assert name in [s.config.name for s in names], names
    found = await js.find_stream_name_by_subject(f"orders{tag}.new")
    assert found == name, found

    # Errors a client acts on.
    try:
        await jsm.stream_info(f"MISSING{tag}")
        raise AssertionError("a missing stream was found")
    except NotFoundError as e:
        assert e.err_code == 10059, e
    try:
        await js.publish(f"nowhere{tag}.x", b"x")
        raise AssertionError("a publish no stream captures was acked")
    except NoStreamResponseError:
        pass

    assert await jsm.delete_stream(name)
    try:
        await jsm.stream_info(name)
        raise AssertionError("a deleted stream was found")
    except NotFoundError:
        pass


async def dedup(js, jsm, tag: str) -> None:
    name = f"DED{tag}"
    await jsm.add_stream(name=name, subjects=[f"ded{tag}.>"])
    first = await js.publish(f"ded{tag}.a", b"1", headers={"Nats-Msg-Id": "m1"})
    second = await js.publish(f"ded{tag}.a", b"1", headers={"Nats-Msg-Id": "m1"})
    assert first.seq == 1 and not first.duplicate, first
    assert second.seq == 1 and second.duplicate, second
    third = await js.publish(f"ded{tag}.a", b"2", headers={"Nats-Msg-Id": "m2"})
    assert third.seq == 2, third
    info = await jsm.stream_info(name)
    assert info.state.messages == 2, info.state
    await jsm.delete_stream(name)


async def expectations(js, jsm, tag: str) -> None:
    name = f"EXP{tag}"
    await jsm.add_stream(name=name, subjects=[f"exp{tag}.>"])
    await js.publish(f"exp{tag}.a", b"1")
    try:
        await js.publish(f"exp{tag}.a", b"2", stream="OTHER")
        raise AssertionError("a publish expecting another stream was stored")
    except APIError as e:
        assert e.err_code == 10060, e
    try:
        await js.publish(f"exp{tag}.a", b"2", headers={"Nats-Expected-Last-Sequence": "5"})
        raise AssertionError("a publish with a wrong last sequence was stored")
    except APIError as e:
        assert e.err_code == 10071, e
    ack = await js.publish(f"exp{tag}.a", b"2", headers={"Nats-Expected-Last-Sequence": "1"})
    assert ack.seq == 2, ack
    ack = await js.publish(
        f"exp{tag}.b", b"3", headers={"Nats-Expected-Last-Subject-Sequence": "0"}
    )
    assert ack.seq == 3, ack
    try:
        await js.publish(f"exp{tag}.b", b"4", headers={"Nats-Expected-Last-Subject-Sequence": "0"})
        raise AssertionError("a publish with a wrong last subject sequence was stored")
    except APIError as e:
        assert e.err_code == 10071, e
    info = await jsm.stream_info(name)
    assert info.state.messages == 3, info.state
    await jsm.delete_stream(name)


async def messages(js, jsm, tag: str) -> None:
    name = f"MSG{tag}"
    await jsm.add_stream(name=name, subjects=[f"msg{tag}.>"])
    await js.publish(f"msg{tag}.a", b"first")
    await js.publish(f"msg{tag}.b", b"second", headers={"Trace": "7"})
    await js.publish(f"msg{tag}.c", b"")
    first = await jsm.get_msg(name, 1)
    assert (first.subject, first.seq, first.data) == (f"msg{tag}.a", 1, b"first"), first
    second = await jsm.get_msg(name, 2)
    assert second.data == b"second" and second.headers.get("Trace") == "7", second
    third = await jsm.get_msg(name, 3)
    assert third.subject == f"msg{tag}.c" and not third.data, third
    try:
        await jsm.get_msg(name, 9)
        raise AssertionError("a message past the end was found")
    except NotFoundError as e:
        assert e.err_code == 10037, e
    await js.publish(f"msg{tag}.a", b"again")
    last = await jsm.get_last_msg(name, f"msg{tag}.a")
    assert (last.seq, last.data) == (4, b"again"), last
    try:
        await jsm.get_last_msg(name, f"msg{tag}.none")
        raise AssertionError("a subject with no message had a last one")
    except NotFoundError as e:
        assert e.err_code == 10037, e
    await jsm.delete_stream(name)


async def purge(js, jsm, tag: str) -> None:
    name = f"PUR{tag}"
    await jsm.add_stream(name=name, subjects=[f"pur{tag}.>"])
    for i in range(10):
        await js.publish(f"pur{tag}.x", str(i).encode())
    # Below a sequence, then all but the newest, then everything.
    await jsm.purge_stream(name, seq=4)
    info = await jsm.stream_info(name)
    assert (info.state.messages, info.state.first_seq, info.state.last_seq) == (7, 4, 10), info.state
    await jsm.purge_stream(name, keep=2)
    info = await jsm.stream_info(name)
    assert (info.state.messages, info.state.first_seq) == (2, 9), info.state
    await jsm.purge_stream(name)
    info = await jsm.stream_info(name)
    assert (info.state.messages, info.state.first_seq, info.state.last_seq) == (0, 11, 10), info.state
    ack = await js.publish(f"pur{tag}.x", b"after")
    assert ack.seq == 11, ack
    await jsm.delete_stream(name)


async def limits(js, jsm, tag: str) -> None:
    # discard old: the oldest go past max_msgs.
    name = f"LIM{tag}"
    await jsm.add_stream(name=name, subjects=[f"lim{tag}.>"], max_msgs=3)
    for i in range(5):
        await js.publish(f"lim{tag}.x", str(i).encode())
    info = await jsm.stream_info(name)
    assert (info.state.messages, info.state.first_seq, info.state.last_seq) == (3, 3, 5), info.state
    await jsm.delete_stream(name)
    # discard new: the new are refused past max_msgs; too large a message is refused.
    name = f"LIN{tag}"
    await jsm.add_stream(
        StreamConfig(name=name, subjects=[f"lin{tag}.>"], max_msgs=2, discard="new", max_msg_size=16)
    )
    await js.publish(f"lin{tag}.x", b"1")
    await js.publish(f"lin{tag}.x", b"2")
    try:
        await js.publish(f"lin{tag}.x", b"3")
        raise AssertionError("a publish past max_msgs was stored with discard new")
    except APIError as e:
        assert e.err_code == 10077, e
    await jsm.purge_stream(name)
    try:
        await js.publish(f"lin{tag}.x", b"x" * 17)
        raise AssertionError("a message over max_msg_size was stored")
    except APIError as e:
        assert e.err_code == 10054, e
    info = await jsm.stream_info(name)
    assert info.state.messages == 0, info.state
    await jsm.delete_stream(name)


async def ages(js, jsm, tag: str) -> None:
    """max_age takes each message as it ages, not a whole file of them; a KV bucket's TTL too."""
    name = f"AGE{tag}"
    await jsm.add_stream(name=name, subjects=[f"age{tag}.>"], max_age=1.5)
    for i in range(3):
        await js.publish(f"age{tag}.x", str(i).encode())
    await asyncio.sleep(1.0)
    for i in range(3, 5):
        await js.publish(f"age{tag}.x", str(i).encode())
    state = None
    for _ in range(60):
        state = (await jsm.stream_info(name)).state
        if state.messages <= 2:
            break
        await asyncio.sleep(0.05)
    assert (state.messages, state.first_seq) == (2, 4), state
    first = await jsm.get_msg(name, 4)
    assert first.data == b"3", first
    try:
        await jsm.get_msg(name, 1)
        raise AssertionError("an expired message was read")
    except NotFoundError as e:
        assert e.err_code == 10037, e
    await jsm.delete_stream(name)
    kv = await js.create_key_value(bucket=f"ttl{tag}", ttl=1.5)
    await kv.put("k", b"v")
    assert (await kv.get("k")).value == b"v"
    gone = False
    for _ in range(80):
        try:
            await kv.get("k")
        except KeyNotFoundError:
            gone = True
            break
        await asyncio.sleep(0.05)
    assert gone, "a key outlived its bucket's ttl"
    await js.delete_key_value(f"ttl{tag}")


async def deletes(js, jsm, tag: str) -> None:
    # A limit per subject keeps each subject's newest messages.
    name = f"DEL{tag}"
    await jsm.add_stream(name=name, subjects=[f"del{tag}.>"], max_msgs_per_subject=2)
    for i in range(3):
        await js.publish(f"del{tag}.k", f"k{i}".encode())
    await js.publish(f"del{tag}.j", b"j0")
    info = await jsm.stream_info(name)
    assert (info.state.messages, info.state.first_seq, info.state.last_seq) == (3, 2, 4), info.state
    try:
        await jsm.get_msg(name, 1)
        raise AssertionError("an evicted revision was found")
    except NotFoundError:
        pass
    # One message deleted from the middle.
    assert await jsm.delete_msg(name, 3)
    info = await jsm.stream_info(name)
    assert info.state.messages == 2, info.state
    try:
        await jsm.get_msg(name, 3)
        raise AssertionError("a deleted message was found")
    except NotFoundError:
        pass
    last = await jsm.get_last_msg(name, f"del{tag}.k")
    assert last.seq == 2, last
    try:
        await jsm.delete_msg(name, 3)
        raise AssertionError("a message was deleted twice")
    except APIError:
        pass
    # A purge by subject keeps the other subjects.
    await jsm.purge_stream(name, subject=f"del{tag}.k")
    info = await jsm.stream_info(name)
    assert info.state.messages == 1, info.state
    last = await jsm.get_last_msg(name, f"del{tag}.j")
    assert last.data == b"j0", last
    await jsm.delete_stream(name)

    # Rollups, where allowed; deletes refused where denied.
    name = f"ROL{tag}"
    await jsm.add_stream(
        StreamConfig(name=name, subjects=[f"rol{tag}.>"], allow_rollup_hdrs=True, deny_delete=True)
    )
    for i in range(3):
        await js.publish(f"rol{tag}.x", str(i).encode())
    await js.publish(f"rol{tag}.y", b"y")
    await js.publish(f"rol{tag}.x", b"all of x", headers={"Nats-Rollup": "sub"})
    info = await jsm.stream_info(name)
    assert info.state.messages == 2, info.state
    try:
        await jsm.delete_msg(name, 4)
        raise AssertionError("a delete was allowed on a stream that denies it")
    except APIError as e:
        assert e.err_code == 10057, e
    await js.publish(f"rol{tag}.z", b"everything", headers={"Nats-Rollup": "all"})
    info = await jsm.stream_info(name)
    assert (info.state.messages, info.state.first_seq) == (1, 6), info.state
    await jsm.delete_stream(name)
    name = f"NOR{tag}"
    await jsm.add_stream(name=name, subjects=[f"nor{tag}.>"])
    try:
        await js.publish(f"nor{tag}.x", b"x", headers={"Nats-Rollup": "sub"})
        raise AssertionError("a rollup was stored on a stream that does not allow them")
    except APIError as e:
        assert e.err_code == 10111, e
    await jsm.delete_stream(name)


async def main(url: str, sections: list) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    jsm = nc.jsm()
    tag = str(int(time.time() * 1000) % 1000000)
    for section in sections:
        if section == "account":
            await account(js, jsm)
        elif section == "streams":
            await streams(js, jsm, tag)
        elif section == "dedup":
            await dedup(js, jsm, tag)
        elif section == "ages":
            await ages(js, jsm, tag)
        elif section == "deletes":
            await deletes(js, jsm, tag)
        elif section == "purge":
            await purge(js, jsm, tag)
        elif section == "limits":
            await limits(js, jsm, tag)
        elif section == "messages":
            await messages(js, jsm, tag)
        elif section == "expectations":
            await expectations(js, jsm, tag)
        else:
            raise SystemExit(f"unknown section {section}")
    await nc.close()
    print("ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
