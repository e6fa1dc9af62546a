# cython: language_level=3
"""WebSocket framing (RFC 6455 §5) for the WebSocket transports, without copies on the way in.

`FrameDecoder` parses frames where they were read: the transport reads into the connection's
receive buffer (the server's FrameReader, the client's ClientCore buffers) and hands the new
bytes to `decode()`, which strips the frame headers, unmasks the payload and moves it down
over the headers, in one pass, 8 bytes at a time. What is left at the front of those bytes is
the Iggy byte stream alone, as a TCP read would have given it; message boundaries mean
nothing to it (PROTOCOL.md: a request frame may be split over messages or share one). A frame
header cut by a read is kept here (at most 14 bytes) until the rest arrives, so no byte of
the receive buffer past the returned count is ever needed again.

Control frames (ping, pong, close: at most 125 bytes, never fragmented) are collected in
`events` as (opcode, payload bytes) for the transport to answer; they are rare, so Python
objects are fine there. Bad input is not raised: the first error is recorded in `error_code`
and `error_reason` (a close code and a reason for the log line), and from then on data is
discarded. Errors after which frames can still be told apart (a text message, a message over
`max_message`) keep parsing, so the peer's close frame is still seen for a clean close
handshake; a broken frame (reserved bits, an unknown opcode, masking the wrong way round, a
continuation with no message begun) stops parsing altogether. Setting `discard` (the transport
has begun closing) likewise drops data while control frames are still parsed.

Sending: `frame_header()` is the 2 to 10 bytes before an unmasked payload (the server's
frames: the payload pieces follow as they are, stored batches by sendfile); `masked_frame()`
copies pieces into one new buffer behind a header and masking key, masking as it copies (a
client's frames must be masked, so the caller's batch is never touched); `close_payload()`
is a close frame's body; `accept_key()` the upgrade's Sec-WebSocket-Accept.
"""

from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy, memmove

import base64
import hashlib

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

# Close codes (RFC 6455 §7.4.1).
NORMAL = 1000
PROTOCOL_ERROR = 1002
UNSUPPORTED_DATA = 1003
MESSAGE_TOO_BIG = 1009
TRY_AGAIN_LATER = 1013

cdef enum:
    MAX_HEADER = 14           # 2 + 8 (64-bit length) + 4 (masking key)
    MAX_CONTROL = 125


cdef inline Py_ssize_t _header_size(const uint8_t *head) noexcept nogil:
    """The full header size given its first two bytes."""
    cdef Py_ssize_t size = 2
    cdef uint8_t length = head[1] & 0x7F
    if length == 126:
        size += 2
    elif length == 127:
        size += 8
    if head[1] & 0x80:
        size += 4
    return size


cdef inline void mask_copy(uint8_t *dst, const uint8_t *src, Py_ssize_t n,
                           const uint8_t *key, Py_ssize_t phase) noexcept nogil:
    """dst[i] = src[i] ^ key[(phase + i) % 4]. dst may equal src, or lie below it in the same
    buffer: each word is loaded before anything at or above it is stored."""
    cdef uint8_t k8[8]
    cdef uint64_t k, w
    cdef Py_ssize_t i
    for i in range(8):
        k8[i] = key[(phase + i) & 3]
    memcpy(&k, k8, 8)
    i = 0
    while i + 8 <= n:
        memcpy(&w, src + i, 8)
        w ^= k
        memcpy(dst + i, &w, 8)
        i += 8
    while i < n:
        dst[i] = src[i] ^ k8[i & 7]
        i += 1


cdef class FrameDecoder:
    """Frames of one direction of one connection, decoded in place (see the module
    docstring). `masked`: frames must be masked (a server reading a client) or must not be
    (a client reading a server). `max_message`: the largest data message taken (0: any)."""

    cdef bint masked
    cdef Py_ssize_t max_message
    cdef uint8_t head[MAX_HEADER]
    cdef Py_ssize_t head_have
    cdef Py_ssize_t left          # payload bytes of the frame in progress still to come
    cdef bint in_payload
    cdef int opcode               # of the frame in progress
    cdef uint8_t key[4]
    cdef Py_ssize_t phase         # payload bytes of the frame done, modulo 4
    cdef bint in_message          # a fragmented data message awaits continuations
    cdef Py_ssize_t message_size  # bytes of the data message so far
    cdef bint broken              # frames can no longer be told apart: nothing is parsed
    cdef bytearray control        # the payload of the control frame in progress
    cdef public bint discard      # data is dropped (an error, or the transport is closing)
    cdef public list events       # control frames received: (opcode, payload bytes)
    cdef public int error_code    # the close code of the first error (0: none)
    cdef public str error_reason

    def __cinit__(self, bint masked, Py_ssize_t max_message=0):
        self.masked = masked
        self.max_message = max_message
        self.events = []
        self.error_reason = ""

    def decode(self, uint8_t[::1] buf not None, Py_ssize_t n):
        """Decode the `n` bytes that just arrived at the start of `buf`; returns how many
        bytes of data payload now lie unmasked at its start (the rest of the n is spent)."""
        cdef uint8_t *p = &buf[0] if buf.shape[0] else NULL
        cdef Py_ssize_t read = 0, written = 0, k
        if n > buf.shape[0]:
            raise ValueError("n is larger than the buffer")
        while read < n and not self.broken:
            if not self.in_payload:
                read += self._take_header(p + read, n - read)
                continue
            k = min(self.left, n - read)
            if self.opcode >= CLOSE:
                if self.masked:
                    mask_copy(p + read, p + read, k, self.key, self.phase)
                self.control += (<char *>p + read)[:k]
            elif not self.discard:
                if self.masked:
                    mask_copy(p + written, p + read, k, self.key, self.phase)
                elif written != read:              # a header was cut out before it
                    memmove(p + written, p + read, k)
                written += k
            self.phase = (self.phase + k) & 3
            self.left -= k
            read += k
            if self.left == 0:
                self._end_frame()
        return written

    cdef Py_ssize_t _take_header(self, const uint8_t *p, Py_ssize_t avail) except -1:
        """Copy header bytes in; once the header is whole, begin its frame. Returns the bytes
        taken."""
        cdef Py_ssize_t need = 2, take, k
        if self.head_have >= 2:
            need = _header_size(self.head)
        take = min(need - self.head_have, avail)
        memcpy(self.head + self.head_have, p, take)
        self.head_have += take
        if self.head_have == 2 and need == 2:       # the first two bytes tell the rest
            need = _header_size(self.head)
            k = min(need - 2, avail - take)
            memcpy(self.head + 2, p + take, k)
            self.head_have += k
            take += k
        if self.head_have == need:
            self.head_have = 0
            self._begin_frame()
        return take

    cdef int _begin_frame(self) except -1:
        cdef uint8_t b0 = self.head[0], b1 = self.head[1]
        cdef int opcode = b0 & 0x0F
        cdef bint fin = b0 & 0x80
        cdef uint64_t length = b1 & 0x7F
        cdef Py_ssize_t at = 2, i
        if length == 126:
            length = (<uint64_t>self.head[2] << 8) | self.head[3]
            at = 4
        elif length == 127:
            length = 0
            for i in range(2, 10):
                length = (length << 8) | self.head[i]
            at = 10
        if b0 & 0x70:
            return self._fail(PROTOCOL_ERROR, "a frame with reserved bits set (no extension "
                              "was agreed)", True)
        if bool(b1 & 0x80) != self.masked:
            return self._fail(PROTOCOL_ERROR, "an unmasked frame from a client" if self.masked
                              else "a masked frame from the server", True)
        if length >> 63:
            return self._fail(PROTOCOL_ERROR, "a frame length with its top bit set", True)
        if self.masked:
            memcpy(self.key, self.head + at, 4)
        self.opcode = opcode
        self.left = <Py_ssize_t>length
        self.phase = 0
        self.in_payload = True
        if opcode >= CLOSE:
            if opcode > PONG:
                return self._fail(PROTOCOL_ERROR, f"a frame of unknown opcode {opcode}", True)
            if not fin or length > MAX_CONTROL:
                return self._fail(PROTOCOL_ERROR, "a fragmented or over-long control frame",
                                  True)
            self.control = bytearray()
        elif opcode == CONTINUATION:
            if not self.in_message:
                return self._fail(PROTOCOL_ERROR, "a continuation frame with no message "
                                  "begun", True)
        elif opcode == TEXT or opcode == BINARY:
            if self.in_message:
                return self._fail(PROTOCOL_ERROR, "a new message inside a fragmented one",
                                  True)
            self.message_size = 0
            if opcode == TEXT:
                self._fail(UNSUPPORTED_DATA, "a text message (the protocol is carried in "
                           "binary messages)", False)
        else:
            return self._fail(PROTOCOL_ERROR, f"a frame of unknown opcode {opcode}", True)
        if opcode < CLOSE:
            self.in_message = not fin
            self.message_size += self.left
            if self.max_message and self.message_size > self.max_message:
                self._fail(MESSAGE_TOO_BIG, f"a message of at least {self.message_size} "
                           f"bytes, over {self.max_message} (websocket.max_message_size)",
                           False)
        if self.left == 0:
            self._end_frame()
        return 0

    cdef void _end_frame(self):
        self.in_payload = False
        if self.opcode >= CLOSE:
            self.events.append((self.opcode, bytes(self.control)))
            self.control = None

    cdef int _fail(self, int code, str reason, bint broken) except -1:
        if not self.error_code:
            self.error_code = code
            self.error_reason = reason
        self.discard = True
        if broken:
            self.broken = True
        return 0


cdef Py_ssize_t _put_header(uint8_t *p, int opcode, Py_ssize_t length, bint masked):
    p[0] = 0x80 | opcode
    cdef uint8_t mask_bit = 0x80 if masked else 0
    cdef int i
    if length < 126:
        p[1] = mask_bit | length
        return 2
    if length < 65536:
        p[1] = mask_bit | 126
        p[2] = (length >> 8) & 0xFF
        p[3] = length & 0xFF
        return 4
    p[1] = mask_bit | 127
    for i in range(8):
        p[2 + i] = (length >> (8 * (7 - i))) & 0xFF
    return 10


def frame_header(int opcode, Py_ssize_t length):
    """The header of an unmasked, unfragmented frame of `length` payload bytes."""
    cdef uint8_t head[10]
    cdef Py_ssize_t size = _put_header(head, opcode, length, False)
    return (<char *>head)[:size]


def masked_frame(int opcode, pieces, const uint8_t[::1] key not None):
    """One masked, unfragmented frame carrying `pieces` (bytes-like) in order, in a new
    bytearray, masked with the 4-byte `key` as it is copied."""
    cdef Py_ssize_t length = 0, at, phase = 0, n
    cdef const uint8_t[::1] piece
    cdef uint8_t head[MAX_HEADER]
    cdef uint8_t *out
    if key.shape[0] != 4:
        raise ValueError("a masking key is 4 bytes")
    views = [memoryview(p).cast("B") if type(p) is memoryview else p for p in pieces]
    for p in views:
        length += len(p)
    at = _put_header(head, opcode, length, True)
    memcpy(head + at, &key[0], 4)
    at += 4
    frame = bytearray(at + length)
    out = <uint8_t *><char *>frame
    memcpy(out, head, at)
    for p in views:
        piece = p
        n = piece.shape[0]
        if n:
            mask_copy(out + at, &piece[0], n, &key[0], phase)
            at += n
            phase = (phase + n) & 3
    return frame


def close_payload(int code, str reason=""):
    """A close frame's body: the code, big-endian, then the reason (cut to fit 125 bytes)."""
    return code.to_bytes(2, "big") + reason.encode()[:MAX_CONTROL - 2]


def accept_key(key: bytes) -> bytes:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
