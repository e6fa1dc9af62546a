"""Benchmark actors: each runs in its own process with its own connection.

Each actor connects over the run's transport (bench/links.py). A producer sends one prebuilt
batch over and over (the server stamps offsets, so re-sending the same bytes is valid and the
client copies nothing per send); a consumer polls by offset until it has read its share, or
for a set time. Each records the latency of every batch round trip, in microseconds, and the
bytes it moved: payload (messages x message size) and wire (what its socket carried, frame
headers included; over QUIC, WebSocket and HTTP the Iggy frames, see links.py). In end-to-end runs the producer stamps each batch
with the time it sends it (with a rate limit: the time it was due), and the consumer records
one latency per message received: arrival time minus the message's origin timestamp.
"""

from __future__ import annotations

import os
import time
from array import array
from itertools import repeat
from operator import sub

from iggy_fast import _wire
from iggy_fast.bench.links import connect
from iggy_fast.client.core import origin_timestamps

OFFSET, NEXT = 1, 5


def make_batch(messages: int, size: int, origin_us: int = 1) -> bytearray:
    payload = os.urandom(size)
    return _wire.build_batch([(i + 1, payload, b"", 0) for i in range(messages)], origin_us)


def restamp(batch: bytearray, origin_us: int) -> None:
    """Give a prebuilt batch a new origin timestamp (every message's, their deltas being 0)
    and the batch checksum that goes with it; no message bytes are touched."""
    batch[24:32] = origin_us.to_bytes(8, "little")
    batch[40:48] = _wire.batch_checksum(batch).to_bytes(8, "little")


def _counted(reply, progress) -> int:
    """Messages in a poll reply; adds them to the shared progress counter."""
    count = int.from_bytes(reply.body[12:16], "little")
    if count:
        with progress.get_lock():
            progress.value += count
    return count


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


def _result(spec, role, messages, wire_bytes, elapsed, latencies, e2e=None,
            scheduled=None) -> dict:
    out = {"actor": spec["name"], "role": role, "messages": messages,
           "payload_bytes": messages * spec["message_size"], "wire_bytes": wire_bytes,
           "seconds": elapsed, "latencies_us": latencies}
    if e2e is not None:
        out["end_to_end_us"] = e2e
    if scheduled is not None:
        out["scheduled_us"] = scheduled
    return out


def producer(spec: dict, progress, result_queue) -> None:
    """Send the batch `batches` times, or for `duration` seconds. With `interval` (seconds per
    batch, from --rate-limit), batch k is due at start + k x interval: the producer sleeps until
    then, or sends at once when late, so the rate holds over the run; besides each round trip
    it records the time from the due moment to the reply (what a message waiting for its slot
    sees, coordinated omission included), and end-to-end origins are the due moments."""
    client = connect(spec)
    batch = make_batch(spec["messages_per_batch"], spec["message_size"])
    per_batch = spec["messages_per_batch"]
    targets = spec["targets"]              # [(stream, topic, partition)] used round-robin
    interval_ns = int(spec.get("interval", 0) * 1e9)
    latencies = array("d")
    scheduled = array("d") if interval_ns else None
    duration = spec["duration"]
    sent = 0
    sent_before = client.bytes_sent
    start_ns, wall_ns = time.perf_counter_ns(), time.time_ns()
    elapsed = 0.0
    while (elapsed < duration) if duration else (sent < spec["batches"]):
        stream, topic, partition = targets[sent % len(targets)]
        if interval_ns:
            due = start_ns + sent * interval_ns
            wait = due - time.perf_counter_ns()
            if wait > 0:
                time.sleep(wait / 1e9)
            if spec["end_to_end"]:
                restamp(batch, (wall_ns + due - start_ns) // 1000)
        elif spec["end_to_end"]:
            restamp(batch, time.time_ns() // 1000)
        t0 = time.perf_counter_ns()
        client.send_batch(stream, topic, partition, batch, per_batch)
        t1 = time.perf_counter_ns()
        latencies.append((t1 - t0) / 1000)
        if interval_ns:
            scheduled.append((t1 - due) / 1000)
        sent += 1
        with progress.get_lock():
            progress.value += per_batch
        elapsed = (t1 - start_ns) / 1e9      # the loop's clock is the reported one
    wire = client.bytes_sent - sent_before
    client.close()
    result_queue.put(_result(spec, "producer", sent * per_batch, wire, elapsed,
                             latencies, scheduled=scheduled))


def consumer(spec: dict, progress, result_queue) -> None:
    """Poll each target partition from offset 0 until `expected` messages have been read or,
    with a duration, until it is over (starting again at offset 0 on reaching the end)."""
    client = connect(spec)
    latencies = array("d")
    ages = array("q")      # end-to-end: arrival minus batch origin, one per message
    deltas = array("I")    # end-to-end: each message's offset from its batch's origin
    got = 0
    offsets = {tuple(t): 0 for t in spec["targets"]}
    expected = spec["expected"]
    duration = spec["duration"]
    idle = _Idle(spec["idle_timeout"])
    received_before = client.bytes_received
    start = time.perf_counter()
    elapsed = 0.0
    while (elapsed < duration) if duration else (got < expected):
        progressed = False
        for target in offsets:
            stream, topic, partition = target
            t0 = time.perf_counter_ns()
            reply = client.poll(stream, topic, partition, OFFSET, offsets[target],
                                spec["messages_per_batch"])
            latencies.append((time.perf_counter_ns() - t0) / 1000)
            count = _counted(reply, progress)
            if count:
                progressed = True
                offsets[target] += count
                got += count
                if spec["end_to_end"]:
                    now = time.time_ns() // 1000
                    for origin, n in origin_timestamps(reply.body, deltas):
                        ages.extend(repeat(now - origin, n))
            elif duration:
                offsets[target] = 0          # read it all: go round again until time is up
        elapsed = time.perf_counter() - start
        if not duration and idle.expired(progressed):
            break
    wire = client.bytes_received - received_before
    client.close()
    e2e = array("q", map(sub, ages, deltas)) if spec["end_to_end"] else None
    result_queue.put(_result(spec, "consumer", got, wire, elapsed, latencies, e2e))


def group_consumer(spec: dict, progress, result_queue) -> None:
    """Join a consumer group and read the partitions the server assigns until the whole group
    has read `expected` messages (counted in the shared progress counter)."""
    client = connect(spec)
    stream, topic, _ = spec["targets"][0]
    group = spec["group"]
    ident = (_wire.Writer().identifier(stream).identifier(topic).identifier(group)
             .getvalue())
    client.call(604, ident)
    latencies = array("d")
    got = 0
    owned: list = []
    idle = _Idle(spec["idle_timeout"])
    received_before = client.bytes_received
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
            count = _counted(reply, progress)
            if count:
                progressed = True
                got += count
        if idle.expired(progressed):
            break
    elapsed = time.perf_counter() - start
    wire = client.bytes_received - received_before
    client.call(605, ident)
    client.close()
    result_queue.put(_result(spec, "consumer", got, wire, elapsed, latencies))
