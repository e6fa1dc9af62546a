"""A producer over the async IggyClient: batching, partitioning, a bounded background buffer.

Two modes.

* Direct (the default): `await producer.send(payloads, key=..., headers=...)` sends the
  caller's messages now, cut into batches of at most `batch_length` messages and about
  `batch_bytes` bytes, and returns the offsets the server gave them (a `Delivered`) or raises.
  The batches of one send are pipelined on the connection, at most `max_in_flight` at a time
  (one at a time over HTTP, whose concurrent requests may be applied out of order).
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
buffer (memoryview, bytearray). A send is cut into batches and each batch encoded by C
(`_wire.payload_spans`, `_wire.encode_parts`): every payload is copied once, straight into a
buffer the producer reuses once the server has confirmed the batch it held (no allocation,
page faults or zero fill per batch), and no Python object is made per message. Background
mode keeps accepted sends as references to the caller's payloads and encodes them only when a
batch goes out, so several sends waiting for one partition travel as one batch without being
joined first, and the batch is written while it is still in the CPU cache. At most
`max_in_flight` worker coroutines send, each taking the next ready batch as its previous one
is confirmed: no task per batch. Messages get random UUIDv4 ids, as the official SDK gives
messages sent without one (drawn by xoshiro256** from 32 bytes of os.urandom per batch;
`random_ids=False`: id 0). So a background send's payloads (a bytearray, a memoryview) must
not change until its future is done.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from itertools import chain

from iggy_fast import _wire
from iggy_fast.client import partitioners
from iggy_fast.client.metrics import MetricsCollector
from iggy_fast.client.types import encode_headers
from iggy_fast.protocol.errors import (InvalidMessagesCount, ProducerBufferFull, ProducerClosed,
                                       TopicIdNotFound)

log = logging.getLogger("iggy_fast.producer")

BACKPRESSURE = ("block", "fail")

# A batch buffer larger than this is not kept for reuse (a one-off huge send keeps no memory).
_POOL_MAX_BYTES = 4 * 1024 * 1024


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


class _Request:
    """One background send: its future and the offsets its parts were given so far."""

    __slots__ = ("future", "partition_id", "parts_left", "ranges")

    def __init__(self, future: asyncio.Future, partition_id: int, parts: int):
        self.future = future
        self.partition_id = partition_id
        self.parts_left = parts
        self.ranges: list = [None] * parts


class _Part:
    """A span of a background send (payloads[start:stop]) that travels in one batch."""

    __slots__ = ("request", "index", "payloads", "start", "stop", "headers", "nbytes")

    def __init__(self, request, index, payloads, start, stop, headers, nbytes):
        self.request = request
        self.index = index
        self.payloads = payloads
        self.start = start
        self.stop = stop
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
        self._window = max_in_flight            # batches in flight at most (1 over HTTP)
        self._pool: list[bytearray] = []        # batch buffers free for reuse
        # Background state: what waits per partition, batches ready to go, the workers
        # sending them, and what is accepted and not yet confirmed.
        self._waiting: dict[int, list[_Part]] = {}
        self._waiting_count: dict[int, int] = {}
        self._waiting_bytes: dict[int, int] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._ready: deque = deque()            # (partition_id, parts, count, nbytes)
        self._workers: set[asyncio.Task] = set()
        self._busy = 0                          # workers sending a batch now
        self._buffered = 0
        self._buffered_bytes = 0
        self._room_waiters: list[asyncio.Future] = []

    async def init(self) -> "IggyProducer":
        """Read the topic's partition count (partitioners need it)."""
        topic = await self.client.get_topic(self.stream, self.topic)
        if topic is None:
            raise TopicIdNotFound(f"topic {self.topic!r} of stream {self.stream!r} not found")
        self.partitions_count = topic.partitions_count
        # HTTP runs concurrent requests in parallel over several connections, so they may be
        # applied out of order: one batch at a time keeps a partition in send order there.
        transport = getattr(getattr(self.client, "config", None), "transport", None)
        self._window = 1 if transport == "http" else self.max_in_flight
        self._in_flight = asyncio.Semaphore(self._window)
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
        if type(payloads) is not list:             # one payload (a list subclass: copied)
            payloads = list(payloads) if isinstance(payloads, list) else [payloads]
        partition_id = self._partition(key, partition)
        block = encode_headers(headers) if headers else None
        n = len(payloads)
        spans = _wire.payload_spans(payloads, 0, n, self.batch_length, self.batch_bytes)
        if not spans:
            raise InvalidMessagesCount("a send needs at least one message")
        if self.background:
            return await self._accept(partition_id, payloads, block, spans)
        if len(spans) == 1:
            return Delivered(partition_id, [await self._send_parts(
                partition_id, [(payloads, 0, n, block)], n, spans[0][2])])
        # Pipelined: each task takes the in-flight semaphore (FIFO) before it encodes and
        # writes, so batches go out in the order of the send, at most max_in_flight at once.
        ranges = await asyncio.gather(*(
            self._send_parts(partition_id, [(payloads, a, b, block)], b - a, size)
            for a, b, size in spans))
        return Delivered(partition_id, list(ranges))

    async def _send_parts(self, partition_id: int, parts: list, count: int, nbytes: int
                          ) -> range:
        """Encode `parts` as one batch and send it; its offsets. Records the metrics either
        way. The batch buffer is reused once the server has answered (every byte of it was
        then sent); after a failure a transport may still hold it, so it is let go."""
        async with self._in_flight:
            buf = self._pool.pop() if self._pool else None
            buf, size = _wire.encode_parts(buf, parts, time.time_ns() // 1000,
                                           os.urandom(32) if self.random_ids else None)
            t0 = time.perf_counter()
            try:
                sent = await self.client.send_batch(self.stream, self.topic, partition_id,
                                                    memoryview(buf)[:size], count)
            except BaseException as e:
                if self.stats is not None:
                    self.stats.error(e)
                raise
        if len(self._pool) < self._window and len(buf) <= _POOL_MAX_BYTES:
            self._pool.append(buf)
        if self.stats is not None:
            self.stats.sent(count, nbytes, time.perf_counter() - t0)
        return range(sent.base_offset, sent.base_offset + count)

    # -- background mode -----------------------------------------------------------------------

    async def _accept(self, partition_id: int, payloads: list, block, spans: list
                      ) -> asyncio.Future:
        count = len(payloads)
        nbytes = spans[0][2] if len(spans) == 1 else sum(s[2] for s in spans)
        await self._reserve(count, nbytes)
        future = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        request = _Request(future, partition_id, len(spans))
        waiting = self._waiting.get(partition_id)
        if waiting is None:
            waiting = self._waiting[partition_id] = []
            self._waiting_count[partition_id] = self._waiting_bytes[partition_id] = 0
        for i, (a, b, size) in enumerate(spans):
            waiting.append(_Part(request, i, payloads, a, b, block, size))
        self._waiting_count[partition_id] += count
        self._waiting_bytes[partition_id] += nbytes
        if self.linger <= 0:
            self._flush_partition(partition_id)
        elif (self._waiting_count[partition_id] >= self.batch_length
                or self._waiting_bytes[partition_id] >= self.batch_bytes):
            self._flush_partition(partition_id, everything=False)
        elif partition_id not in self._timers:
            self._timers[partition_id] = asyncio.get_running_loop().call_later(
                self.linger, self._flush_partition, partition_id)
        return future

    def _has_room(self, count: int, nbytes: int) -> bool:
        # An empty buffer always takes a send, however big, so nothing can wait forever.
        return self._buffered == 0 or (
            self._buffered + count <= self.max_buffered_messages
            and self._buffered_bytes + nbytes <= self.max_buffered_bytes)

    async def _reserve(self, count: int, nbytes: int) -> None:
        if not self._has_room(count, nbytes):
            full = (f"producer buffer full ({self._buffered} messages, {self._buffered_bytes} "
                    f"bytes buffered; limits {self.max_buffered_messages} and "
                    f"{self.max_buffered_bytes})")
            if self.backpressure == "fail":
                raise ProducerBufferFull(full)
            loop = asyncio.get_running_loop()
            deadline = None if self.block_timeout is None else loop.time() + self.block_timeout
            while not self._has_room(count, nbytes):
                if self.closed:
                    raise ProducerClosed(f"producer for {self.stream}/{self.topic} closed "
                                         f"while the send waited for room")
                waiter = loop.create_future()
                self._room_waiters.append(waiter)
                try:
                    if deadline is None:
                        await waiter
                    else:
                        await asyncio.wait_for(waiter, max(0.0, deadline - loop.time()))
                except asyncio.TimeoutError:
                    raise ProducerBufferFull(f"{full} for {self.block_timeout} s") from None
                finally:
                    if not waiter.done():
                        waiter.cancel()
            if self.closed:
                raise ProducerClosed(f"producer for {self.stream}/{self.topic} closed while "
                                     f"the send waited for room")
        self._buffered += count
        self._buffered_bytes += nbytes

    def _release(self, count: int, nbytes: int) -> None:
        """Confirmed (or failed) messages leave the buffer; every blocked send looks again."""
        self._buffered -= count
        self._buffered_bytes -= nbytes
        if self._room_waiters:
            waiters, self._room_waiters = self._room_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _flush_partition(self, partition_id: int, everything: bool = True) -> None:
        """Cut what waits for `partition_id` into batches, ready for the workers. Unless
        `everything` (linger expired, flush), a last batch that is not full keeps waiting for
        more sends, so batches stay full when sends do not divide them evenly."""
        parts = self._waiting.pop(partition_id, None)
        self._waiting_count.pop(partition_id, None)
        self._waiting_bytes.pop(partition_id, None)
        if parts:
            batch: list[_Part] = []
            count = nbytes = 0
            for part in parts:
                n = part.stop - part.start
                if batch and (count + n > self.batch_length
                              or nbytes + part.nbytes > self.batch_bytes):
                    self._ready.append((partition_id, batch, count, nbytes))
                    batch, count, nbytes = [], 0, 0
                batch.append(part)
                count += n
                nbytes += part.nbytes
            if everything or (count >= self.batch_length or nbytes >= self.batch_bytes):
                self._ready.append((partition_id, batch, count, nbytes))
            else:
                self._waiting[partition_id] = batch
                self._waiting_count[partition_id] = count
                self._waiting_bytes[partition_id] = nbytes
            self._spawn()
        if partition_id in self._waiting:
            if partition_id not in self._timers:
                self._timers[partition_id] = asyncio.get_running_loop().call_later(
                    self.linger, self._flush_partition, partition_id)
        else:
            timer = self._timers.pop(partition_id, None)
            if timer is not None:
                timer.cancel()

    def _spawn(self) -> None:
        """Start workers for the ready batches no worker is about to take, up to
        max_in_flight. Workers take batches in order and write each before they yield, so a
        partition's batches go out in the order they were cut."""
        loop = asyncio.get_running_loop()
        while (len(self._workers) < self._window
               and len(self._workers) - self._busy < len(self._ready)):
            self._workers.add(loop.create_task(self._work()))

    async def _work(self) -> None:
        try:
            while self._ready:
                partition_id, parts, count, nbytes = self._ready.popleft()
                self._busy += 1
                try:
                    await self._deliver(partition_id, parts, count, nbytes)
                finally:
                    self._busy -= 1
        finally:
            # Gone from the set at once, so _spawn never counts a worker that has stopped.
            self._workers.discard(asyncio.current_task())

    async def _deliver(self, partition_id: int, parts: list[_Part], count: int,
                       nbytes: int) -> None:
        try:
            offsets = await self._send_parts(
                partition_id, [(p.payloads, p.start, p.stop, p.headers) for p in parts],
                count, nbytes)
        except Exception as e:
            self._failed(e, partition_id, parts, count)
        else:
            at = offsets.start
            for part in parts:
                n = part.stop - part.start
                request = part.request
                request.ranges[part.index] = range(at, at + n)
                at += n
                request.parts_left -= 1
                if request.parts_left == 0 and not request.future.done():
                    request.future.set_result(Delivered(partition_id, request.ranges))
        finally:
            self._release(count, nbytes)

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
        while self._waiting or self._ready or self._workers:
            for partition_id in list(self._waiting):
                self._flush_partition(partition_id)
            self._spawn()
            await asyncio.gather(*list(self._workers), return_exceptions=True)

    async def close(self) -> None:
        """Flush, then refuse further sends (the client stays open: it is the caller's)."""
        if self.closed:
            return
        if self._in_flight is not None:
            await self.flush()
        self.closed = True
        self._release(0, 0)                     # blocked sends wake and raise ProducerClosed


def _retrieve(future: asyncio.Future) -> None:
    """A failed send is reported to the error callback and metrics; nobody need await it."""
    if not future.cancelled():
        future.exception()
