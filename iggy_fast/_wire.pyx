# cython: language_level=3
"""The Iggy 0.11 binary codec: framing, headers, body cursors, message batches, checksums.

Wire layout (all little-endian; PROTOCOL.md gives every byte):

    frame   = [header: 256 bytes][body]          header.size (u32 @48) = 256 + len(body)
    request header:  command @60 (5), client u128 @128, request_checksum @144,
                     request u64 @168, operation u8 @176, session u64 @184,
                     command code u32 @196 (only for operation 2, NonReplicated)
    reply header:    size @48, command @60 (8 reply, 13 eviction), request_checksum @128,
                     client @160, timestamp @192, request @200, operation @208, status @216
    batch   = [batch header: 256 bytes][frame]...
              partition_id u64 @0, base_offset @8, base_timestamp @16, origin_timestamp @24,
              batch_length @32, batch_checksum @40, message_count u32 @48, 204 zero bytes
    message = [48-byte header][payload][user headers]
              checksum u64 @0, id u128 @8, offset_delta u32 @24, timestamp_delta u32 @28,
              user_headers_length u32 @32, payload_length u32 @36, reserved u64 @40

Checksums are XXH3-64 (seed 0): a message's over its frame minus the checksum field; a batch's
over its six header fields (44 bytes) followed by every message checksum, in order.

Nothing here does I/O or reads a clock. Frames are parsed where they sit in the receive
buffer; a batch is validated and stamped in place and never copied message by message.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.ref cimport PyObject, Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from iggy_fast._bytes cimport ld32, ld64, st32, st64
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memmove, memset

import sys

from iggy_fast.protocol.errors import (InvalidCommand, InvalidMessagesCount, PartitionNotFound,
                                       ProtocolViolation, TooBigMessagePayload)

if sys.byteorder != "little":  # pragma: no cover
    raise ImportError("iggy_fast._wire supports little-endian hosts only")

cdef extern from "_xxhash.h" nogil:
    uint64_t iggy_xxh3_64(const void *data, size_t length)
    uint32_t iggy_xxh32(const void *data, size_t length, uint32_t seed)
    uint64_t iggy_xxh3_long_generic(const uint8_t *data, size_t length)

HEADER_SIZE = 256
BATCH_HEADER_SIZE = 256
MESSAGE_HEADER_SIZE = 48
POLL_HEADER_SIZE = 16
MAX_FRAME_SIZE = 64 * 1024 * 1024

COMMAND_REQUEST = 5
COMMAND_REPLY = 8
COMMAND_EVICTION = 13

# Operation bytes (PROTOCOL.md §1.4).
OP_REGISTER = 1
OP_NON_REPLICATED = 2
OP_LOGOUT = 3
OP_SEND_MESSAGES = 160
OP_STORE_CONSUMER_OFFSET = 161
OP_DELETE_CONSUMER_OFFSET = 162

cdef enum:
    HDR = 256
    MSG_HDR = 48
    MAX_FRAME = 64 * 1024 * 1024
    BATCH_FIELDS = 44
    # The receive buffer a connection starts with, and gets back after shrink(): it holds a
    # login, a ping, a poll request or a small send whole; anything larger grows it.
    INITIAL_RECEIVE = 4 * 1024
    # The least free space offered to a read once the buffer has grown (and what "nearly
    # full" means when growing); a buffer smaller than twice this is offered from half full.
    READ_ROOM = 64 * 1024
    SHRINK_ABOVE = 8 * 1024 * 1024


# ----------------------------------------------------------------------------------------
# Checksums and hashing.

def xxh3_64(const uint8_t[::1] data not None):
    """XXH3-64 with seed 0 of a bytes-like object."""
    cdef uint64_t h
    with nogil:
        h = iggy_xxh3_64(&data[0] if data.shape[0] else NULL, data.shape[0])
    return h


def xxh3_64_portable(const uint8_t[::1] data not None):
    """XXH3-64 through the portable C path even where AVX2 is used (so tests cover both)."""
    if data.shape[0] <= 240:
        return xxh3_64(data)
    return iggy_xxh3_long_generic(&data[0], data.shape[0])


def xxh32(const uint8_t[::1] data not None, uint32_t seed=0):
    """XXH32 of a bytes-like object."""
    return iggy_xxh32(&data[0] if data.shape[0] else NULL, data.shape[0], seed)


def partition_for_key(const uint8_t[::1] key not None, uint32_t partitions_count):
    """Message-key routing as the official SDK does it: xxh32(key, 0) % partitions_count."""
    if partitions_count == 0:
        raise PartitionNotFound()
    return iggy_xxh32(&key[0] if key.shape[0] else NULL, key.shape[0], 0) % partitions_count


# ----------------------------------------------------------------------------------------
# Framing: a receive buffer the transport reads straight into.

cdef class FrameReader:
    """Accumulates a byte stream in one reusable buffer and cuts it into frames in place.

    The transport asks `get_buffer()` for free space, reads into it, and reports how much
    arrived with `buffer_updated(n)`. `next_frame()` then yields `(header, body)` memoryviews
    of complete frames. Views stay valid until the next `get_buffer()` call: the buffer is
    compacted there, and replaced (never resized, so old views stay safe) when a frame needs
    more room than it has.

    Memory follows the bytes that arrived, not the size a frame announces: the buffer starts
    small (INITIAL_RECEIVE, allocated at the first read) and grows only once it is (nearly)
    full, at most doubling and never past the frame's size, so a peer announcing 64 MiB and
    sending little costs little. A connection that sends 1 MB batches grows once, to one
    batch, and then reads every batch into place unchanged. A frame announcing more than
    `max_frame` is refused at its header (the driver lowers `max_frame` until a login), so
    while `max_frame` is at most INITIAL_RECEIVE the buffer never grows at all.

    The buffer is given back when it is empty: at once when it grew past SHRINK_ABOVE (a
    connection that once sent a huge frame does not keep it), and on `shrink()`, which the
    driver calls for a connection that has been idle a while, so an idle connection holds no
    receive buffer.
    """

    cdef bytearray buf
    cdef Py_ssize_t start
    cdef Py_ssize_t end
    cdef Py_ssize_t need          # bytes the frame in progress needs in total (0 = unknown)
    cdef Py_ssize_t initial
    cdef public Py_ssize_t max_frame

    def __cinit__(self, Py_ssize_t initial=INITIAL_RECEIVE, Py_ssize_t max_frame=MAX_FRAME):
        if initial < 1:
            raise ValueError("the initial receive buffer must hold at least one byte")
        self.buf = bytearray()
        self.start = 0
        self.end = 0
        self.need = 0
        self.initial = initial
        self.max_frame = max_frame

    @property
    def pending(self):
        """Bytes received that do not yet form a whole frame."""
        return self.end - self.start

    @property
    def capacity(self):
        """The size of the receive buffer now (0 when it has been given back)."""
        return len(self.buf)

    def shrink(self):
        """Give the buffer back if it holds nothing (the next read allocates a small one);
        returns the bytes given back. Views of frames cut earlier stay valid: they keep the
        old buffer alive."""
        cdef Py_ssize_t cap = len(self.buf)
        if self.start != self.end or cap == 0:
            return 0
        self.start = self.end = self.need = 0
        self.buf = bytearray()
        return cap

    def get_buffer(self, Py_ssize_t sizehint=-1):
        cdef Py_ssize_t cap = len(self.buf)
        cdef Py_ssize_t used = self.end - self.start
        cdef Py_ssize_t grown
        cdef bytearray fresh
        cdef char *base
        if self.start == self.end:
            self.start = self.end = 0
            if cap == 0 or (cap > SHRINK_ABOVE and self.need == 0):
                self.buf = bytearray(self.initial)
            return memoryview(self.buf)
        if (cap - used < min(<Py_ssize_t>READ_ROOM, cap // 2)
                and not (used < self.need <= cap)):
            # Full, and the frame in progress does not fit (or its size is not known yet):
            # double, but never past the frame's size, so memory grows with what arrived
            # rather than with what the peer announced.
            grown = max(2 * cap, used + READ_ROOM)
            if self.need > used:
                grown = min(grown, self.need)
            fresh = bytearray(grown)
            base = fresh
            memcpy(base, <char *>self.buf + self.start, used)
            self.buf = fresh
            self.start = 0
            self.end = used
        elif cap - self.end < min(<Py_ssize_t>READ_ROOM, cap // 2) and self.start > 0:
            base = self.buf
            memmove(base, base + self.start, used)
            self.start = 0
            self.end = used
        return memoryview(self.buf)[self.end:]

    def buffer_updated(self, Py_ssize_t nbytes):
        self.end += nbytes

    def feed(self, data):
        """Copy `data` in (for transports that hand over whole chunks: QUIC)."""
        cdef const uint8_t[::1] src = data
        cdef Py_ssize_t n = src.shape[0]
        cdef Py_ssize_t done = 0
        cdef Py_ssize_t room
        while done < n:
            mv = self.get_buffer()
            room = min(len(mv), n - done)
            mv[:room] = src[done:done + room]
            self.end += room
            done += room

    def next_frame(self):
        """Return `(header, body)` for the next complete frame, or None if more is needed.

        Raises ProtocolViolation when the announced size is below 256 or above the limit:
        the stream cannot be re-synchronised, so the connection must be closed.
        """
        cdef Py_ssize_t avail = self.end - self.start
        cdef uint32_t size
        cdef const uint8_t *p
        if avail < HDR:
            return None
        p = <const uint8_t *><char *>self.buf + self.start
        size = ld32(p + 48)
        if size < HDR or size > self.max_frame:
            raise ProtocolViolation(f"frame size {size} outside 256..{self.max_frame}")
        if avail < size:
            self.need = size
            return None
        self.need = 0
        view = memoryview(self.buf)
        header = view[self.start:self.start + HDR]
        body = view[self.start + HDR:self.start + size]
        self.start += size
        return header, body


# ----------------------------------------------------------------------------------------
# Request and reply headers.

cdef class RequestHeader:
    """The fields of a request header the server acts on, plus the raw 256 bytes to echo."""

    cdef readonly bytes raw
    cdef readonly uint32_t size
    cdef readonly int operation
    cdef readonly uint32_t code
    cdef readonly uint64_t session
    cdef readonly uint64_t request
    cdef readonly bint has_client
    cdef readonly uint64_t request_checksum_lo
    cdef readonly uint64_t request_checksum_hi
    cdef readonly int command

    @property
    def client(self):
        return int.from_bytes(self.raw[128:144], "little")


def parse_request_header(const uint8_t[::1] header not None):
    """Decode a 256-byte request header (its size field is already known to be sane)."""
    if header.shape[0] != HDR:
        raise ProtocolViolation("request header must be 256 bytes")
    cdef const uint8_t *p = &header[0]
    cdef RequestHeader h = RequestHeader.__new__(RequestHeader)
    h.raw = PyBytes_FromStringAndSize(<const char *>p, HDR)
    h.size = ld32(p + 48)
    h.command = p[60]
    h.operation = p[176]
    h.code = ld32(p + 196) if p[176] == 2 else 0
    h.session = ld64(p + 184)
    h.request = ld64(p + 168)
    h.has_client = ld64(p + 128) != 0 or ld64(p + 136) != 0
    h.request_checksum_lo = ld64(p + 144)
    h.request_checksum_hi = ld64(p + 152)
    return h


def body_checksum_ok(RequestHeader h, const uint8_t[::1] body not None):
    """True when the request carries no body checksum or the one it carries matches."""
    if h.request_checksum_lo == 0 and h.request_checksum_hi == 0:
        return True
    cdef uint64_t c = iggy_xxh3_64(&body[0] if body.shape[0] else NULL, body.shape[0])
    return h.request_checksum_hi == 0 and h.request_checksum_lo == c


def reply_header(RequestHeader req, int operation, uint32_t body_length, uint32_t status=0):
    """A 256-byte reply header echoing what the SDK expects echoed (PROTOCOL.md §1.3)."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, HDR)
    cdef uint8_t *o = <uint8_t *>PyBytes_AS_STRING(out)
    cdef const uint8_t *r = <const uint8_t *>PyBytes_AS_STRING(req.raw)
    memset(o, 0, HDR)
    memcpy(o + 32, r + 32, 16)       # cluster
    st32(o + 48, HDR + body_length)
    memcpy(o + 52, r + 52, 8)        # view, release
    o[60] = 8
    o[61] = r[61]                    # replica
    memcpy(o + 128, r + 144, 16)     # request_checksum
    memcpy(o + 160, r + 128, 16)     # client
    st64(o + 176, req.session)
    memcpy(o + 192, r + 160, 8)      # timestamp
    memcpy(o + 200, r + 168, 8)      # request
    o[208] = <uint8_t>operation
    st32(o + 216, status)
    return out


def eviction_frame(RequestHeader req, int reason, uint32_t version=0, uint32_t version_min=0):
    """A 256-byte Eviction frame (PROTOCOL.md §1.7): the SDK turns `reason` into an error."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, HDR)
    cdef uint8_t *o = <uint8_t *>PyBytes_AS_STRING(out)
    memset(o, 0, HDR)
    st32(o + 48, HDR)
    o[60] = 13
    memcpy(o + 128, PyBytes_AS_STRING(req.raw) + 128, 16)
    st32(o + 144, version)
    st32(o + 148, version_min)
    o[255] = <uint8_t>reason
    return out


def request_header(int operation, uint32_t code, uint64_t session, uint64_t request,
                   bytes client not None, uint32_t body_length, uint64_t body_checksum=0):
    """A 256-byte request header, as a client sends it (used by our client and tests)."""
    if len(client) != 16:
        raise ValueError("client id must be 16 bytes")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, HDR)
    cdef uint8_t *o = <uint8_t *>PyBytes_AS_STRING(out)
    memset(o, 0, HDR)
    st32(o + 48, HDR + body_length)
    o[60] = 5
    memcpy(o + 128, PyBytes_AS_STRING(client), 16)
    st64(o + 144, body_checksum)
    st64(o + 168, request)
    o[176] = <uint8_t>operation
    st64(o + 184, session)
    if operation == 2:
        st32(o + 196, code)
    return out


def parse_reply_header(const uint8_t[::1] header not None):
    """(size, command, operation, status, reason) of a reply or eviction header."""
    if header.shape[0] != HDR:
        raise ProtocolViolation("reply header must be 256 bytes")
    cdef const uint8_t *p = &header[0]
    return ld32(p + 48), p[60], p[208], ld32(p + 216), p[255]


# ----------------------------------------------------------------------------------------
# Body cursor and writer, for command bodies (PROTOCOL.md §3, §5).

cdef class Reader:
    """A bounds-checked cursor over a command body; any overrun is InvalidCommand (3)."""

    cdef const uint8_t[::1] data
    cdef readonly Py_ssize_t pos
    cdef Py_ssize_t n

    def __cinit__(self, const uint8_t[::1] data not None, Py_ssize_t pos=0):
        self.data = data
        self.pos = pos
        self.n = data.shape[0]

    cdef inline const uint8_t *take(self, Py_ssize_t k) except NULL:
        if k < 0 or self.pos + k > self.n:
            raise InvalidCommand("request body too short")
        cdef const uint8_t *p = &self.data[0] + self.pos
        self.pos += k
        return p

    @property
    def remaining(self):
        return self.n - self.pos

    def at_end(self):
        return self.pos == self.n

    def expect_end(self):
        if self.pos != self.n:
            raise InvalidCommand("unexpected bytes after the request body")

    def u8(self):
        return self.take(1)[0]

    def u32(self):
        return ld32(self.take(4))

    def u64(self):
        return ld64(self.take(8))

    def u128(self):
        cdef const uint8_t *p = self.take(16)
        return ld64(p) | (<object>ld64(p + 8) << 64)

    def raw(self, Py_ssize_t k):
        cdef const uint8_t *p = self.take(k)
        return PyBytes_FromStringAndSize(<const char *>p, k)

    def view(self, Py_ssize_t k):
        """A zero-copy view of the next k bytes."""
        self.take(k)
        return self.data[self.pos - k:self.pos]

    def rest(self):
        return self.raw(self.n - self.pos)

    def name(self):
        """WireName: [len u8 (1..255)][UTF-8]."""
        cdef int k = self.take(1)[0]
        if k == 0:
            raise InvalidCommand("empty name")
        return self._utf8(k)

    def short_string(self):
        """[len u8][UTF-8], zero length allowed."""
        return self._utf8(self.take(1)[0])

    def long_string(self):
        """[len u32][UTF-8]."""
        return self._utf8(ld32(self.take(4)))

    cdef object _utf8(self, Py_ssize_t k):
        cdef const uint8_t *p = self.take(k)
        try:
            return PyBytes_FromStringAndSize(<const char *>p, k).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidCommand("name is not UTF-8")

    def identifier(self):
        """Identifier: [kind u8][len u8][value]; returns an int (kind 1) or a str (kind 2).

        A malformed one is a body that does not decode: InvalidCommand (3), as in Iggy.
        """
        cdef int kind = self.take(1)[0]
        cdef int k = self.take(1)[0]
        if kind == 1:
            if k != 4:
                raise InvalidCommand("numeric identifier must be 4 bytes")
            return ld32(self.take(4))
        if kind == 2:
            if k == 0:
                raise InvalidCommand("empty identifier")
            return self._utf8(k)
        raise InvalidCommand(f"identifier kind {kind}")

    def consumer(self):
        """Consumer: [kind u8 (1 consumer, 2 group)][Identifier]."""
        cdef int kind = self.take(1)[0]
        if kind not in (1, 2):
            raise InvalidCommand(f"consumer kind {kind}")
        return kind, self.identifier()

    def optional_partition(self):
        """[flag u8][u32]; None when the flag is 0."""
        cdef int flag = self.take(1)[0]
        cdef uint32_t value = ld32(self.take(4))
        return value if flag else None


cdef class Writer:
    """An append-only encoder into one growing bytearray."""

    cdef readonly bytearray buf

    def __cinit__(self):
        self.buf = bytearray()

    def u8(self, v):
        self.buf.append(v)
        return self

    def u32(self, v):
        self.buf += (<uint32_t>v).to_bytes(4, "little")
        return self

    def u64(self, v):
        self.buf += (<object>v).to_bytes(8, "little")
        return self

    def f32(self, v):
        import struct
        self.buf += struct.pack("<f", v)
        return self

    def raw(self, data):
        self.buf += data
        return self

    def name(self, str s):
        cdef bytes b = s.encode()
        if not 0 < len(b) < 256:
            raise ValueError("name must be 1..255 bytes")
        self.buf.append(len(b))
        self.buf += b
        return self

    def long_string(self, str s):
        cdef bytes b = s.encode()
        self.buf += (<uint32_t>len(b)).to_bytes(4, "little")
        self.buf += b
        return self

    def identifier(self, ident):
        cdef bytes b
        if isinstance(ident, int):
            self.buf += b"\x01\x04"
            self.buf += (<uint32_t>ident).to_bytes(4, "little")
        else:
            b = ident.encode()
            if not 0 < len(b) < 256:
                raise ValueError("identifier must be 1..255 bytes")
            self.buf.append(2)
            self.buf.append(len(b))
            self.buf += b
        return self

    def getvalue(self):
        return bytes(self.buf)


# ----------------------------------------------------------------------------------------
# Message batches.

cdef uint64_t batch_checksum_at(const uint8_t *b) noexcept nogil:
    """XXH3-64 over the batch's six header fields and its message checksums, in order."""
    cdef uint32_t count = ld32(b + 48)
    cdef uint64_t length = ld64(b + 32)
    cdef size_t scratch_len = BATCH_FIELDS + 8 * <size_t>count
    cdef uint8_t small[BATCH_FIELDS + 8 * 64]
    cdef uint8_t *scratch = small
    cdef const uint8_t *f = b + HDR
    cdef uint32_t i
    cdef uint64_t h
    if count > 64:
        scratch = <uint8_t *>malloc(scratch_len)
        if scratch == NULL:
            return 0
    memcpy(scratch, b, 40)
    memcpy(scratch + 40, b + 48, 4)
    for i in range(count):
        memcpy(scratch + BATCH_FIELDS + 8 * i, f, 8)
        f += MSG_HDR + <size_t>ld32(f + 32) + <size_t>ld32(f + 36)
    h = iggy_xxh3_64(scratch, scratch_len)
    if scratch != small:
        free(scratch)
    return h


cdef int check_batch(const uint8_t *b, Py_ssize_t length, uint32_t expected_count,
                     bint verify_messages) noexcept nogil:
    """0 when the batch is well formed, else the Iggy error code to answer with."""
    cdef uint32_t count, i, hlen, plen
    cdef Py_ssize_t pos
    cdef const uint8_t *f
    cdef const uint8_t *r
    cdef uint64_t sum
    if length < HDR + MSG_HDR:
        return 4009 if length == HDR else 3
    count = ld32(b + 48)
    if count == 0 or count != expected_count:
        return 4009
    if <uint64_t>length != ld64(b + 32):
        return 3
    r = b + 52
    while r < b + HDR:
        if r[0] != 0:
            return 3
        r += 1
    pos = HDR
    for i in range(count):
        if pos + MSG_HDR > length:
            return 3
        f = b + pos
        hlen = ld32(f + 32)
        plen = ld32(f + 36)
        if ld64(f + 40) != 0 or ld32(f + 24) != i:
            return 3
        if plen == 0 or plen > 64000000:
            return 4025
        if <uint64_t>pos + MSG_HDR + hlen + plen > <uint64_t>length:
            return 3
        if verify_messages and iggy_xxh3_64(f + 8, MSG_HDR - 8 + hlen + plen) != ld64(f):
            return 4027
        pos += MSG_HDR + hlen + plen
    if pos != length:
        return 3
    if batch_checksum_at(b) != ld64(b + 40):
        return 4039
    return 0


def validate_batch(const uint8_t[::1] batch not None, uint32_t expected_count,
                   bint verify_messages=True):
    """Check a batch in place: tiling, counts, reserved bytes, message and batch checksums.

    Returns 0 or the Iggy error code for the first problem found.
    """
    cdef int rc
    with nogil:
        rc = check_batch(&batch[0] if batch.shape[0] else NULL, batch.shape[0],
                         expected_count, verify_messages)
    return rc


def stamp_batch(uint8_t[::1] batch not None, uint64_t partition_id, uint64_t base_offset,
                uint64_t base_timestamp):
    """Write the server's fields into a validated batch, in place, and re-checksum it."""
    cdef uint8_t *b = &batch[0]
    st64(b, partition_id)
    st64(b + 8, base_offset)
    st64(b + 16, base_timestamp)
    with nogil:
        st64(b + 40, batch_checksum_at(b))


def batch_info(const uint8_t[::1] batch not None):
    """(base_offset, base_timestamp, batch_length, message_count) of a batch header."""
    cdef const uint8_t *b = &batch[0]
    if batch.shape[0] < HDR:
        raise InvalidCommand("batch shorter than its header")
    return ld64(b + 8), ld64(b + 16), ld64(b + 32), ld32(b + 48)


def batch_checksum(const uint8_t[::1] batch not None):
    """The checksum a batch should carry, computed from its header and message checksums."""
    return batch_checksum_at(&batch[0])


def slice_batch(const uint8_t[::1] batch not None, uint64_t first, uint64_t last):
    """The frames of a stored batch whose offsets lie in [first, last], as a new batch.

    Keeps partition_id, base_offset, both timestamps and each frame's offset_delta (so the
    first frame's delta may be non-zero); adjusts batch_length and message_count and
    recomputes the batch checksum (PROTOCOL.md §7.5). Returns None if no frame is selected.
    """
    cdef const uint8_t *b = &batch[0]
    cdef Py_ssize_t n = batch.shape[0]
    cdef uint64_t base = ld64(b + 8)
    cdef uint32_t count = ld32(b + 48)
    cdef uint32_t i, selected = 0
    cdef Py_ssize_t pos = HDR, lo = -1, hi = -1, flen
    cdef uint64_t off
    for i in range(count):
        if pos + MSG_HDR > n:
            break
        flen = MSG_HDR + ld32(b + pos + 32) + ld32(b + pos + 36)
        off = base + ld32(b + pos + 24)
        if first <= off <= last:
            if lo < 0:
                lo = pos
            hi = pos + flen
            selected += 1
        pos += flen
    if selected == 0:
        return None
    cdef bytes out = PyBytes_FromStringAndSize(NULL, HDR + (hi - lo))
    cdef uint8_t *o = <uint8_t *>PyBytes_AS_STRING(out)
    memcpy(o, b, HDR)
    memcpy(o + HDR, b + lo, hi - lo)
    st64(o + 32, HDR + (hi - lo))
    st32(o + 48, selected)
    st64(o + 40, batch_checksum_at(o))
    return out


def build_batch(messages, uint64_t origin_timestamp):
    """Encode `(id, payload, user_headers, timestamp_delta)` tuples as one producer batch.

    Used by our client and by tests; the producer fields (partition, offset, timestamp) are 0.
    """
    cdef list parts = []
    cdef Py_ssize_t total = HDR
    cdef uint32_t i = 0
    for _id, payload, headers, delta in messages:
        total += MSG_HDR + len(payload) + len(headers)
    cdef bytearray out = bytearray(total)
    cdef uint8_t *o = out
    cdef Py_ssize_t pos = HDR
    cdef const uint8_t[::1] pv
    cdef const uint8_t[::1] hv
    for _id, payload, headers, delta in messages:
        pv = payload
        hv = headers
        st64(o + pos + 8, <uint64_t>(_id & 0xFFFFFFFFFFFFFFFF))
        st64(o + pos + 16, <uint64_t>(_id >> 64))
        st32(o + pos + 24, i)
        st32(o + pos + 28, delta)
        st32(o + pos + 32, hv.shape[0])
        st32(o + pos + 36, pv.shape[0])
        if pv.shape[0]:
            memcpy(o + pos + MSG_HDR, &pv[0], pv.shape[0])
        if hv.shape[0]:
            memcpy(o + pos + MSG_HDR + pv.shape[0], &hv[0], hv.shape[0])
        st64(o + pos, iggy_xxh3_64(o + pos + 8, MSG_HDR - 8 + pv.shape[0] + hv.shape[0]))
        pos += MSG_HDR + pv.shape[0] + hv.shape[0]
        i += 1
    st64(o + 24, origin_timestamp)
    st64(o + 32, total)
    st32(o + 48, i)
    st64(o + 40, batch_checksum_at(o))
    return out


cdef extern from "Python.h":
    # A tuple subclass's instance is allocated as `tuple.__new__` allocates it (CPython's
    # tuple_subtype_new): the type's generic allocator with room for the items.
    object PyType_GenericAlloc(object type, Py_ssize_t nitems)
    object _PyLong_FromByteArray(const unsigned char *bytes, size_t n, int little_endian,
                                 int is_signed)


cdef inline void set_field(object record, Py_ssize_t i, object value):
    Py_INCREF(value)                    # PyTuple_SET_ITEM steals a reference
    PyTuple_SET_ITEM(record, i, value)


cdef object message_record(object record_type, const uint8_t *b, const uint8_t *f,
                           uint32_t plen, uint32_t hlen):
    """One message as a tuple, or as an instance of `record_type` (a named tuple class of
    the seven fields) allocated as `tuple.__new__` would, without its Python-level call:
    a consumer iterating messages pays a fraction of a microsecond per message."""
    record = PyTuple_New(7) if record_type is None else PyType_GenericAlloc(record_type, 7)
    set_field(record, 0, ld64(b + 8) + ld32(f + 24))
    set_field(record, 1, ld64(b + 16))
    set_field(record, 2, ld64(b + 24) + ld32(f + 28))
    set_field(record, 3, _PyLong_FromByteArray(f + 8, 16, 1, 0))
    set_field(record, 4, PyBytes_FromStringAndSize(<const char *>f + MSG_HDR, plen))
    set_field(record, 5, PyBytes_FromStringAndSize(<const char *>f + MSG_HDR + plen, hlen))
    set_field(record, 6, ld64(f))
    return record


cdef void walk_start(Walk *w, const uint8_t *data, Py_ssize_t n) noexcept nogil:
    """Start a walk over the batches lying back to back in data[:n] (see walk_next)."""
    w.data = data
    w.n = n
    w.end = 0
    w.fpos = 0
    w.left = 0
    w.batch = NULL
    w.frame = NULL


cdef int walk_next(Walk *w) except -1:
    """Step to the next message: 1 with `w.batch` and `w.frame` pointing at it, 0 once no
    whole batch header is left. InvalidCommand for a batch or message that overruns."""
    cdef const uint8_t *b
    cdef uint32_t hlen, plen
    cdef Py_ssize_t pos
    while w.left == 0:
        pos = w.end
        if pos + HDR > w.n:
            return 0
        b = w.data + pos
        w.end = pos + <Py_ssize_t>ld64(b + 32)
        if w.end > w.n or w.end < pos + HDR:
            raise InvalidCommand("truncated batch")
        w.batch = b
        w.left = ld32(b + 48)
        w.fpos = pos + HDR
    if w.fpos + MSG_HDR > w.end:
        raise InvalidCommand("truncated message")
    w.frame = w.data + w.fpos
    hlen = ld32(w.frame + 32)
    plen = ld32(w.frame + 36)
    if w.fpos + MSG_HDR + <Py_ssize_t>hlen + plen > w.end:
        raise InvalidCommand("truncated message")
    w.fpos += MSG_HDR + <Py_ssize_t>hlen + plen
    w.left -= 1
    return 1


def iter_messages(const uint8_t[::1] batches not None, record_type=None):
    """Decode batches back to back into `(offset, timestamp, origin_timestamp, id, payload,
    user_headers, checksum)` tuples, or instances of `record_type`, a named tuple class of
    those seven fields. For clients and tests, not for the server's hot path."""
    if record_type is not None and not (isinstance(record_type, type)
                                        and issubclass(record_type, tuple)
                                        and len(getattr(record_type, "_fields", ())) == 7):
        raise TypeError("record_type must be a named tuple class of seven fields")
    cdef Walk w
    walk_start(&w, &batches[0] if batches.shape[0] else NULL, batches.shape[0])
    out = []
    while walk_next(&w):
        out.append(message_record(record_type, w.batch, w.frame, ld32(w.frame + 36),
                                  ld32(w.frame + 32)))
    return out


# ----------------------------------------------------------------------------------------
# The client's data path: a batch encoded from the caller's payloads, a poll reply read
# where it lies.

cdef enum:
    MAX_PAYLOAD = 64000000          # the SDK's limit on one payload (PROTOCOL.md §7.8)
    MAX_USER_HEADERS = 100000


cdef int data_of(object obj, const char **data, Py_ssize_t *size, Py_buffer *view) except -1:
    """Point at the bytes of a payload: bytes and str (its UTF-8, cached by CPython) directly,
    anything else through the buffer protocol. Returns 1 when `view` must be released."""
    if type(obj) is bytes:
        data[0] = PyBytes_AS_STRING(obj)
        size[0] = PyBytes_GET_SIZE(obj)
        return 0
    if type(obj) is str:
        data[0] = PyUnicode_AsUTF8AndSize(obj, size)
        return 0
    PyObject_GetBuffer(obj, view, PyBUF_SIMPLE)
    data[0] = <const char *>view.buf
    size[0] = view.len
    return 1


def encode_batch(list payloads not None, uint64_t origin_timestamp, headers=None, ids=None):
    """Encode payloads (bytes, str as UTF-8, or any buffer) as one producer batch.

    Each payload is copied once, by C, into its frame of the batch; no Python object is made
    per message. `headers` is None, one encoded user-header block for every message, or a
    list with a block (or None) per message. `ids` is None (every id 0), a list of ints, or
    16 random bytes per message (e.g. os.urandom), which become UUIDv4 ids as the official
    SDK mints for messages sent without one.
    """
    cdef Py_ssize_t n = len(payloads), i, total = HDR, size, hsize, pos = HDR
    cdef Py_ssize_t shared = 0
    cdef const char *data
    cdef const char *hdata = NULL
    cdef Py_buffer view, hview
    cdef int held, hheld = 0
    cdef bint each = type(headers) is list
    cdef uint8_t *o
    cdef object ident
    cdef const uint8_t[::1] random = None
    if n == 0:
        raise InvalidMessagesCount("a batch needs at least one message")
    if ids is not None and type(ids) is not list:
        random = ids
        ids = None
        if random.shape[0] != 16 * n:
            raise ValueError("random ids need 16 bytes per payload")
    if each and len(<list>headers) != n or ids is not None and len(ids) != n:
        raise ValueError("headers and ids, when lists, need one entry per payload")
    if headers is not None and not each:
        hheld = data_of(headers, &hdata, &shared, &hview)
        if hheld:
            PyBuffer_Release(&hview)
        if shared > MAX_USER_HEADERS:
            raise TooBigMessagePayload(f"user headers of {shared} bytes (limit {MAX_USER_HEADERS})")
    for i in range(n):
        held = data_of(payloads[i], &data, &size, &view)
        if held:
            PyBuffer_Release(&view)
        if size > MAX_PAYLOAD:
            raise TooBigMessagePayload(f"message {i}: payload of {size} bytes (limit {MAX_PAYLOAD})")
        hsize = shared
        if each and (<list>headers)[i] is not None:
            held = data_of((<list>headers)[i], &hdata, &hsize, &view)
            if held:
                PyBuffer_Release(&view)
            if hsize > MAX_USER_HEADERS:
                raise TooBigMessagePayload(
                    f"message {i}: user headers of {hsize} bytes (limit {MAX_USER_HEADERS})")
        total += MSG_HDR + size + hsize
    out = bytearray(total)
    o = out
    if headers is not None and not each:
        hheld = data_of(headers, &hdata, &shared, &hview)
    try:
        for i in range(n):
            held = data_of(payloads[i], &data, &size, &view)
            memcpy(o + pos + MSG_HDR, data, size)
            if held:
                PyBuffer_Release(&view)
            hsize = shared
            if each:
                hsize = 0
                if (<list>headers)[i] is not None:
                    held = data_of((<list>headers)[i], &hdata, &hsize, &view)
                    memcpy(o + pos + MSG_HDR + size, hdata, hsize)
                    if held:
                        PyBuffer_Release(&view)
            elif shared:
                memcpy(o + pos + MSG_HDR + size, hdata, shared)
            if ids is not None:
                ident = ids[i]
                st64(o + pos + 8, <uint64_t>(ident & 0xFFFFFFFFFFFFFFFF))
                st64(o + pos + 16, <uint64_t>(ident >> 64))
            elif random is not None:
                # The u128 little-endian: version 4 in bits 76..79, variant 0b10 in 62..63.
                memcpy(o + pos + 8, &random[16 * i], 16)
                o[pos + 8 + 9] = (o[pos + 8 + 9] & 0x0F) | 0x40
                o[pos + 8 + 7] = (o[pos + 8 + 7] & 0x3F) | 0x80
            st32(o + pos + 24, <uint32_t>i)
            st32(o + pos + 32, <uint32_t>hsize)
            st32(o + pos + 36, <uint32_t>size)
            st64(o + pos, iggy_xxh3_64(o + pos + 8, MSG_HDR - 8 + size + hsize))
            pos += MSG_HDR + size + hsize
    finally:
        if hheld:
            PyBuffer_Release(&hview)
    st64(o + 24, origin_timestamp)
    st64(o + 32, total)
    st32(o + 48, <uint32_t>n)
    st64(o + 40, batch_checksum_at(o))
    return out


cdef Py_ssize_t check_poll_reply(const uint8_t[::1] body, uint64_t *first, uint64_t *last,
                                 uint64_t *payload) except -1:
    """Check that every batch and frame of a PollMessages reply body lies inside it; return
    the number of messages and set the first and last offsets and the payload bytes."""
    cdef Py_ssize_t pos = 16, n = body.shape[0], end, fpos, count = 0
    cdef uint32_t i, frames
    cdef const uint8_t *b
    cdef const uint8_t *f
    if n < 16:
        raise ProtocolViolation(f"poll reply of {n} bytes, shorter than its 16-byte header")
    while pos < n:
        if pos + HDR > n:
            raise ProtocolViolation(f"poll reply: {n - pos} stray bytes after its batches")
        b = &body[0] + pos
        end = pos + <Py_ssize_t>ld64(b + 32)
        if end > n or end < pos + HDR:
            raise ProtocolViolation(f"poll reply: batch at {pos} runs past the reply")
        frames = ld32(b + 48)
        fpos = pos + HDR
        for i in range(frames):
            if fpos + MSG_HDR > end:
                raise ProtocolViolation(f"poll reply: message frame past its batch at {pos}")
            f = &body[0] + fpos
            payload[0] += ld32(f + 36)
            fpos += MSG_HDR + <Py_ssize_t>ld32(f + 32) + <Py_ssize_t>ld32(f + 36)
            if fpos > end:
                raise ProtocolViolation(f"poll reply: message frame past its batch at {pos}")
            if count == 0:
                first[0] = ld64(b + 8) + ld32(f + 24)
            last[0] = ld64(b + 8) + ld32(f + 24)
            count += 1
        pos = end
    return count


def poll_summary(const uint8_t[::1] body not None):
    """`(partition_id, current_offset, count, first_offset, last_offset, payload_bytes)` of a
    PollMessages reply body, after checking that every frame lies inside it (offsets -1 when
    empty)."""
    cdef uint64_t first = 0, last = 0, payload = 0
    cdef Py_ssize_t count = check_poll_reply(body, &first, &last, &payload)
    if count == 0:
        return ld32(&body[0]), ld64(&body[0] + 4), 0, -1, -1, 0
    return ld32(&body[0]), ld64(&body[0] + 4), count, first, last, payload



def poll_payloads(object body):
    """Every payload of a PollMessages reply body, in order, each a memoryview slice of `body`
    (no copy). Run poll_summary on the body first: it checks the bounds this walk trusts."""
    cdef const uint8_t[::1] raw = body
    cdef Py_ssize_t pos = 16, n = raw.shape[0], end, fpos, size
    cdef uint32_t i, frames
    cdef const uint8_t *f
    cdef object view = memoryview(body)
    cdef list out = []
    while pos + HDR <= n:
        end = pos + <Py_ssize_t>ld64(&raw[0] + pos + 32)
        frames = ld32(&raw[0] + pos + 48)
        fpos = pos + HDR
        for i in range(frames):
            f = &raw[0] + fpos
            size = ld32(f + 36)
            if fpos + MSG_HDR + size > end or end > n:
                raise ProtocolViolation(f"poll reply: message frame past its batch at {pos}")
            out.append(view[fpos + MSG_HDR:fpos + MSG_HDR + size])
            fpos += MSG_HDR + size + <Py_ssize_t>ld32(f + 32)
        pos = end
    return out


# ----------------------------------------------------------------------------------------
# The producer's batches: cut a send into spans, and encode spans of one or more sends into a
# buffer the producer reuses (no allocation, no page faults, no zero fill per batch).

cdef inline uint64_t rotl64(uint64_t x, int k) noexcept nogil:
    return (x << k) | (x >> (64 - k))


cdef inline uint64_t xoshiro_next(uint64_t *s) noexcept nogil:
    """xoshiro256** (Blackman and Vigna): fast, 256 bits of state, good for unique ids."""
    cdef uint64_t result = rotl64(s[1] * 5, 7) * 9
    cdef uint64_t t = s[1] << 17
    s[2] ^= s[0]
    s[3] ^= s[1]
    s[1] ^= s[2]
    s[0] ^= s[3]
    s[2] ^= t
    s[3] = rotl64(s[3], 45)
    return result


def payload_spans(list payloads not None, Py_ssize_t start, Py_ssize_t stop,
                  Py_ssize_t batch_length, Py_ssize_t batch_bytes):
    """Cut payloads[start:stop] into spans of at most `batch_length` messages and at most
    `batch_bytes` payload bytes (a payload bigger than that travels alone): a list of
    (start, stop, payload bytes). Sizes are read in C (str as UTF-8), no object per message."""
    cdef Py_ssize_t i, size, first = start, nbytes = 0
    cdef const char *data
    cdef Py_buffer view
    cdef list spans = []
    if start < 0 or stop > len(payloads) or start > stop or batch_length < 1:
        raise ValueError("bad span bounds or batch_length")
    for i in range(start, stop):
        if data_of(payloads[i], &data, &size, &view):
            PyBuffer_Release(&view)
        if i > first and (i - first >= batch_length or nbytes + size > batch_bytes):
            spans.append((first, i, nbytes))
            first, nbytes = i, 0
        nbytes += size
    if stop > first:
        spans.append((first, stop, nbytes))
    return spans


def encode_parts(object buf, list parts not None, uint64_t origin_timestamp, object seed=None):
    """Encode one producer batch from `parts` into `buf`: returns (buffer, batch length).

    Each part is (payloads, start, stop, headers): payloads[start:stop] (bytes, str as UTF-8
    or any buffer) in order, each copied once by C into its frame, with `headers` (one encoded
    user-header block, or None) on each of them. `buf` is a bytearray to reuse, used when
    it is large enough (the batch is its first `length` bytes; nothing past them is written);
    otherwise (or None) a new one is made and returned. `seed`: None for ids 0, or 32 random
    bytes from which every message gets a UUIDv4 id (xoshiro256**), as the official SDK mints
    for messages sent without one.
    """
    cdef Py_ssize_t total = HDR, pos = HDR, size, hsize, i, start, stop
    cdef Py_ssize_t count = 0
    cdef const char *data
    cdef const char *hdata
    cdef Py_buffer view, hview
    cdef int held, hheld
    cdef uint8_t *o
    cdef uint8_t *f
    cdef uint64_t state[4]
    cdef const uint8_t[::1] raw
    cdef bint ids = seed is not None
    cdef list payloads
    cdef tuple part
    if ids:
        raw = seed
        if raw.shape[0] != 32:
            raise ValueError("the id seed is 32 bytes")
        memcpy(state, &raw[0], 32)
        if state[0] == 0 and state[1] == 0 and state[2] == 0 and state[3] == 0:
            state[0] = 1
    for part in parts:
        payloads, start, stop, headers = part
        if start < 0 or stop > len(payloads) or start > stop:
            raise ValueError("bad part bounds")
        hsize = 0
        if headers is not None:
            hheld = data_of(headers, &hdata, &hsize, &hview)
            if hheld:
                PyBuffer_Release(&hview)
            if hsize > MAX_USER_HEADERS:
                raise TooBigMessagePayload(f"user headers of {hsize} bytes (limit {MAX_USER_HEADERS})")
        for i in range(start, stop):
            held = data_of(payloads[i], &data, &size, &view)
            if held:
                PyBuffer_Release(&view)
            if size > MAX_PAYLOAD:
                raise TooBigMessagePayload(f"message {i}: payload of {size} bytes (limit {MAX_PAYLOAD})")
            total += MSG_HDR + size + hsize
        count += stop - start
    if count == 0:
        raise InvalidMessagesCount("a batch needs at least one message")
    if count > 0xFFFFFFFF:
        raise InvalidMessagesCount(f"{count} messages in one batch")
    if buf is None or type(buf) is not bytearray or PyByteArray_GET_SIZE(buf) < total:
        buf = PyByteArray_FromStringAndSize(NULL, total)
    o = <uint8_t *>PyByteArray_AS_STRING(buf)
    memset(o, 0, HDR)
    count = 0
    for part in parts:
        payloads, start, stop, headers = part
        hsize = 0
        hheld = 0
        if headers is not None:
            hheld = data_of(headers, &hdata, &hsize, &hview)
        try:
            for i in range(start, stop):
                # A buffer payload could have changed size since it was measured: re-check,
                # so nothing is written past the batch.
                held = data_of(payloads[i], &data, &size, &view)
                if pos + MSG_HDR + size + hsize > total:
                    if held:
                        PyBuffer_Release(&view)
                    raise ValueError("a payload grew while its batch was encoded")
                f = o + pos
                memcpy(f + MSG_HDR, data, size)
                if held:
                    PyBuffer_Release(&view)
                if hsize:
                    memcpy(f + MSG_HDR + size, hdata, hsize)
                if ids:
                    st64(f + 8, xoshiro_next(state))
                    st64(f + 16, xoshiro_next(state))
                    # The u128 little-endian: version 4 in bits 76..79, variant 0b10 in 62..63.
                    f[8 + 9] = (f[8 + 9] & 0x0F) | 0x40
                    f[8 + 7] = (f[8 + 7] & 0x3F) | 0x80
                else:
                    st64(f + 8, 0)
                    st64(f + 16, 0)
                st32(f + 24, <uint32_t>count)
                st32(f + 28, 0)
                st32(f + 32, <uint32_t>hsize)
                st32(f + 36, <uint32_t>size)
                st64(f + 40, 0)
                st64(f, iggy_xxh3_64(f + 8, MSG_HDR - 8 + size + hsize))
                pos += MSG_HDR + size + hsize
                count += 1
        finally:
            if hheld:
                PyBuffer_Release(&hview)
    if pos != total:
        raise ValueError("a payload shrank while its batch was encoded")
    st64(o + 24, origin_timestamp)
    st64(o + 32, total)
    st32(o + 48, <uint32_t>count)
    st64(o + 40, batch_checksum_at(o))
    return buf, total
