"""A producer over the async IggyClient: batching, partitioning, a bounded background buffer.

Two modes.

* Direct (the default): `await producer.send(payloads, key=..., headers=...)` sends the
  caller's messages now, cut into batches of at most `batch_length` messages and about
  `batch_bytes` bytes, and returns the offsets the server gave them (a `Delivered`) or raises.
  The batches of one send are pipelined on the connection, at most `max_in_flight` at a time.
* Background (`background=True`): `await producer.send(...)` returns as soon as the messages
  are accepted into a bounded buffer, with a future of their `Delivered`. Messages waiting
  for one partition are sent together when `batch_length` messages or `batch_bytes` bytes
  are waiting, or `linger` seconds after the first of them arrived; at most `max_in_flight`
  batches are in flight. When the buffer (`max_buffered_messages`, `max_buffered_bytes`,
  counted until the server confirms) is full, `backpressure` decides: "block" waits for room,
  "block" with `block_timeout` waits that long and then raises ProducerBufferFull, "fail"
  raises ProducerBufferFull at once. A batch that fails fails its futures, and is reported to
  `on_error(exc, partition_id, messages)` (logged when there is no callback) and in the
  metrics: a message is never dropped silently. `flush()` waits for everything accepted;
  `close()` flushes and stops.

Partitioning is resolved on the client (partitioners.py), once per send; the topic's
partition count is read once, at `init()`. Payloads may be bytes, str (sent as UTF-8) or any
buffer (memoryview, bytearray); each is copied once, by C, into the batch that goes to the
socket (`_wire.encode_batch`), and no Python object is made per message. Messages get random
UUIDv4 ids, as the official SDK gives messages sent without one (`random_ids=False`: id 0).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from bisect import bisect_right
from itertools import accumulate, chain

from iggy_fast import _wire
from iggy_fast.client import partitioners
from iggy_fast.client.metrics import MetricsCollector
from iggy_fast.client.types import encode_headers
from iggy_fast.protocol.errors import (ProducerBufferFull, ProducerClosed, TopicIdNotFound)

log = logging.getLogger("iggy_fast.producer")

BACKPRESSURE = ("block", "fail")


class Delivered:
    """Where one send's messages went: a partition and the offsets, as ranges (one per batch)."""

    __slots__ = ("partition_id", "ranges")

    def __init__(self, partition_id: int, ranges: list[range]):
        self.partition_id = partition_id
        self.ranges = ranges

    def __len__(self) -> int:
        return sum(len(r) for r in self.ranges)

    def __iter__(self):
        return chain.from_iterable(self.ranges)

    @property
    def offsets(self) -> list[int]:
        return list(self)

    @property
    def first_offset(self) -> int:
        return self.ranges[0].start

    @property
    def last_offset(self) -> int:
        return self.ranges[-1][-1]

    def __repr__(self) -> str:
        return f"Delivered(partition {self.partition_id}, offsets {self.ranges})"


def _split(payloads: list, batch_length: int, batch_bytes: int) -> list[tuple[int, int]]:
    """Cut [0, len) into spans of at most batch_length messages and (but for a lone big
    message) at most batch_bytes payload bytes; sizes summed at C speed."""
    n = len(payloads)
    if n <= batch_length and (n == 1 or sum(map(len, payloads)) <= batch_bytes):
        return [(0, n)]
    ends = list(accumulate(map(len, payloads)))
    spans, start, before = [], 0, 0
    while start < n:
        stop = min(n, start + batch_length, bisect_right(ends, before + batch_bytes, start))
        stop = max(stop, start + 1)
        spans.append((start, stop))
        before = ends[stop - 1]
        start = stop
    return spans


class _Request:
    """One background send: its future and the offsets its parts were given so far."""

    __slots__ = ("future", "partition_id", "parts_left", "ranges")

    def __init__(self, future: asyncio.Future, partition_id: int, parts: int):
        self.future = future
        self.partition_id = partition_id
        self.parts_left = parts
        self.ranges: list = [None] * parts


class _Part:
    """A slice of a background send that travels in one batch."""

    __slots__ = ("request", "index", "payloads", "headers", "nbytes")

    def __init__(self, request, index, payloads, headers, nbytes):
        self.request = request
        self.index = index
        self.payloads = payloads
        self.headers = headers
        self.nbytes = nbytes


class IggyProducer:
    def __init__(self, client, stream, topic, *, partitioning=None, background: bool = False,
                 batch_length: int = 1000, batch_bytes: int = 1_000_000,
                 linger: float = 0.005, max_in_flight: int = 4,
                 max_buffered_messages: int = 100_000, max_buffered_bytes: int = 64_000_000,
                 backpressure: str = "block", block_timeout: float | None = None,
                 on_error=None, metrics: MetricsCollector | None = None,
                 name: str = "producer", random_ids: bool = True):
        if backpressure not in BACKPRESSURE:
            raise ValueError(f"backpressure is one of {BACKPRESSURE}, not {backpressure!r}")
        if batch_length < 1 or max_in_flight < 1:
            raise ValueError("batch_length and max_in_flight must be at least 1")
        self.client = client
        self.stream = stream
        self.topic = topic
        self.partitioner = partitioners.of(partitioning)
        self.background = background
        self.batch_length = batch_length
        self.batch_bytes = batch_bytes
        self.linger = linger
        self.max_in_flight = max_in_flight
        self.max_buffered_messages = max_buffered_messages
        self.max_buffered_bytes = max_buffered_bytes
        self.backpressure = backpressure
        self.block_timeout = block_timeout
        self.on_error = on_error
        self.stats = metrics.actor(name) if metrics is not None else None
        self.random_ids = random_ids
        self.partitions_count = 0
        self.closed = False
        self._in_flight: asyncio.Semaphore | None = None
        # Background state: what waits per partition, what is accepted and not yet confirmed.
        self._waiting: dict[int, list[_Part]] = {}
        self._waiting_count: dict[int, int] = {}
        self._waiting_bytes: dict[int, int] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task] = set()
        self._buffered = 0
        self._buffered_bytes = 0
        self._room: asyncio.Condition | None = None

    async def init(self) -> "IggyProducer":
        """Read the topic's partition count (partitioners need it)."""
        topic = await self.client.get_topic(self.stream, self.topic)
        if topic is None:
            raise TopicIdNotFound(f"topic {self.topic!r} of stream {self.stream!r} not found")
        self.partitions_count = topic.partitions_count
        self._in_flight = asyncio.Semaphore(self.max_in_flight)
        self._room = asyncio.Condition()
        return self

    async def __aenter__(self) -> "IggyProducer":
        return await self.init() if self._in_flight is None else self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _partition(self, key, partition) -> int:
        if partition is not None:
            return partition
        return self.partitioner.partition(key, self.partitions_count)

    # -- sending -------------------------------------------------------------------------------

    async def send(self, payloads, *, key=None, headers=None, partition: int | None = None):
        """Send a list of payloads (or one payload) to one partition.

        Direct mode: returns their Delivered once the server confirmed them, or raises.
        Background mode: returns once they are in the buffer, a future of their Delivered.
        `key` is the message key for key partitioning (or the argument of a custom
        partitioner); `headers` (a dict or an encoded block) go on every message of the send;
        `partition` overrides the partitioner.
        """
        if self.closed:
            raise ProducerClosed(f"producer for {self.stream}/{self.topic} is closed")
        if self._in_flight is None:
            await self.init()
        if not isinstance(payloads, list):
            payloads = [payloads]
        partition_id = self._partition(key, partition)
        block = encode_headers(headers) if headers else None
        if self.background:
            return await self._accept(partition_id, payloads, block)
        spans = _split(payloads, self.batch_length, self.batch_bytes)
        if len(spans) == 1:
            return Delivered(partition_id, [await self._send_batch(partition_id, payloads,
                                                                   block)])
        # Pipelined: each task writes its request as it starts, in order, so the partition
        # keeps the order of the send.
        ranges = await asyncio.gather(*(self._send_batch(partition_id, payloads[a:b], block)
                                        for a, b in spans))
        return Delivered(partition_id, list(ranges))

    async def _send_batch(self, partition_id: int, payloads: list, block) -> range:
        """Encode and send one batch; its offsets. Records the metrics either way."""
        count = len(payloads)
        ids = os.urandom(16 * count) if self.random_ids else None
        batch = _wire.encode_batch(payloads, time.time_ns() // 1000, block, ids)
        nbytes = len(batch) - 256 - 48 * count          # payload bytes, as consumers count
        if block is not None:
            nbytes -= len(block) * count if not isinstance(block, list) else \
                sum(len(h) for h in block if h)
        async with self._in_flight:
            t0 = time.perf_counter()
            try:
                sent = await self.client.send_batch(self.stream, self.topic, partition_id,
                                                    batch, count)
            except BaseException as e:
                if self.stats is not None:
                    self.stats.error(e)
                raise
        if self.stats is not None:
            self.stats.sent(count, nbytes, time.perf_counter() - t0)
        return range(sent.base_offset, sent.base_offset + count)

    # -- background mode -----------------------------------------------------------------------

    async def _accept(self, partition_id: int, payloads: list, block) -> asyncio.Future:
        spans = _split(payloads, self.batch_length, self.batch_bytes)
        sizes = [sum(map(len, payloads[a:b])) for a, b in spans] if len(spans) > 1 else \
            [sum(map(len, payloads))]
        count, nbytes = len(payloads), sum(sizes)
        await self._reserve(count, nbytes)
        future = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        request = _Request(future, partition_id, len(spans))
        waiting = self._waiting.setdefault(partition_id, [])
        for i, ((a, b), size) in enumerate(zip(spans, sizes)):
            waiting.append(_Part(request, i, payloads[a:b] if len(spans) > 1 else payloads,
                                 block, size))
            self._waiting_count[partition_id] = self._waiting_count.get(partition_id, 0) + b - a
            self._waiting_bytes[partition_id] = self._waiting_bytes.get(partition_id, 0) + size
        if (self._waiting_count[partition_id] >= self.batch_length
                or self._waiting_bytes[partition_id] >= self.batch_bytes or self.linger <= 0):
            self._flush_partition(partition_id)
        elif partition_id not in self._timers:
            self._timers[partition_id] = asyncio.get_running_loop().call_later(
                self.linger, self._flush_partition, partition_id)
        return future

    async def _reserve(self, count: int, nbytes: int) -> None:
        def room() -> bool:
            # An empty buffer always takes a send, however big, so nothing can wait forever.
            return self._buffered == 0 or (
                self._buffered + count <= self.max_buffered_messages
                and self._buffered_bytes + nbytes <= self.max_buffered_bytes)

        if not room():
            full = (f"producer buffer full ({self._buffered} messages, {self._buffered_bytes} "
                    f"bytes buffered; limits {self.max_buffered_messages} and "
                    f"{self.max_buffered_bytes})")
            if self.backpressure == "fail":
                raise ProducerBufferFull(full)
            async with self._room:
                try:
                    await asyncio.wait_for(self._room.wait_for(room), self.block_timeout)
                except asyncio.TimeoutError:
                    raise ProducerBufferFull(f"{full} for {self.block_timeout} s") from None
            if self.closed:
                raise ProducerClosed(f"producer for {self.stream}/{self.topic} closed while "
                                     f"the send waited for room")
        self._buffered += count
        self._buffered_bytes += nbytes

    def _flush_partition(self, partition_id: int) -> None:
        """Turn what waits for `partition_id` into batches and start sending them."""
        timer = self._timers.pop(partition_id, None)
        if timer is not None:
            timer.cancel()
        parts = self._waiting.pop(partition_id, None)
        self._waiting_count.pop(partition_id, None)
        self._waiting_bytes.pop(partition_id, None)
        if not parts:
            return
        batch: list[_Part] = []
        count = nbytes = 0
        for part in parts:
            n = len(part.payloads)
            if batch and (count + n > self.batch_length or nbytes + part.nbytes > self.batch_bytes):
                self._start(partition_id, batch)
                batch, count, nbytes = [], 0, 0
            batch.append(part)
            count += n
            nbytes += part.nbytes
        self._start(partition_id, batch)

    def _start(self, partition_id: int, parts: list[_Part]) -> None:
        # Tasks run in creation order, so batches are written to the connection in order.
        task = asyncio.get_running_loop().create_task(self._deliver(partition_id, parts))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, partition_id: int, parts: list[_Part]) -> None:
        count = sum(len(p.payloads) for p in parts)
        nbytes = sum(p.nbytes for p in parts)
        try:
            if len(parts) == 1:
                payloads, block = parts[0].payloads, parts[0].headers
            else:
                payloads = list(chain.from_iterable(p.payloads for p in parts))
                block = None
                if any(p.headers for p in parts):
                    block = list(chain.from_iterable([p.headers] * len(p.payloads)
                                                     for p in parts))
            offsets = await self._send_batch(partition_id, payloads, block)
        except Exception as e:
            self._failed(e, partition_id, parts, count)
        else:
            at = offsets.start
            for part in parts:
                n = len(part.payloads)
                request = part.request
                request.ranges[part.index] = range(at, at + n)
                at += n
                request.parts_left -= 1
                if request.parts_left == 0 and not request.future.done():
                    request.future.set_result(Delivered(partition_id, request.ranges))
        finally:
            self._buffered -= count
            self._buffered_bytes -= nbytes
            async with self._room:
                self._room.notify_all()

    def _failed(self, exc: Exception, partition_id: int, parts: list[_Part], count: int):
        for part in parts:
            if not part.request.future.done():
                part.request.future.set_exception(exc)
        if self.on_error is not None:
            try:
                self.on_error(exc, partition_id, count)
            except Exception:
                log.exception("the producer's error callback failed")
        else:
            log.error("producer for %s/%s: a batch of %d messages to partition %d failed: %r",
                      self.stream, self.topic, count, partition_id, exc)

    async def flush(self) -> None:
        """Send everything waiting now and wait until every accepted message is answered."""
        for partition_id in list(self._waiting):
            self._flush_partition(partition_id)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Flush, then refuse further sends (the client stays open: it is the caller's)."""
        if self.closed:
            return
        if self._in_flight is not None:
            await self.flush()
        self.closed = True
        if self._room is not None:
            async with self._room:
                self._room.notify_all()


def _retrieve(future: asyncio.Future) -> None:
    """A failed send is reported to the error callback and metrics; nobody need await it."""
    if not future.cancelled():
        future.exception()
