"""The client side of the Iggy protocol without I/O: request frames out, bytes in, events out.

Theory of operation. `ClientCore` is the whole client protocol of one connection and does no
I/O and reads no clock (the h11/aioquic shape, STYLE.md): a driver moves bytes between it and a
socket (blocking.py) or an event loop.

* Sending. `request()`, `login()` and `token_login()` build one request as a list of buffers
  for one vectored write: the 256-byte header, the body, then any `extra` pieces (a batch
  travels as the caller's own buffer, never copied). They number requests and track the
  client id and session the way the official SDK does (PROTOCOL.md §1.5), and append a
  `Pending` (what was asked) to the table of requests awaiting an answer.
* Receiving. The server answers a connection's requests in order, so the table is a FIFO
  queue: each reply frame answers the oldest pending request, and the request number the
  reply echoes (§1.3) must be that request's. A driver hands over bytes in either of two ways:
  `receive_data(chunk)` for transports that deliver chunks (frames lying wholly in the chunk
  are parsed where they sit; only a frame cut by a chunk boundary is copied), or
  `get_buffer()` + `buffer_updated(n)` to read straight into place (a reply body lands in its
  own buffer, sized from the header, with no copy at all). Both return a list of events:
  `Reply` (success; the body without its result section, §1.6) or `Failure` (the IggyError a
  status, a committed rejection or an Eviction frame, §1.7, stands for).
* Garbage. A frame whose size cannot be right, a reply nobody asked for, or one echoing the
  wrong request or operation means the byte stream can no longer be trusted: the core raises
  ProtocolViolation, then raises it again on any further input. The driver must close.
* Misuse. A request that would need the session number while a login is still unanswered
  cannot be framed correctly: building it raises LocalProtocolError and changes nothing.

Helpers for the data path live here too: the SendMessages and PollMessages bodies, and
`origin_timestamps()`, which reads each message's origin out of a PollMessages reply without
an object per message.
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from collections import deque

from iggy_fast import _wire
from iggy_fast._wire import Writer
from iggy_fast.protocol.codes import (COMMAND_OPERATIONS, COMMANDS, EVICTION_ERROR_CODES,
                                      HEADER_SIZE, MAX_FRAME_SIZE, PROTOCOL_VERSION,
                                      RESULT_FRAMED, Operation, carries_body_checksum)
from iggy_fast.protocol.errors import (IggyError, InvalidFormat, InvalidSession,
                                       LocalProtocolError, ProtocolViolation)

LOGIN = 40
# Plain ints: an IntEnum member lookup costs more than the rest of building a request.
REGISTER = int(Operation.REGISTER)
NON_REPLICATED = int(Operation.NON_REPLICATED)
LOGOUT = int(Operation.LOGOUT)
_CHECKSUMMED = frozenset(op for op in range(256) if carries_body_checksum(op))

# The reply header fields the client acts on, read in one call from offset 48 (PROTOCOL.md §1.3,
# §1.7): size @48, command @60, request @200, operation @208, status @216, eviction reason @255.
_REPLY_FIELDS = struct.Struct("<I8xB139xQB7xI35xB")


def _nbytes(piece) -> int:
    return piece.nbytes if isinstance(piece, memoryview) else len(piece)


class Pending:
    """A request sent and not yet answered: its command code, operation byte and number."""

    __slots__ = ("code", "operation", "request")

    def __init__(self, code: int, operation: int, request: int):
        self.code = code
        self.operation = operation
        self.request = request

    @property
    def name(self) -> str:
        command = COMMANDS.get(self.code)
        return command.name if command else f"command {self.code}"

    def __repr__(self) -> str:
        return f"Pending({self.name}, request {self.request})"


class Reply:
    """Event: `pending` succeeded. `body` is a memoryview of the payload (result section cut)."""

    __slots__ = ("pending", "operation", "body")

    def __init__(self, pending: Pending, operation: int, body: memoryview):
        self.pending = pending
        self.operation = operation
        self.body = body

    def __repr__(self) -> str:
        return f"Reply({self.pending.name}, {self.body.nbytes} bytes)"


class Failure:
    """Event: `pending` failed with `error` (a status, a rejection or an eviction)."""

    __slots__ = ("pending", "error")

    def __init__(self, pending: Pending, error: IggyError):
        self.pending = pending
        self.error = error

    def __repr__(self) -> str:
        return f"Failure({self.pending.name}, {self.error!r})"


class ClientCore:
    """One connection's client protocol: numbering, the session, pending requests, framing."""

    def __init__(self):
        self.client_id = os.urandom(16)
        self.session = 0
        self.next_request = 1                   # the number the next request carries
        self.pending: deque[Pending] = deque()
        self._logging_in = False                # a login is sent and not yet answered
        # The frame in progress when input stopped mid-frame: its header (reused) and, once
        # the header is complete, a body buffer of exactly the announced size.
        self._header = bytearray(HEADER_SIZE)
        self._header_have = 0
        self._fields: tuple = ()                # _REPLY_FIELDS of that header, once complete
        self._body: bytearray | None = None
        self._body_have = 0
        self._broken: ProtocolViolation | None = None

    # -- requests ----------------------------------------------------------------------------

    def request(self, code: int, body=b"", extra=()) -> tuple[Pending, list]:
        """Frame one request: header, body, then `extra` pieces appended to the body."""
        op = COMMAND_OPERATIONS.get(code, NON_REPLICATED)
        if op != NON_REPLICATED and self._logging_in:
            # Its header must carry the session the login reply has not brought yet.
            raise LocalProtocolError(f"command {code} cannot be sent while a login is pending")
        length = _nbytes(body) + (sum(_nbytes(p) for p in extra) if extra else 0)
        checksum = 0
        if op in _CHECKSUMMED:
            checksum = _wire.xxh3_64(b"".join((body, *extra)) if extra else bytes(body))
        pending = Pending(code, op, self.next_request)
        if op != NON_REPLICATED:
            self.next_request += 1
        header = _wire.request_header(op, code if op == NON_REPLICATED else 0,
                                      self.session, pending.request, self.client_id, length,
                                      checksum)
        self.pending.append(pending)
        return pending, [header, body, *extra]

    def login(self, username: str, password: str) -> tuple[Pending, list]:
        secret = password.encode()
        body = (Writer().u32(PROTOCOL_VERSION).name("iggy-fast").name("0.1.0").name(username)
                .raw(bytes([len(secret)])).raw(secret).u32(0).getvalue())
        return self._register(body)

    def token_login(self, token: str) -> tuple[Pending, list]:
        raw = token.encode()
        body = (Writer().u32(PROTOCOL_VERSION).name("iggy-fast").name("0.1.0")
                .raw(bytes([len(raw)])).raw(raw).u32(0).getvalue())
        return self._register(body)

    def _register(self, body: bytes) -> tuple[Pending, list]:
        if self._logging_in:
            raise LocalProtocolError("a login is already pending")
        # Every login starts a fresh consensus session: new client id, no session, and
        # request numbers from 1 once the reply binds it (the register itself is request 0).
        self.client_id = os.urandom(16)
        self.session = 0
        self.next_request = 1
        self._logging_in = True
        header = _wire.request_header(REGISTER, 0, 0, 0, self.client_id, len(body),
                                      _wire.xxh3_64(body))
        pending = Pending(LOGIN, REGISTER, 0)
        self.pending.append(pending)
        return pending, [header, body]

    # -- receiving ---------------------------------------------------------------------------

    def receive_data(self, data) -> list:
        """Take a chunk of the byte stream; return the events of the frames it completes.

        Frames lying wholly inside `data` are parsed in place: their `Reply.body` is a view
        of `data`, so a caller that reuses its buffer must do so only after it is done with
        those events (bytes are always safe).
        """
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        events: list = []
        end = view.nbytes
        pos = self._copy_in(view, 0, events) if self._header_have else 0
        while pos < end:
            if end - pos >= HEADER_SIZE:
                fields = self._parse_header(view, pos)
                size = fields[0]
                if end - pos >= size:
                    events.append(self._frame(fields, view[pos + HEADER_SIZE:pos + size]))
                    pos += size
                    continue
            pos = self._copy_in(view, pos, events)
        return events

    def get_buffer(self) -> memoryview:
        """Where the next bytes of the stream go: never past the end of the frame in progress."""
        if self._broken is not None:
            raise self._broken
        if self._body is None:
            return memoryview(self._header)[self._header_have:]
        return memoryview(self._body)[self._body_have:]

    def buffer_updated(self, nbytes: int) -> list:
        """`nbytes` were written at `get_buffer()`; returns the event if a frame completed."""
        if self._body is None:
            self._header_have += nbytes
            if self._header_have < HEADER_SIZE:
                return []
            self._fields = self._parse_header(self._header, 0)
            self._body = bytearray(self._fields[0] - HEADER_SIZE)
            self._body_have = 0
        else:
            self._body_have += nbytes
        if self._body_have < len(self._body):
            return []
        body = memoryview(self._body)
        self._body = None
        self._header_have = 0
        return [self._frame(self._fields, body)]

    def _copy_in(self, view: memoryview, pos: int, events: list) -> int:
        """Copy from `view[pos:]` into the frame in progress until it completes or input ends."""
        end = view.nbytes
        while pos < end:
            room = self.get_buffer()
            n = min(room.nbytes, end - pos)
            room[:n] = view[pos:pos + n]
            pos += n
            done = self.buffer_updated(n)
            if done:
                events += done
                break
        return pos

    def _parse_header(self, buf, pos: int) -> tuple:
        if self._broken is not None:
            raise self._broken
        fields = _REPLY_FIELDS.unpack_from(buf, pos + 48)
        if not HEADER_SIZE <= fields[0] <= MAX_FRAME_SIZE:
            self._fail(f"reply frame of {fields[0]} bytes (outside "
                       f"{HEADER_SIZE}..{MAX_FRAME_SIZE})")
        return fields

    def _fail(self, message: str):
        self._broken = ProtocolViolation(message)
        raise self._broken

    def _frame(self, fields: tuple, body: memoryview):
        """Turn one complete frame into the event answering the oldest pending request."""
        _, command, echoed, operation, status, reason = fields
        if command not in (_wire.COMMAND_REPLY, _wire.COMMAND_EVICTION):
            self._fail(f"frame with command {command}, neither a reply nor an eviction")
        if not self.pending:
            self._fail("a reply to no request")
        pending = self.pending[0]
        if command == _wire.COMMAND_EVICTION:
            # An eviction carries no request number: it answers the oldest request.
            self._answered()
            code = EVICTION_ERROR_CODES.get(reason, 40)
            return Failure(pending, IggyError.from_code(
                code, f"evicted by the server (reason {reason}) after {pending.name}"))
        if echoed != pending.request or operation != pending.operation:
            self._fail(f"reply for request {echoed}, operation {operation} while {pending}, "
                       f"operation {pending.operation} was next")
        self._answered()
        if status:
            return Failure(pending, IggyError.from_code(status))
        if operation in RESULT_FRAMED or (operation == REGISTER and body.nbytes):
            if body.nbytes < 4:
                return Failure(pending, InvalidFormat("reply shorter than its result section"))
            if int.from_bytes(body[:4], "little"):
                if body.nbytes < 12:
                    return Failure(pending, InvalidFormat("rejection without its result"))
                return Failure(pending, IggyError.from_code(int.from_bytes(body[8:12], "little")))
            body = body[4:]
        if operation == REGISTER:
            session = int.from_bytes(body[4:12], "little") if body.nbytes >= 12 else 0
            if session == 0:
                return Failure(pending, InvalidSession("login reply without a session"))
            self.session = session
            self.next_request = 1
        elif operation == LOGOUT:
            self.session = 0
        return Reply(pending, operation, body)

    def _answered(self) -> None:
        if self.pending.popleft().operation == REGISTER:
            self._logging_in = False


# -- the data path -----------------------------------------------------------------------------

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
