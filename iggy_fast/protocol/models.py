"""Typed results the client decodes replies into (client_codec.py): one class per record.

Frozen, slotted dataclasses: built once per reply, no per-instance dict, readable by attribute,
comparable in tests. Layouts are PROTOCOL.md §5; the names follow the official SDK's Python
classes where it has them (Stream, StreamDetails, Topic, TopicDetails, ConsumerGroup...).
Stats and ClusterMetadata are results.py's named tuples (the server encodes the same ones).

`PolledMessages` is different: a poll reply is one buffer holding any number of messages, and
it stays one buffer. The view answers its count, the partition's current offset and the
messages' offsets without an object per message; a `Message` is built only for the index a
caller asks for (or, iterating, one at a time).
"""

from __future__ import annotations

import struct
import sys
from array import array
from dataclasses import dataclass, field
from typing import NamedTuple

from iggy_fast import _wire
from iggy_fast.protocol.binary import parse_tlv
from iggy_fast.protocol.codes import (GLOBAL_PERMISSION_FLAGS, STREAM_PERMISSION_FLAGS,
                                      TOPIC_PERMISSION_FLAGS)
from iggy_fast.protocol.errors import InvalidFormat

U64_MAX = 2 ** 64 - 1
BATCH_HEADER = 256
MESSAGE_HEADER = 48


# -- identity and sessions ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Identity:
    """A successful login: who the server says we are."""
    user_id: int
    session: int = 0
    server_version: str = ""


@dataclass(frozen=True, slots=True)
class ClientInfo:
    client_id: int
    user_id: int | None             # None: not logged in
    transport: str                  # "TCP", "QUIC", "HTTP", "WebSocket"
    address: str
    consumer_groups_count: int


@dataclass(frozen=True, slots=True)
class ConsumerGroupRef:
    stream_id: int
    topic_id: int
    group_id: int


@dataclass(frozen=True, slots=True)
class ClientInfoDetails(ClientInfo):
    consumer_groups: list[ConsumerGroupRef] = field(default_factory=list)


# -- users, permissions, tokens -----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TopicPermissions:
    manage_topic: bool = False
    read_topic: bool = False
    poll_messages: bool = False
    send_messages: bool = False


@dataclass(frozen=True, slots=True)
class StreamPermissions:
    manage_stream: bool = False
    read_stream: bool = False
    manage_topics: bool = False
    read_topics: bool = False
    poll_messages: bool = False
    send_messages: bool = False
    topics: dict[int, TopicPermissions] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GlobalPermissions:
    manage_servers: bool = False
    read_servers: bool = False
    manage_users: bool = False
    read_users: bool = False
    manage_streams: bool = False
    read_streams: bool = False
    manage_topics: bool = False
    read_topics: bool = False
    poll_messages: bool = False
    send_messages: bool = False


@dataclass(frozen=True, slots=True)
class Permissions:
    """A user's permissions (§3.1): global flags, then per stream id (and topic id) flags."""
    global_: GlobalPermissions = field(default_factory=GlobalPermissions)
    streams: dict[int, StreamPermissions] = field(default_factory=dict)

    def encode(self) -> bytes:
        """The §3.1 block."""
        out = bytearray(getattr(self.global_, f) for f in GLOBAL_PERMISSION_FLAGS)
        for sid, sp in sorted(self.streams.items()):
            out.append(1)
            out += sid.to_bytes(4, "little")
            out += bytes(getattr(sp, f) for f in STREAM_PERMISSION_FLAGS)
            for tid, tp in sorted(sp.topics.items()):
                out.append(1)
                out += tid.to_bytes(4, "little")
                out += bytes(getattr(tp, f) for f in TOPIC_PERMISSION_FLAGS)
            out.append(0)
        out.append(0)
        return bytes(out)

    @classmethod
    def decode(cls, block) -> "Permissions":
        b = bytes(block)
        try:
            pos = len(GLOBAL_PERMISSION_FLAGS)
            glob = GlobalPermissions(*(bool(x) for x in b[:pos]))
            streams = {}
            while b[pos]:
                sid = int.from_bytes(b[pos + 1:pos + 5], "little")
                flags = [bool(x) for x in b[pos + 5:pos + 11]]
                pos += 11
                topics = {}
                while b[pos]:
                    tid = int.from_bytes(b[pos + 1:pos + 5], "little")
                    topics[tid] = TopicPermissions(*(bool(x) for x in b[pos + 5:pos + 9]))
                    pos += 9
                pos += 1
                streams[sid] = StreamPermissions(*flags, topics=topics)
            pos += 1
        except IndexError:
            raise InvalidFormat("truncated permissions block") from None
        if pos != len(b):
            raise InvalidFormat("bytes after the permissions block")
        return cls(glob, streams)


@dataclass(frozen=True, slots=True)
class User:
    id: int
    created_at: int                 # µs epoch
    status: int                     # 1 active, 2 inactive
    username: str


@dataclass(frozen=True, slots=True)
class UserDetails(User):
    permissions: Permissions | None = None


@dataclass(frozen=True, slots=True)
class PersonalAccessToken:
    name: str
    expiry_at: int | None           # µs epoch; None: never expires


@dataclass(frozen=True, slots=True)
class RawPersonalAccessToken:
    """A token just created: shown once, never again."""
    token: str


# -- streams, topics, partitions ----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Stream:
    id: int
    created_at: int
    name: str
    size_bytes: int
    messages_count: int
    topics_count: int


@dataclass(frozen=True, slots=True)
class Topic:
    id: int
    created_at: int
    name: str
    size_bytes: int
    messages_count: int
    partitions_count: int
    message_expiry: int             # µs; 0 server default, U64_MAX never
    compression_algorithm: int      # 1 none, 2 gzip
    max_topic_size: int             # bytes; 0 server default, U64_MAX unlimited
    options: list[tuple[int, bytes, int, bytes]] = field(default_factory=list)
    derived_options: list[tuple[int, bytes, int, bytes]] = field(default_factory=list)

    def option(self, key: str) -> bytes | None:
        """The value of an option the client set or the server derived, raw; None if absent."""
        wanted = key.encode()
        for _, k, _, v in (*self.options, *self.derived_options):
            if k == wanted:
                return v
        return None


@dataclass(frozen=True, slots=True)
class Partition:
    id: int
    created_at: int
    segments_count: int
    current_offset: int
    size_bytes: int
    messages_count: int


@dataclass(frozen=True, slots=True)
class TopicDetails(Topic):
    partitions: list[Partition] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class StreamDetails(Stream):
    topics: list[Topic] = field(default_factory=list)


# -- consumer groups and offsets ----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ConsumerGroup:
    id: int
    name: str
    partitions_count: int
    members_count: int


@dataclass(frozen=True, slots=True)
class ConsumerGroupMember:
    id: int
    partitions: list[int]

    @property
    def partitions_count(self) -> int:
        return len(self.partitions)


@dataclass(frozen=True, slots=True)
class ConsumerGroupDetails(ConsumerGroup):
    members: list[ConsumerGroupMember] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ConsumerOffset:
    partition_id: int
    current_offset: int             # the partition's last offset
    stored_offset: int              # the consumer's committed offset


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """One DescribeOptions entry: a key the server accepts in an options block."""
    key: str
    kind: int
    default: bytes
    description: str


# -- messages -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Sent:
    """Where a SendMessages batch went: its partition and the offsets its messages got."""
    stream_id: int
    topic_id: int
    partition_id: int
    base_offset: int
    count: int

    @property
    def offsets(self) -> range:
        return range(self.base_offset, self.base_offset + self.count)

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.count - 1


class Message(NamedTuple):
    """One polled message, built when asked for (a named tuple: the compiled decoder's tuple
    becomes one without a copy of its fields)."""
    offset: int
    timestamp: int                  # server append time of its batch, µs
    origin_timestamp: int           # the producer's time, µs
    id: int
    payload: bytes
    user_headers: bytes             # the raw TLV block (empty when none)
    checksum: int

    @property
    def headers(self) -> dict:
        """The user headers as {key: value}, raw bytes both (kinds dropped)."""
        return {k: v for _, k, _, v in parse_tlv(self.user_headers)} if self.user_headers else {}


# A batch header's first fields (§7.3) and a message frame header (§7.4), read in one call.
_BATCH = struct.Struct("<QQQQ")         # partition_id, base_offset, base_timestamp, origin
_FRAME = struct.Struct("<QQQIIII")      # checksum, id lo, id hi, offset_delta,
#                                         timestamp_delta, user_headers_length, payload_length


class PolledMessages:
    """A PollMessages reply as a view over its buffer (§7.5), decoded lazily.

    `count`, `partition_id` and `current_offset` come from the 16-byte head. `offsets` is an
    array('Q') and `messages[i]` / iteration build one `Message` at a time; the frame index
    that both need is built once, on first use, reading whole batches with strided views
    when their frames have one size (a producer's usual batch) and frame by frame otherwise.
    """

    __slots__ = ("body", "partition_id", "current_offset", "count", "_starts", "_batches")

    def __init__(self, body):
        body = memoryview(body)
        if body.nbytes < 16:
            raise InvalidFormat(f"poll reply of {body.nbytes} bytes (at least 16)")
        self.body = body
        self.partition_id = int.from_bytes(body[0:4], "little")
        self.current_offset = int.from_bytes(body[4:12], "little")
        self.count = int.from_bytes(body[12:16], "little")
        self._starts: array | None = None       # frame start positions in body
        self._batches: array | None = None      # per frame, its batch's start position

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count > 0

    def __repr__(self) -> str:
        return (f"PolledMessages(partition {self.partition_id}, {self.count} messages, "
                f"current offset {self.current_offset})")

    @property
    def fenced(self) -> bool:
        """A group member that owns no partition got this empty answer (§5.8): re-sync."""
        return self.partition_id == 0xFFFFFFFF

    def _index(self) -> None:
        if self._starts is not None:
            return
        starts, batches = array("Q"), array("Q")
        view = self.body
        end = view.nbytes
        pos = 16
        while pos + BATCH_HEADER <= end:
            length = int.from_bytes(view[pos + 32:pos + 40], "little")
            n = int.from_bytes(view[pos + 48:pos + 52], "little")
            if length < BATCH_HEADER or pos + length > end:
                raise InvalidFormat(f"batch record of {length} bytes at {pos} of {end}")
            _frame_starts(view, pos + BATCH_HEADER, pos + length, n, starts)
            batches.extend(array("Q", [pos]) * n)
            pos += length
        if len(starts) != self.count:
            raise InvalidFormat(f"poll reply announces {self.count} messages, holds "
                                f"{len(starts)}")
        self._starts, self._batches = starts, batches

    @property
    def offsets(self) -> array:
        """Each message's offset, in order, as one array('Q')."""
        self._index()
        view, starts, batches = self.body, self._starts, self._batches
        out = array("Q")
        i, n = 0, len(starts)
        while i < n:
            batch = batches[i]
            base = int.from_bytes(view[batch + 8:batch + 16], "little")
            j = i
            while j < n and batches[j] == batch:
                j += 1
            first = int.from_bytes(view[starts[i] + 24:starts[i] + 28], "little")
            last = int.from_bytes(view[starts[j - 1] + 24:starts[j - 1] + 28], "little")
            if last - first == j - 1 - i:
                # A frame's delta is its index in the batch as sent (servers check it on
                # ingest, slices keep it), so first..last spanning every frame is a range.
                out.extend(range(base + first, base + last + 1))
            else:
                for k in range(i, j):
                    out.append(base + int.from_bytes(view[starts[k] + 24:starts[k] + 28],
                                                     "little"))
            i = j
        return out

    @property
    def first_offset(self) -> int | None:
        return self[0].offset if self.count else None

    @property
    def last_offset(self) -> int | None:
        return self[self.count - 1].offset if self.count else None

    def payload(self, i: int) -> memoryview:
        """The payload of message `i` as a view of the reply (no copy)."""
        self._index()
        start = self._starts[i]
        size = int.from_bytes(self.body[start + 36:start + 40], "little")
        return self.body[start + MESSAGE_HEADER:start + MESSAGE_HEADER + size]

    def __getitem__(self, i: int) -> Message:
        self._index()
        if i < 0:
            i += self.count
        if not 0 <= i < self.count:
            raise IndexError(f"message {i} of {self.count}")
        start, v = self._starts[i], self.body
        _, base_offset, timestamp, origin = _BATCH.unpack_from(v, self._batches[i])
        checksum, lo, hi, delta, ts_delta, hlen, plen = _FRAME.unpack_from(v, start)
        p = start + MESSAGE_HEADER
        return Message(base_offset + delta, timestamp, origin + ts_delta, lo | hi << 64,
                       bytes(v[p:p + plen]), bytes(v[p + plen:p + plen + hlen]), checksum)

    def __iter__(self):
        # The compiled walk decodes the batches and builds each Message at C speed.
        return iter(_wire.iter_messages(self.body[16:], Message))

    def payloads(self) -> list:
        """Every payload, as a memoryview of the reply (no copy), in one compiled walk."""
        return _wire.poll_payloads(self.body)

    def tuples(self) -> list:
        """All messages as (offset, timestamp, origin_timestamp, id, payload, user_headers,
        checksum) tuples, decoded in one compiled call (the fastest way to read them all)."""
        return _wire.iter_messages(self.body[16:])


def _frame_starts(view: memoryview, pos: int, end: int, count: int, out: array) -> None:
    """Append the start of each of a batch's `count` frames, which lie in view[pos:end]."""
    size = end - pos
    stride = size // count if count else 0
    if (count and sys.byteorder == "little" and size == stride * count and stride % 4 == 0
            and stride >= MESSAGE_HEADER and pos % 4 == 0):
        words = view[pos:end].cast("I")
        step = stride // 4
        # Frame k starts at k * stride only if every frame is stride bytes long: all
        # user_headers_length (word 8) zero and all payload_length (word 9) stride - 48.
        if (words[8::step].tobytes() == bytes(4 * count)
                and words[9::step].tobytes()
                == (stride - MESSAGE_HEADER).to_bytes(4, "little") * count):
            out.extend(range(pos, end, stride))
            return
    for _ in range(count):
        if pos + MESSAGE_HEADER > end:
            raise InvalidFormat("message frame past the end of its batch")
        out.append(pos)
        pos += (MESSAGE_HEADER + int.from_bytes(view[pos + 32:pos + 36], "little")
                + int.from_bytes(view[pos + 36:pos + 40], "little"))
    if pos != end:
        raise InvalidFormat("message frames do not fill their batch")
