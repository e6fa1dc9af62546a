"""IggyProducer, IggyConsumer, the partitioners and the client MetricsCollector against the real
server: offsets returned per send, payload kinds and headers, background batching, backpressure
and failure reporting, every polling strategy and auto-commit mode, graceful close, the same key
placement as the official SDK's producer, and a consumer group rebalancing under load with no
committed message lost or repeated.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from iggy_fast import _wire
from iggy_fast.client import IggyClient, PollingStrategy
from iggy_fast.client.consumer import AutoCommit, IggyConsumer
from iggy_fast.client.metrics import MetricsCollector
from iggy_fast.client.partitioners import Balanced, Custom, MessageKey, partition_for_key
from iggy_fast.client.producer import IggyProducer
from iggy_fast.protocol.errors import (PartitionNotFound, ProducerBufferFull, ProducerClosed,
                                       TooBigMessagePayload)


def url(server) -> str:
    return f"iggy://iggy:iggy@{server.address}"


@pytest.fixture
async def ours(server):
    async with IggyClient(url(server)) as client:
        yield client


async def topic(client, unique, partitions: int = 1) -> str:
    stream = unique("s")
    await client.create_stream(stream)
    await client.create_topic(stream, "t", partitions_count=partitions)
    return stream


async def read_all(client, stream, partition_id) -> list:
    polled = await client.poll_messages(stream, "t", partition_id=partition_id,
                                        polling_strategy=PollingStrategy.First(), count=100_000)
    return list(polled)


# -- the C helpers under the producer and consumer ---------------------------------------------

def test_encode_batch_matches_build_batch_and_validates():
    payloads = [b"ab", "héllo", memoryview(b"xyz"), bytearray(b"q")]
    batch = _wire.encode_batch(payloads, 123, ids=[1, 2, 3, 2 ** 100])
    reference = _wire.build_batch([(1, b"ab", b"", 0), (2, "héllo".encode(), b"", 0),
                                   (3, b"xyz", b"", 0), (2 ** 100, b"q", b"", 0)], 123)
    assert batch == reference
    assert _wire.validate_batch(batch, 4) == 0
    uuids = _wire.encode_batch([b"a", b"b"], 1, ids=bytes(range(32)))
    for frame in (256, 256 + 49):
        ident = int.from_bytes(uuids[frame + 8:frame + 24], "little")
        assert (ident >> 76) & 0xF == 4 and (ident >> 62) & 0x3 == 2     # UUIDv4 bits
    with pytest.raises(TooBigMessagePayload):
        _wire.encode_batch([bytes(64_000_001)], 1)
    with pytest.raises(ValueError):
        _wire.encode_batch([b"a"], 1, ids=b"short")


def test_poll_summary_checks_bounds():
    batch = _wire.encode_batch([b"one", b"two"], 5)
    body = bytes(16) + bytes(batch)
    assert _wire.poll_summary(body) == (0, 0, 2, 0, 1, 6)
    assert [bytes(p) for p in _wire.poll_payloads(body)] == [b"one", b"two"]
    assert _wire.poll_summary(bytes(16)) == (0, 0, 0, -1, -1, 0)
    with pytest.raises(Exception, match="past"):
        _wire.poll_summary(body[:-1])


def test_partitioners():
    # PROTOCOL.md §7.6's verified example: XXH32(b"user-123") = 214559884 -> partition 1 of 3.
    assert _wire.xxh32(b"user-123") == 214559884
    assert MessageKey().partition("user-123", 3) == 1 == partition_for_key(b"user-123", 3)
    balanced = Balanced()
    assert [balanced.partition(None, 3) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert Custom(lambda key: len(key)).partition("ab", 4) == 2
    with pytest.raises(PartitionNotFound):
        Custom(lambda key: 9).partition("ab", 4)
    with pytest.raises(ValueError):
        MessageKey().partition("", 3)


# -- producer ----------------------------------------------------------------------------------

async def test_direct_send_returns_offsets_and_splits(ours, unique):
    stream = await topic(ours, unique)
    metrics = MetricsCollector()
    producer = IggyProducer(ours, stream, "t", batch_length=1000, batch_bytes=10_000,
                            metrics=metrics)
    first = await producer.send([b"x" * 10] * 2500)          # 3 batches by count
    assert first.partition_id == 0 and first.offsets == list(range(2500))
    assert [len(r) for r in first.ranges] == [1000, 1000, 500]
    big = await producer.send([b"y" * 3000] * 7)              # batch_bytes: 3 + 3 + 1
    assert [len(r) for r in big.ranges] == [3, 3, 1] and big.first_offset == 2500
    one = await producer.send("one more")
    assert one.offsets == [2507]
    snap = metrics.snapshot()["producer"]
    assert snap.messages_sent == 2508 and snap.requests == 7 and snap.errors == 0
    assert snap.bytes_sent == 25_000 + 21_000 + len("one more")


async def test_payload_kinds_and_headers_round_trip(ours, unique):
    stream = await topic(ours, unique)
    producer = IggyProducer(ours, stream, "t")
    await producer.send([b"bytes", "strïng", memoryview(b"view"), bytearray(b"array")],
                        headers={"kind": "test", "n": 7})
    messages = await read_all(ours, stream, 0)
    assert [bytes(m.payload) for m in messages] == [b"bytes", "strïng".encode(), b"view",
                                                    b"array"]
    assert messages[0].headers == {b"kind": b"test", b"n": (7).to_bytes(8, "little")}
    assert len({m.id for m in messages}) == 4 and all(m.id for m in messages)


async def test_background_batches_by_linger_and_count(ours, unique):
    stream = await topic(ours, unique, partitions=2)
    metrics = MetricsCollector()
    producer = IggyProducer(ours, stream, "t", background=True, batch_length=50,
                            linger=0.05, metrics=metrics)
    futures = [await producer.send(f"m{i}", partition=i % 2) for i in range(120)]
    await producer.flush()
    delivered = [f.result() for f in futures]
    for partition_id in (0, 1):
        offsets = [d.offsets[0] for d in delivered if d.partition_id == partition_id]
        assert offsets == list(range(60))                     # in order, none lost
    # 60 per partition in batches of at most 50: at least 4 requests, far fewer than 120.
    assert 4 <= metrics.snapshot()["producer"].requests <= 10
    await producer.close()
    with pytest.raises(ProducerClosed):
        await producer.send(b"late")


async def test_background_backpressure(ours, unique):
    stream = await topic(ours, unique)
    fail = IggyProducer(ours, stream, "t", background=True, linger=30, batch_length=1000,
                        max_buffered_messages=10, backpressure="fail")
    await fail.send([b"a"] * 10)
    with pytest.raises(ProducerBufferFull):
        await fail.send(b"one too many")
    await fail.flush()                                        # room again
    fits = await fail.send(b"fits")
    await fail.flush()
    assert fits.result().offsets == [10]
    blocking = IggyProducer(ours, stream, "t", background=True, linger=30,
                            max_buffered_messages=10, backpressure="block", block_timeout=0.3)
    await blocking.send([b"a"] * 10)
    started = time.monotonic()
    with pytest.raises(ProducerBufferFull, match="0.3 s"):
        await blocking.send(b"b")
    assert time.monotonic() - started >= 0.25
    # Unbounded block: the send waits until a flush makes room, then goes through.
    waiting = IggyProducer(ours, stream, "t", background=True, linger=0.2,
                           max_buffered_messages=10, backpressure="block")
    await waiting.send([b"a"] * 10)
    late = await asyncio.wait_for(waiting.send(b"c"), 10)     # the linger flush frees room
    await waiting.flush()
    assert len(late.result()) == 1
    await fail.close()
    await blocking.close()


async def test_background_failure_goes_to_callback_and_metrics(ours, unique):
    stream = await topic(ours, unique)
    metrics = MetricsCollector()
    failures = []
    producer = IggyProducer(ours, stream, "t", background=True, linger=0.01, metrics=metrics,
                            on_error=lambda exc, p, n: failures.append((type(exc), p, n)))
    future = await producer.send([b"x"] * 3, partition=7)    # no partition 7
    ok = await producer.send(b"fine")
    await producer.flush()
    assert failures == [(PartitionNotFound, 7, 3)]
    with pytest.raises(PartitionNotFound):
        future.result()
    assert ok.result().offsets == [0]
    assert metrics.snapshot()["producer"].errors == 1


async def test_in_flight_batches_are_bounded(ours, unique):
    stream = await topic(ours, unique)

    class Counting:
        """The real client, counting its concurrent send_batch calls."""
        def __init__(self, client):
            self.client, self.now, self.most = client, 0, 0

        def __getattr__(self, name):
            return getattr(self.client, name)

        async def send_batch(self, *args):
            self.now += 1
            self.most = max(self.most, self.now)
            try:
                return await self.client.send_batch(*args)
            finally:
                self.now -= 1

    counting = Counting(ours)
    producer = IggyProducer(counting, stream, "t", background=True, batch_length=10,
                            linger=0, max_in_flight=2)
    for _ in range(40):
        await producer.send([b"z"] * 10)
    await producer.flush()
    assert counting.most == 2
    direct = IggyProducer(counting, stream, "t", batch_length=10, max_in_flight=3)
    counting.most = 0
    await direct.send([b"z"] * 200)
    assert counting.most == 3


async def test_same_partitions_as_the_official_sdk(server, ours, unique, client):
    """Our producer and apache-iggy's producer place every key on the same partition."""
    from apache_iggy import Partitioning, SendMessage
    stream = await topic(ours, unique, partitions=5)
    keys = [f"key-{i}" for i in range(40)] + ["user-123", "ü", "x" * 255]
    official = await client.producer(stream, "t", create_stream_if_not_exists=False,
                                     create_topic_if_not_exists=False)
    for key in keys:
        await official.send_with_partitioning([SendMessage(f"{key}|official")],
                                              Partitioning.messages_key(key))
    await official.shutdown()
    producer = IggyProducer(ours, stream, "t", partitioning=MessageKey())
    ours_placed = {key: (await producer.send(f"{key}|ours", key=key)).partition_id
                   for key in keys}
    placed = {"official": {}, "ours": {}}
    for partition_id in range(5):
        for message in await read_all(ours, stream, partition_id):
            key, who = bytes(message.payload).decode().rsplit("|", 1)
            placed[who][key] = partition_id
    assert placed["official"] == placed["ours"] == ours_placed
    assert len(placed["official"]) == len(keys)
    assert len(set(ours_placed.values())) == 5                # the keys do spread


# -- consumer ----------------------------------------------------------------------------------

async def filled(client, unique, partitions=1, per_partition=100) -> str:
    stream = await topic(client, unique, partitions)
    producer = IggyProducer(client, stream, "t")
    for p in range(partitions):
        await producer.send([f"{p}:{i}" for i in range(per_partition)], partition=p)
    return stream


async def offsets_read(consumer, idle=0.3) -> list[int]:
    return [m.offset async for m in consumer.messages(idle_timeout=idle)]


async def test_polling_strategies(ours, unique):
    stream = await filled(ours, unique)
    first = IggyConsumer(ours, stream, "t", consumer_id=1, strategy=PollingStrategy.First(),
                         batch_length=30, auto_commit=AutoCommit.never())
    assert await offsets_read(first) == list(range(100))
    at = IggyConsumer(ours, stream, "t", consumer_id=2, strategy=PollingStrategy.Offset(42),
                      auto_commit=AutoCommit.never())
    assert await offsets_read(at) == list(range(42, 100))
    last = IggyConsumer(ours, stream, "t", consumer_id=3, strategy=PollingStrategy.Last(),
                        batch_length=10, auto_commit=AutoCommit.never())
    assert await offsets_read(last) == list(range(90, 100))
    polled = await ours.poll_messages(stream, "t", partition_id=0,
                                      polling_strategy=PollingStrategy.First(), count=1)
    stamp = next(iter(polled)).timestamp
    by_time = IggyConsumer(ours, stream, "t", consumer_id=4,
                           strategy=PollingStrategy.Timestamp(stamp),
                           auto_commit=AutoCommit.never())
    assert await offsets_read(by_time) == list(range(100))
    await ours.store_consumer_offset(stream, "t", 59, 0, consumer=5)
    nxt = IggyConsumer(ours, stream, "t", consumer_id=5, auto_commit=AutoCommit.never())
    assert await offsets_read(nxt) == list(range(60, 100))


async def stored(client, stream, consumer, partition_id=0):
    offset = await client.get_consumer_offset(stream, "t", partition_id, consumer=consumer)
    return None if offset is None else offset.stored_offset


async def test_auto_commit_modes(ours, unique):
    stream = await filled(ours, unique)
    never = IggyConsumer(ours, stream, "t", consumer_id=1, strategy=PollingStrategy.First(),
                         batch_length=10, auto_commit=AutoCommit.never())
    async for batch in never.batches(idle_timeout=0.2):
        pass
    assert await stored(ours, stream, 1) is None
    await never.close()                                       # close commits what was consumed
    assert await stored(ours, stream, 1) == 99

    after_poll = IggyConsumer(ours, stream, "t", consumer_id=2, batch_length=10,
                              strategy=PollingStrategy.First(),
                              auto_commit=AutoCommit.after_poll())
    async for batch in after_poll.batches():
        assert await stored(ours, stream, 2) == batch.offsets[-1]   # stored by the poll
        break

    every = IggyConsumer(ours, stream, "t", consumer_id=3, batch_length=10,
                         strategy=PollingStrategy.First(), auto_commit=AutoCommit.every(25))
    seen = []
    async for batch in every.batches():
        seen.append(await stored(ours, stream, 3))
        if len(seen) == 6:
            break
    # Consumed 10, 20, 30 (commit: 29), 40, 50, 60 (commit at 30 past: 59)...
    assert seen == [None, None, None, 29, 29, 29]

    interval = IggyConsumer(ours, stream, "t", consumer_id=4, batch_length=10,
                            strategy=PollingStrategy.First(),
                            auto_commit=AutoCommit.interval(0.2))
    async for batch in interval.batches():
        if batch.offsets[0] == 30:
            await asyncio.sleep(0.3)                          # the interval passes here
        if batch.offsets[0] == 40:
            assert await stored(ours, stream, 4) == 39
            break


async def test_close_commits_and_next_resumes_exactly(ours, unique):
    stream = await filled(ours, unique, per_partition=50)
    first = IggyConsumer(ours, stream, "t", consumer_id=9, batch_length=7,
                         auto_commit=AutoCommit.never())
    got = []
    async for message in first:
        got.append(message.offset)
        if message.offset == 20:
            break
    await first.close()
    second = IggyConsumer(ours, stream, "t", consumer_id=9, auto_commit=AutoCommit.never())
    rest = await offsets_read(second)
    assert got == list(range(21)) and rest == list(range(21, 50))


async def test_group_members_share_partitions(server, ours, unique):
    stream = await filled(ours, unique, partitions=4, per_partition=50)
    async with IggyClient(url(server)) as a, IggyClient(url(server)) as b:
        ca = await IggyConsumer(a, stream, "t", group="g").init()
        cb = await IggyConsumer(b, stream, "t", group="g").init()
        payloads = {}
        for name, consumer in (("a", ca), ("b", cb)):
            payloads[name] = [bytes(m.payload) async for m in consumer.messages(0.3)]
        # Each read the two partitions it was dealt once both had joined.
        assert len(payloads["a"]) == len(payloads["b"]) == 100
        assert sorted(payloads["a"] + payloads["b"]) == sorted(
            f"{p}:{i}".encode() for p in range(4) for i in range(50))
        for consumer in (ca, cb):
            await consumer.close()


@pytest.mark.timeout(120)
async def test_rebalancing_under_load_loses_and_repeats_no_committed_message(server, ours,
                                                                              unique):
    """Three members join and leave while a producer writes to 6 partitions. Every member
    commits after each batch it handles; the test keeps, for every partition, the highest
    offset whose commit the server accepted, and checks at each delivery that no committed
    message comes again; at the end every produced message was delivered."""
    partitions = 6
    stream = await topic(ours, unique, partitions)
    committed = {p: -1 for p in range(partitions)}
    delivered: dict[int, set] = {p: set() for p in range(partitions)}
    readers: dict[int, set] = {p: set() for p in range(partitions)}
    repeated_committed = []
    stop_producing = asyncio.Event()
    produced = {}

    async def produce():
        producer = IggyProducer(ours, stream, "t")
        i = 0
        while not stop_producing.is_set():
            await producer.send([f"m{i}-{j}" for j in range(20)])
            i += 1
            await asyncio.sleep(0.002)
        topic_now = await ours.get_topic(stream, "t")
        produced.update({p.id: p.messages_count for p in topic_now.partitions})

    async def member(name: str, start: float, stop: float | None):
        await asyncio.sleep(start)
        async with IggyClient(url(server)) as client:
            consumer = IggyConsumer(client, stream, "t", group="rebalance", batch_length=37,
                                    auto_commit=AutoCommit.never(), poll_interval=0.005)
            await consumer.init()
            deadline = None if stop is None else time.monotonic() + stop - start
            async for batch in consumer.batches(idle_timeout=None if stop else 1.5):
                p = batch.partition_id
                offsets = batch.offsets
                if offsets[0] <= committed[p]:
                    repeated_committed.append((name, p, offsets[0], committed[p]))
                delivered[p].update(offsets)
                readers[p].add(name)
                try:
                    await consumer.commit()
                except Exception:
                    pass                        # moved meanwhile: not committed, may repeat
                for q, offset in consumer.committed.items():
                    committed[q] = max(committed[q], offset)
                if deadline is not None and time.monotonic() > deadline:
                    break
                if stop is None and stop_producing.is_set() and produced and all(
                        len(delivered[q]) >= produced[q] for q in range(partitions)):
                    break
            await consumer.close()

    async def run_producer():
        await asyncio.sleep(3.0)
        stop_producing.set()

    await asyncio.gather(produce(), run_producer(),
                         member("one", 0.0, 1.6), member("two", 0.4, 2.4),
                         member("three", 0.8, None))
    assert not repeated_committed, repeated_committed[:5]
    # The assignment really moved: partitions were read by more than one member.
    assert sum(len(names) > 1 for names in readers.values()) >= 3, readers
    assert sum(produced.values()) > 1000
    for p in range(partitions):
        assert delivered[p] == set(range(produced[p])), f"partition {p}: lost messages"


async def test_consumer_metrics(ours, unique):
    stream = await filled(ours, unique, per_partition=30)
    polled = await ours.poll_messages(stream, "t", partition_id=0, count=30,
                                      polling_strategy=PollingStrategy.First())
    assert [bytes(p) for p in polled.payloads()] == [f"0:{i}".encode() for i in range(30)]
    metrics = MetricsCollector()
    consumer = IggyConsumer(ours, stream, "t", consumer_id=1, batch_length=10, metrics=metrics,
                            strategy=PollingStrategy.First())
    assert len(await offsets_read(consumer)) == 30
    snap = metrics.snapshot()["consumer"]
    assert snap.messages_received == 30 and snap.bytes_received == sum(
        len(f"0:{i}") for i in range(30))
    assert snap.requests >= 3 and snap.latency_p50_ms > 0 and snap.errors == 0
    assert "consumer: received" in metrics.report()
