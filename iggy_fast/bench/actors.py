"""Benchmark actors: each runs in its own process with its own connection.

A producer sends one prebuilt batch over and over (the server stamps offsets, so re-sending the
same bytes is valid and the client copies nothing per send); a consumer polls by offset until
it has read its share. Each records the latency of every batch round trip, in microseconds.
"""

from __future__ import annotations

import os
import time
from array import array

from iggy_fast import _wire
from iggy_fast.client import BlockingClient

OFFSET, NEXT = 1, 5


def _connect(address: str) -> BlockingClient:
    client = BlockingClient(address)
    client.login()
    return client


def make_batch(messages: int, size: int, origin_us: int = 1) -> bytearray:
    payload = os.urandom(size)
    return _wire.build_batch([(i + 1, payload, b"", 0) for i in range(messages)], origin_us)


def _counted(reply, progress) -> tuple[int, int]:
    """(messages, bytes) in a poll reply; adds the messages to the shared progress counter."""
    count = int.from_bytes(reply.body[12:16], "little")
    if count:
        with progress.get_lock():
            progress.value += count
    return count, len(reply.body) - 16


class _Idle:
    """Gives up once nothing new arrived for `timeout` seconds."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.since = None

    def expired(self, progressed: bool) -> bool:
        if progressed:
            self.since = None
            return False
        self.since = self.since or time.monotonic()
        if time.monotonic() - self.since > self.timeout:
            return True
        time.sleep(0.0005)
        return False


def producer(spec: dict, progress, result_queue) -> None:
    client = _connect(spec["address"])
    batch = make_batch(spec["messages_per_batch"], spec["message_size"])
    per_batch = spec["messages_per_batch"]
    targets = spec["targets"]              # [(stream, topic, partition)] used round-robin
    latencies = array("d")
    deadline = time.monotonic() + spec["duration"] if spec["duration"] else None
    sent = 0
    start = time.perf_counter()
    while (sent < spec["batches"]) if deadline is None else (time.monotonic() < deadline):
        stream, topic, partition = targets[sent % len(targets)]
        if spec["end_to_end"]:
            batch = make_batch(per_batch, spec["message_size"], time.time_ns() // 1000)
        t0 = time.perf_counter_ns()
        client.send_batch(stream, topic, partition, batch, per_batch)
        latencies.append((time.perf_counter_ns() - t0) / 1000)
        sent += 1
        with progress.get_lock():
            progress.value += per_batch
    elapsed = time.perf_counter() - start
    client.close()
    result_queue.put({"actor": spec["name"], "role": "producer", "messages": sent * per_batch,
                      "bytes": sent * len(batch), "seconds": elapsed,
                      "latencies_us": latencies.tolist()})


def consumer(spec: dict, progress, result_queue) -> None:
    """Poll each target partition from offset 0 until `expected` messages have been read."""
    client = _connect(spec["address"])
    latencies = array("d")
    e2e = array("d")
    got = received_bytes = 0
    offsets = {tuple(t): 0 for t in spec["targets"]}
    expected = spec["expected"]
    idle = _Idle(spec["idle_timeout"])
    start = time.perf_counter()
    while got < expected:
        progressed = False
        for target in offsets:
            stream, topic, partition = target
            t0 = time.perf_counter_ns()
            reply = client.poll(stream, topic, partition, OFFSET, offsets[target],
                                spec["messages_per_batch"])
            latencies.append((time.perf_counter_ns() - t0) / 1000)
            count, nbytes = _counted(reply, progress)
            if count:
                progressed = True
                offsets[target] += count
                got += count
                received_bytes += nbytes
                if spec["end_to_end"]:
                    now = time.time_ns() // 1000
                    origin = int.from_bytes(reply.body[16 + 24:16 + 32], "little")
                    e2e.append(now - origin)
        if idle.expired(progressed):
            break
    elapsed = time.perf_counter() - start
    client.close()
    result_queue.put({"actor": spec["name"], "role": "consumer", "messages": got,
                      "bytes": received_bytes, "seconds": elapsed,
                      "latencies_us": latencies.tolist(), "end_to_end_us": e2e.tolist()})


def group_consumer(spec: dict, progress, result_queue) -> None:
    """Join a consumer group and read the partitions the server assigns until the whole group
    has read `expected` messages (counted in the shared progress counter)."""
    client = _connect(spec["address"])
    stream, topic, _ = spec["targets"][0]
    group = spec["group"]
    ident = (_wire.Writer().identifier(stream).identifier(topic).identifier(group)
             .getvalue())
    client.call(604, ident)
    latencies = array("d")
    got = received_bytes = 0
    owned: list = []
    idle = _Idle(spec["idle_timeout"])
    start = time.perf_counter()
    while progress.value < spec["expected"]:
        if not owned:
            body = client.call(606, ident).body
            count = int.from_bytes(body[8:12], "little") if len(body) >= 12 else 0
            owned = [int.from_bytes(body[12 + 4 * i:16 + 4 * i], "little") for i in range(count)]
        progressed = False
        for partition in owned:
            t0 = time.perf_counter_ns()
            reply = client.poll(stream, topic, partition, NEXT, 0, spec["messages_per_batch"],
                                auto_commit=True, consumer_id=group, consumer_kind=2)
            latencies.append((time.perf_counter_ns() - t0) / 1000)
            if reply.body[:4] == b"\xff\xff\xff\xff":      # fenced: assignment changed
                owned = []
                break
            count, nbytes = _counted(reply, progress)
            if count:
                progressed = True
                got += count
                received_bytes += nbytes
        if idle.expired(progressed):
            break
    elapsed = time.perf_counter() - start
    client.call(605, ident)
    client.close()
    result_queue.put({"actor": spec["name"], "role": "consumer", "messages": got,
                      "bytes": received_bytes, "seconds": elapsed,
                      "latencies_us": latencies.tolist()})
