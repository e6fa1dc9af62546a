"""What a caller passes to the client's commands: partitioning, polling strategies, consumers,
messages to send, and the user-header encoding (PROTOCOL.md §3, §7).

Named like the official SDK's (`Partitioning.partition_id(3)`, `PollingStrategy.Next()`,
`Consumer.group("g")`) so code moves between the two with few edits.
"""

from __future__ import annotations

import os
import struct
import time
import uuid
from dataclasses import dataclass

from iggy_fast import _wire
from iggy_fast.protocol.codes import (BALANCED, FIRST, LAST, MESSAGES_KEY, NEXT, OFFSET,
                                      PARTITION_ID, TIMESTAMP)
from iggy_fast.protocol.errors import TooBigMessagePayload, TooBigUserHeaders

MAX_PAYLOAD = 64_000_000            # the SDK's per-message payload limit (§7.8)
MAX_USER_HEADERS = 100_000


@dataclass(frozen=True, slots=True)
class Partitioning:
    """Where a send goes (§3 Partitioning): the server picks for `balanced` and
    `messages_key` (a real Iggy 0.11 server does the same), or an explicit partition id."""
    kind: int
    value: bytes = b""

    @classmethod
    def balanced(cls) -> "Partitioning":
        return cls(BALANCED)

    @classmethod
    def partition_id(cls, partition_id: int) -> "Partitioning":
        return cls(PARTITION_ID, int(partition_id).to_bytes(4, "little"))

    @classmethod
    def messages_key(cls, key: bytes | str | int) -> "Partitioning":
        if isinstance(key, str):
            key = key.encode()
        elif isinstance(key, int):
            key = key.to_bytes(8, "little", signed=key < 0)
        if not 0 < len(key) < 256:
            raise ValueError("a message key is 1..255 bytes")
        return cls(MESSAGES_KEY, bytes(key))

    @classmethod
    def of(cls, value: "Partitioning | int | None") -> "Partitioning":
        if value is None:
            return cls.balanced()
        if isinstance(value, Partitioning):
            return value
        return cls.partition_id(value)


@dataclass(frozen=True, slots=True)
class PollingStrategy:
    """Where a poll starts (§7.5)."""
    kind: int
    value: int = 0

    @classmethod
    def Offset(cls, value: int) -> "PollingStrategy":
        return cls(OFFSET, value)

    @classmethod
    def Timestamp(cls, value: int) -> "PollingStrategy":
        """`value`: µs since the epoch."""
        return cls(TIMESTAMP, value)

    @classmethod
    def First(cls) -> "PollingStrategy":
        return cls(FIRST)

    @classmethod
    def Last(cls) -> "PollingStrategy":
        return cls(LAST)

    @classmethod
    def Next(cls) -> "PollingStrategy":
        return cls(NEXT)


CONSUMER_KIND, GROUP_KIND = 1, 2


@dataclass(frozen=True, slots=True)
class Consumer:
    """Who polls and whose offset is stored: a single consumer or a consumer group."""
    kind: int
    id: int | str

    @classmethod
    def single(cls, id: int | str = 1) -> "Consumer":
        return cls(CONSUMER_KIND, id)

    @classmethod
    def group(cls, id: int | str) -> "Consumer":
        return cls(GROUP_KIND, id)

    Single = single                     # the official SDK's spelling
    Group = group

    @classmethod
    def of(cls, value: "Consumer | int | str") -> "Consumer":
        return value if isinstance(value, Consumer) else cls.single(value)


@dataclass(slots=True)
class SendMessage:
    """A message to send: its payload, and optionally user headers (a dict, or an encoded TLV
    block) and an id (0 or None: a random UUIDv4 is minted, as the official SDK does). The
    arguments are in the official SDK's order: `SendMessage(data, user_headers, id)`."""
    payload: bytes | bytearray | memoryview | str
    user_headers: dict | bytes | None = None
    id: int | None = 0


# Header value kinds (§3): what a Python value is sent as.
_RAW, _STRING, _BOOL, _INT64, _UINT64, _FLOAT64 = 1, 2, 3, 7, 12, 15


def _header_value(value) -> tuple[int, bytes]:
    if isinstance(value, bool):
        return _BOOL, bytes([value])
    if isinstance(value, int):
        return (_INT64, value.to_bytes(8, "little", signed=True)) if value < 0 else \
            (_UINT64, value.to_bytes(8, "little"))
    if isinstance(value, float):
        return _FLOAT64, struct.pack("<d", value)
    if isinstance(value, str):
        return _STRING, value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _RAW, bytes(value)
    if isinstance(value, tuple) and len(value) == 2:
        return value                    # an explicit (kind, encoded value)
    raise TypeError(f"cannot send a header value of type {type(value).__name__}")


def encode_headers(headers: dict | bytes | None) -> bytes:
    """User headers as the TLV block of §3, sorted by key as the official SDK sends them."""
    if not headers:
        return b""
    if isinstance(headers, (bytes, bytearray, memoryview)):
        return bytes(headers)
    out = []
    for key in sorted(headers, key=lambda k: k if isinstance(k, bytes) else k.encode()):
        kkind, kval = _header_value(key)
        vkind, vval = _header_value(headers[key])
        for part in (kval, vval):
            if not 0 < len(part) < 256:
                raise ValueError(f"header {key!r}: keys and values are 1..255 bytes")
        out.append(struct.pack("<BI", kkind, len(kval)) + kval
                   + struct.pack("<BI", vkind, len(vval)) + vval)
    block = b"".join(out)
    if len(block) > MAX_USER_HEADERS:
        raise TooBigUserHeaders(f"user headers of {len(block)} bytes (at most "
                                f"{MAX_USER_HEADERS})")
    return block


def _payload(p) -> bytes | bytearray | memoryview:
    return p.encode() if isinstance(p, str) else p


def build_batch(messages) -> tuple[bytearray, int]:
    """One producer batch (§7.3) from payloads (bytes, str, memoryview) or SendMessages;
    returns (batch, count). Ids of 0 become random UUIDv4s; every message gets the batch's
    origin timestamp (now). A list of plain payloads is encoded by C in one call, ids drawn
    there (no object per message); SendMessages (ids, headers) take the general path."""
    if type(messages) is list and messages:
        try:
            batch, _ = _wire.encode_parts(None, [(messages, 0, len(messages), None)],
                                          time.time_ns() // 1000, os.urandom(32))
            return batch, len(messages)
        except (TypeError, TooBigMessagePayload):
            pass                        # SendMessages among them, or a payload the general
                                        # path refuses with the SDK's own words
    rows = []
    for m in messages:
        if isinstance(m, SendMessage):
            payload, mid, headers = _payload(m.payload), m.id, encode_headers(m.user_headers)
        else:
            payload, mid, headers = _payload(m), 0, b""
        if len(payload) > MAX_PAYLOAD:
            raise TooBigMessagePayload(
                f"a payload of {len(payload)} bytes is more than the {MAX_PAYLOAD} a message "
                f"may carry; split it")
        rows.append((mid or uuid.uuid4().int, payload, headers, 0))
    if not rows:
        raise ValueError("a send needs at least one message")
    return _wire.build_batch(rows, time.time_ns() // 1000), len(rows)

