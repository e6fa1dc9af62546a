"""The client side of the Iggy protocol, without I/O: requests out, replies in.

`ClientProtocol` numbers requests and tracks the session the way the official SDK does
(PROTOCOL.md §1.5): it builds each request as a list of buffers (header, body pieces) for one
vectored write, and `parse_reply()` turns a received frame into a `Reply` (status, body) or
raises the IggyError a status or an eviction stands for. Bodies of SendMessages are built from
the caller's batch without copying it; `origin_timestamps()` reads the messages' origins out
of a PollMessages reply without decoding each message into objects.
"""

from __future__ import annotations

import os
import sys
import time
from array import array

from iggy_fast import _wire
from iggy_fast._wire import Writer
from iggy_fast.protocol.codes import (COMMAND_OPERATIONS, EVICTION_ERROR_CODES, PROTOCOL_VERSION,
                                      RESULT_FRAMED, carries_body_checksum)
from iggy_fast.protocol.errors import IggyError, ProtocolViolation


class Reply:
    __slots__ = ("operation", "status", "body")

    def __init__(self, operation: int, status: int, body):
        self.operation = operation
        self.status = status
        self.body = body


class ClientProtocol:
    def __init__(self):
        self.client_id = os.urandom(16)
        self.session = 0
        self.request = 1

    def request_frame(self, code: int, body=b"", extra=()) -> list:
        """Buffers for one request: header, body, then `extra` pieces appended to the body."""
        op = COMMAND_OPERATIONS.get(code, 2)
        length = len(body) + sum(len(p) if not isinstance(p, memoryview) else p.nbytes
                                 for p in extra)
        checksum = 0
        if carries_body_checksum(op):
            checksum = _wire.xxh3_64(bytes(body))
        req = self.request
        if op != 2:
            self.request += 1
        header = _wire.request_header(op, code if op == 2 else 0, self.session, req,
                                      self.client_id, length, checksum)
        return [header, body, *extra]

    def login_frame(self, username: str, password: str) -> list:
        body = (Writer().u32(PROTOCOL_VERSION).name("iggy-fast").name("0.1.0").name(username)
                .raw(bytes([len(password.encode())])).raw(password.encode()).u32(0).getvalue())
        return self._register(body)

    def token_login_frame(self, token: str) -> list:
        raw = token.encode()
        body = (Writer().u32(PROTOCOL_VERSION).name("iggy-fast").name("0.1.0")
                .raw(bytes([len(raw)])).raw(raw).u32(0).getvalue())
        return self._register(body)

    def _register(self, body: bytes) -> list:
        self.client_id = os.urandom(16)
        self.session = 0
        self.request = 0
        header = _wire.request_header(1, 0, 0, 0, self.client_id, len(body),
                                      _wire.xxh3_64(body))
        return [header, body]

    def parse_reply(self, header, body) -> Reply:
        size, command, operation, status, reason = _wire.parse_reply_header(header)
        if command == _wire.COMMAND_EVICTION:
            raise IggyError.from_code(EVICTION_ERROR_CODES.get(reason, 40),
                                      f"evicted by the server (reason {reason})")
        if command != _wire.COMMAND_REPLY:
            raise IggyError.from_code(3, f"unexpected reply command {command}")
        if status:
            raise IggyError.from_code(status)
        if operation in RESULT_FRAMED or (operation == 1 and len(body)):
            if len(body) < 4:
                raise IggyError.from_code(4, "reply shorter than its result section")
            count = int.from_bytes(body[:4], "little")
            if count:
                raise IggyError.from_code(int.from_bytes(body[8:12], "little"))
            body = body[4:]
        if operation == 1:
            if len(body) < 12:
                raise IggyError.from_code(4, "empty login reply")
            self.session = int.from_bytes(body[4:12], "little")
            self.request = 1
        return Reply(operation, status, body)


def now_us() -> int:
    return time.time_ns() // 1000


def send_messages_body(stream, topic, partition_id: int, count: int) -> bytes:
    """The metadata part of a SendMessages body; the batch follows it as its own buffer."""
    meta = (Writer().identifier(stream).identifier(topic).u8(2).u8(4).u32(partition_id)
            .u32(count).getvalue())
    return len(meta).to_bytes(4, "little") + meta


def poll_body(stream, topic, partition_id: int | None, strategy: int, value: int, count: int,
              auto_commit: bool, consumer_id=1, consumer_kind: int = 1) -> bytes:
    w = Writer().u8(consumer_kind).identifier(consumer_id).identifier(stream).identifier(topic)
    w.u8(0 if partition_id is None else 1).u32(partition_id or 0)
    return w.u8(strategy).u64(value).u32(count).u8(1 if auto_commit else 0).getvalue()


def origin_timestamps(body, deltas: array) -> list:
    """Where each message of a PollMessages reply body came from, without an object per message.

    A message's origin timestamp is its batch's origin_timestamp plus its own
    timestamp_delta (PROTOCOL.md §7.5). Returns one `(batch_origin_us, count)` per batch
    record in the reply and appends each message's delta, in order, to `deltas` (an
    array('I')). When a batch's frames all have the same size and no user headers (as the
    benchmark's do), the deltas are read as one strided view at C speed; other batches are
    walked frame by frame.
    """
    view = memoryview(body)
    end = len(view)
    pos = 16
    records = []
    while pos + 256 <= end:
        origin = int.from_bytes(view[pos + 24:pos + 32], "little")
        length = int.from_bytes(view[pos + 32:pos + 40], "little")
        count = int.from_bytes(view[pos + 48:pos + 52], "little")
        if length < 256 or pos + length > end:
            raise ProtocolViolation(f"batch record of {length} bytes at {pos} of {end}")
        _frame_deltas(view[pos + 256:pos + length], count, deltas)
        records.append((origin, count))
        pos += length
    return records


def _frame_deltas(frames: memoryview, count: int, deltas: array) -> None:
    size = len(frames)
    stride = size // count if count else 0
    if (count and sys.byteorder == "little" and size == stride * count and stride % 4 == 0
            and stride >= 48):
        words = frames.cast("I")
        step = stride // 4
        # Frame k starts at k * stride only if every frame before it is stride bytes long:
        # all user_headers_length (word 8) zero and all payload_length (word 9) stride - 48.
        if (words[8::step].tobytes() == bytes(4 * count)
                and words[9::step].tobytes() == (stride - 48).to_bytes(4, "little") * count):
            deltas.frombytes(words[7::step].tobytes())
            return
    pos = 0
    for _ in range(count):
        if pos + 48 > size:
            raise ProtocolViolation("message frame past the end of its batch")
        deltas.append(int.from_bytes(frames[pos + 28:pos + 32], "little"))
        pos += (48 + int.from_bytes(frames[pos + 32:pos + 36], "little")
                + int.from_bytes(frames[pos + 36:pos + 40], "little"))
