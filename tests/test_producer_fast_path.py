"""The producer's data path against the real server: batches encoded by C into reused buffers
(`_wire.payload_spans`, `_wire.encode_parts`), background sends merged into one batch without
being joined, and TcpLink's one-sendmsg writes (with the remainder through the transport when
the socket does not take a whole request) and its reads through a scratch buffer (small
replies in one read, several replies in one read, a large reply finished in its own buffer).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest

from iggy_fast import _wire
from iggy_fast.client import IggyClient, PollingStrategy
from iggy_fast.client.metrics import MetricsCollector
from iggy_fast.client.producer import IggyProducer
from iggy_fast.protocol.errors import InvalidMessagesCount, TooBigMessagePayload


@pytest.fixture
async def ours(server):
    async with IggyClient(f"iggy://iggy:iggy@{server.address}") as client:
        yield client


async def topic(client, unique, partitions: int = 1) -> str:
    stream = unique("s")
    await client.create_stream(stream)
    await client.create_topic(stream, "t", partitions_count=partitions)
    return stream


async def read_all(client, stream, partition_id=0) -> list:
    out = []
    while True:
        polled = await client.poll_messages(
            stream, "t", partition_id=partition_id, count=10_000,
            polling_strategy=PollingStrategy.Offset(len(out)))
        got = list(polled)
        if not got:
            return out
        out += got


def ids_of(batch, size: int) -> list[int]:
    """The message ids of a batch, walking its frames."""
    out, pos = [], 256
    while pos < size:
        out.append(int.from_bytes(batch[pos + 8:pos + 24], "little"))
        pos += 48 + int.from_bytes(batch[pos + 32:pos + 36], "little") \
            + int.from_bytes(batch[pos + 36:pos + 40], "little")
    return out


# -- the C helpers ------------------------------------------------------------------------------

def test_encode_parts_matches_encode_batch_and_reuses_its_buffer():
    payloads = [b"ab", "héllo", memoryview(b"xyz"), bytearray(b"q"), b"z" * 300]
    block = b"\x02\x01\x00\x00\x00k\x02\x01\x00\x00\x00v"
    reference = _wire.encode_batch(payloads, 77, block)
    # Two parts of one list give the same batch as the whole list in one call.
    buf, size = _wire.encode_parts(None, [(payloads, 0, 2, block), (payloads, 2, 5, block)], 77)
    assert bytes(buf[:size]) == bytes(reference) and size == len(reference)
    # A buffer big enough is written in place (and nothing past the batch); a small one is not.
    big = bytearray(b"\xee" * (size + 100))
    same, size2 = _wire.encode_parts(big, [(payloads, 0, 5, block)], 77)
    assert same is big and size2 == size and bytes(big[:size]) == bytes(reference)
    assert big[size:] == b"\xee" * 100
    small = bytearray(10)
    other, _ = _wire.encode_parts(small, [(payloads, 0, 5, block)], 77)
    assert other is not small and small == bytearray(10)
    # Parts with their own headers (or none) keep them, message by message.
    mixed, n = _wire.encode_parts(None, [(payloads, 0, 1, None), (payloads, 1, 2, block)], 5)
    assert bytes(mixed[:n]) == bytes(_wire.encode_batch(payloads[:2], 5, [None, block]))
    assert _wire.validate_batch(memoryview(mixed)[:n], 2) == 0


def test_encode_parts_ids_are_distinct_uuid4s():
    payloads = [b"p"] * 2000
    buf, size = _wire.encode_parts(None, [(payloads, 0, 2000, None)], 1, os.urandom(32))
    assert _wire.validate_batch(memoryview(buf)[:size], 2000) == 0
    ids = ids_of(buf, size)
    assert len(set(ids)) == 2000
    assert all((i >> 76) & 0xF == 4 and (i >> 62) & 0x3 == 2 for i in ids)   # UUIDv4 bits
    again, size = _wire.encode_parts(None, [(payloads, 0, 2000, None)], 1, os.urandom(32))
    assert not set(ids) & set(ids_of(again, size))           # another seed, other ids
    zero, size = _wire.encode_parts(None, [(payloads, 0, 3, None)], 1)
    assert ids_of(zero, size) == [0, 0, 0]
    with pytest.raises(ValueError):
        _wire.encode_parts(None, [(payloads, 0, 1, None)], 1, b"short")


def test_encode_parts_refuses_bad_input():
    with pytest.raises(InvalidMessagesCount):
        _wire.encode_parts(None, [([b"a"], 0, 0, None)], 1)
    with pytest.raises(TooBigMessagePayload):
        _wire.encode_parts(None, [([bytes(64_000_001)], 0, 1, None)], 1)
    with pytest.raises(ValueError):
        _wire.encode_parts(None, [([b"a"], 0, 2, None)], 1)      # past the list
    with pytest.raises(TypeError):
        _wire.encode_parts(None, [([1], 0, 1, None)], 1)          # not a buffer


def test_payload_spans_cut_by_count_and_bytes():
    payloads = [b"x" * 10] * 25
    assert _wire.payload_spans(payloads, 0, 25, 10, 10_000) == [
        (0, 10, 100), (10, 20, 100), (20, 25, 50)]
    assert _wire.payload_spans(payloads, 5, 25, 100, 45) == [
        (5, 9, 40), (9, 13, 40), (13, 17, 40), (17, 21, 40), (21, 25, 40)]
    # A payload bigger than batch_bytes travels alone; str counts its UTF-8 bytes.
    assert _wire.payload_spans([b"a", b"b" * 50, "é" * 3], 0, 3, 10, 20) == [
        (0, 1, 1), (1, 2, 50), (2, 3, 6)]
    assert _wire.payload_spans([], 0, 0, 10, 10) == []


# -- the producer -------------------------------------------------------------------------------

async def test_reused_buffers_never_mix_batches(ours, unique):
    """Many batches in flight from reused buffers, direct and background: every payload is
    stored as sent, in order."""
    stream = await topic(ours, unique)
    direct = IggyProducer(ours, stream, "t", batch_length=100, max_in_flight=3)
    sent = []
    for round_ in range(5):
        payloads = [f"d{round_}-{i}-".encode() * (1 + i % 7) for i in range(350)]
        sent += payloads
        delivered = await direct.send(payloads)
        assert delivered.offsets == list(range(len(sent) - 350, len(sent)))
    background = IggyProducer(ours, stream, "t", background=True, batch_length=64,
                              linger=0.001, max_in_flight=4)
    futures = []
    for round_ in range(40):
        payloads = [os.urandom(1 + (round_ * 31 + i) % 200) for i in range(50)]
        sent += payloads
        futures.append(await background.send(payloads))
    await background.flush()
    assert [f.result().first_offset for f in futures] == list(range(1750, 3750, 50))
    assert [bytes(m.payload) for m in await read_all(ours, stream)] == sent


async def test_background_merges_sends_into_one_batch(ours, unique):
    stream = await topic(ours, unique)
    metrics = MetricsCollector()
    producer = IggyProducer(ours, stream, "t", background=True, batch_length=1000,
                            linger=30, metrics=metrics)
    a = await producer.send([b"a1", b"a2"], headers={"who": "a"})
    b = await producer.send("b1")
    c = await producer.send([b"c1", b"c2", b"c3"], headers={"who": "c"})
    await producer.flush()
    assert metrics.snapshot()["producer"].requests == 1       # three sends, one batch
    assert (a.result().offsets, b.result().offsets, c.result().offsets) == (
        [0, 1], [2], [3, 4, 5])
    stored = await read_all(ours, stream)
    assert [bytes(m.payload) for m in stored] == [b"a1", b"a2", b"b1", b"c1", b"c2", b"c3"]
    assert [m.headers or None for m in stored] == [{b"who": b"a"}] * 2 + [None] + \
        [{b"who": b"c"}] * 3
    assert len({m.id for m in stored}) == 6


async def test_background_batches_respect_batch_bytes(ours, unique):
    stream = await topic(ours, unique)
    metrics = MetricsCollector()
    producer = IggyProducer(ours, stream, "t", background=True, batch_length=10_000,
                            batch_bytes=1000, linger=30, metrics=metrics)
    for _ in range(10):
        await producer.send([b"x" * 100] * 4)                 # 400 bytes a send
    await producer.flush()
    # 4000 payload bytes in batches of at most 1000 (two whole sends each): 5 requests.
    assert metrics.snapshot()["producer"].requests == 5
    assert len(await read_all(ours, stream)) == 40


async def test_empty_send_is_refused(ours, unique):
    stream = await topic(ours, unique)
    for background in (False, True):
        producer = IggyProducer(ours, stream, "t", background=background)
        with pytest.raises(InvalidMessagesCount):
            await producer.send([])
        await producer.close()


# -- TcpLink ------------------------------------------------------------------------------------

async def test_requests_larger_than_the_socket_takes_arrive_whole_and_in_order(ours, unique):
    """A socket send buffer far smaller than the requests: each sendmsg takes part of a batch,
    the rest goes through the transport, and requests written meanwhile queue behind it."""
    stream = await topic(ours, unique)
    link = ours._link
    assert link.sock is not None
    link.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    producer = IggyProducer(ours, stream, "t", batch_length=1000, batch_bytes=4_000_000,
                            max_in_flight=4)
    payloads = [os.urandom(3000) for _ in range(1000)]      # 3 MB batches
    results = await asyncio.gather(*(producer.send(payloads) for _ in range(4)),
                                   ours.ping(), producer.send(b"small"))
    firsts = sorted(d.first_offset for d in results[:4])
    assert firsts == [0, 1000, 2000, 3000] and results[5].offsets == [4000]
    stored = await read_all(ours, stream)
    assert [bytes(m.payload) for m in stored] == payloads * 4 + [b"small"]


async def test_replies_small_many_and_large(ours, unique):
    stream = await topic(ours, unique)
    producer = IggyProducer(ours, stream, "t", batch_length=1000)
    payloads = [bytes([i % 251]) * 1000 for i in range(3000)]
    await producer.send(payloads)
    # Many small replies at once: several land in one read of the scratch buffer.
    answers = await asyncio.gather(*(ours.get_stream(stream) for _ in range(200)))
    assert all(a.name == stream for a in answers)
    # A reply of about 3 MB: its first 64 KiB come through the scratch, the rest straight
    # into its own buffer; then small replies again.
    polled = await ours.poll_messages(stream, "t", partition_id=0, count=3000,
                                      polling_strategy=PollingStrategy.First())
    assert [bytes(m.payload) for m in polled] == payloads
    started = time.monotonic()
    for _ in range(20):
        await ours.ping()
    assert time.monotonic() - started < 5
    # Interleaved: polls and sends in flight together.
    more = await asyncio.gather(*(ours.poll_messages(
        stream, "t", partition_id=0, count=1000,
        polling_strategy=PollingStrategy.Offset(1000 * k)) for k in range(3)),
        producer.send(b"last"))
    assert [len(list(p)) for p in more[:3]] == [1000, 1000, 1000]
    assert more[3].offsets == [3000]


@pytest.mark.parametrize("transport", ["tcp", "quic", "ws", "http"])
async def test_producer_over_every_transport(server, transport, unique):
    """Reused batch buffers handed as memoryviews to each transport: what is stored is what
    was sent, direct and background."""
    from iggy_fast.client import aio
    spec = aio.TRANSPORTS[transport].partition(":")[0]
    if __import__("importlib").util.find_spec(spec) is None:
        pytest.skip(f"no {transport} link in this build")
    port = {"tcp": server.tcp_port, "quic": server.quic_port, "ws": server.websocket_port,
            "http": server.http_port}[transport]
    async with IggyClient(f"iggy+{transport}://iggy:iggy@127.0.0.1:{port}") as client:
        stream = await topic(client, unique)
        sent = []
        direct = IggyProducer(client, stream, "t", batch_length=40)
        for k in range(3):
            payloads = [f"{transport}-{k}-{i}".encode() * 3 for i in range(100)]
            sent += payloads
            assert len(await direct.send(payloads)) == 100
        background = IggyProducer(client, stream, "t", background=True, batch_length=70,
                                  linger=0.001)
        for k in range(5):
            payloads = [os.urandom(10 + k) for _ in range(30)]
            sent += payloads
            await background.send(payloads)
        await background.close()
        assert [bytes(m.payload) for m in await read_all(client, stream)] == sent


def test_build_batch_plain_payloads_in_c_and_send_messages_as_before():
    from iggy_fast.client.types import SendMessage, build_batch
    payloads = [b"a", "é", memoryview(b"xyz"), bytearray(b"q")] * 50
    batch, count = build_batch(payloads)
    assert count == 200 and _wire.validate_batch(batch, 200) == 0
    ids = ids_of(batch, len(batch))
    assert len(set(ids)) == 200 and all((i >> 76) & 0xF == 4 for i in ids)
    mixed, count = build_batch([b"plain", SendMessage(b"own", None, 7)])
    assert count == 2 and ids_of(mixed, len(mixed))[1] == 7
    with pytest.raises(ValueError):
        build_batch([])
    with pytest.raises(TypeError):
        build_batch([b"ok", 5])
