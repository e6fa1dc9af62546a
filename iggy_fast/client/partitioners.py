"""Where a producer's send goes: by partition id, round-robin, by message key, or by a function.

A partitioner answers one question per send (a batch, as in the official SDK, not per
message): `partition(key, partitions_count)` -> a 0-based partition id. The producer resolves
it on the client and sends partitioning kind 2 (an explicit id), as the official 0.9.0 SDK
does (PROTOCOL.md §7.6), so the placement of a key does not depend on the server.

* `PartitionId(n)`: always partition n.
* `Balanced()`: round-robin 0, 1, ..., count-1, 0, ... (one cursor per partitioner, so one
  per producer; the official SDK keeps one per topic per client).
* `MessageKey()`: XXH32(key, seed 0) mod the partition count, the key's UTF-8 when it is a
  str: the same partition the official SDK and the Iggy server pick for that key. The hash
  is C (`_wire.partition_for_key`).
* `Custom(fn)`: `fn(key)` returns the partition id (the tutorial's `calculate_partition_id`);
  an answer outside the topic raises PartitionNotFound rather than being wrapped around.
"""

from __future__ import annotations

from typing import Callable

from iggy_fast import _wire
from iggy_fast.protocol.errors import PartitionNotFound

Key = bytes | bytearray | memoryview | str


class Partitioner:
    """Chooses the partition of one send."""

    def partition(self, key, partitions_count: int) -> int:
        raise NotImplementedError


class PartitionId(Partitioner):
    def __init__(self, partition_id: int):
        if not 0 <= partition_id < 2 ** 32:
            raise ValueError(f"partition id {partition_id} is not a u32")
        self.partition_id = partition_id

    def partition(self, key, partitions_count: int) -> int:
        return self.partition_id

    def __repr__(self) -> str:
        return f"PartitionId({self.partition_id})"


class Balanced(Partitioner):
    def __init__(self):
        self.cursor = 0

    def partition(self, key, partitions_count: int) -> int:
        if partitions_count <= 0:
            raise PartitionNotFound("the topic has no partitions")
        chosen = self.cursor % partitions_count
        self.cursor = chosen + 1
        return chosen

    def __repr__(self) -> str:
        return "Balanced()"


def key_bytes(key: Key) -> bytes | bytearray | memoryview:
    """A message key as the bytes that are hashed: a str as UTF-8; 1..255 bytes, as in Iggy."""
    raw = key.encode() if isinstance(key, str) else key
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise TypeError(f"a message key is str or bytes, not {type(key).__name__}")
    if not 0 < len(raw) < 256:
        raise ValueError(f"a message key is 1..255 bytes, this one is {len(raw)}")
    return raw


def partition_for_key(key: Key, partitions_count: int) -> int:
    """XXH32(key, 0) % partitions_count: where Iggy places a message key."""
    return _wire.partition_for_key(key_bytes(key), partitions_count)


class MessageKey(Partitioner):
    def partition(self, key, partitions_count: int) -> int:
        if key is None:
            raise ValueError("message-key partitioning needs a key on every send")
        return partition_for_key(key, partitions_count)

    def __repr__(self) -> str:
        return "MessageKey()"


class Custom(Partitioner):
    def __init__(self, fn: Callable[[object], int]):
        self.fn = fn

    def partition(self, key, partitions_count: int) -> int:
        chosen = self.fn(key)
        if not isinstance(chosen, int) or not 0 <= chosen < partitions_count:
            raise PartitionNotFound(f"{getattr(self.fn, '__name__', self.fn)}({key!r}) "
                                    f"returned {chosen!r}; the topic has partitions 0.."
                                    f"{partitions_count - 1}")
        return chosen

    def __repr__(self) -> str:
        return f"Custom({getattr(self.fn, '__name__', self.fn)})"


def of(value) -> Partitioner:
    """A Partitioner from what a caller may pass: one, a partition id, a function, or None
    (balanced)."""
    if value is None:
        return Balanced()
    if isinstance(value, Partitioner):
        return value
    if isinstance(value, int):
        return PartitionId(value)
    if callable(value):
        return Custom(value)
    raise TypeError(f"cannot partition by {value!r}")
