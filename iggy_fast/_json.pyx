# cython: language_level=3
"""The message paths of the HTTP API in compiled code: a send's messages into one batch, and
the poll reply (PolledMessages JSON) written in one pass from the stored batches.

Send: `batch_from_messages` takes the `messages` array as orjson parsed it (a list of dicts,
payloads as base64 str) and writes the producer batch of _wire.pyx's layout directly: the
payloads are base64-decoded in place, each message's checksum computed (XXH3-64, _xxhash.h),
and the batch checksum last; only user headers (rare) go through a Python callable.

Poll:

    {"partition_id":P,"current_offset":C,"count":N,"messages":[
      {"header":{"checksum":u64,"id":u128,"offset":u64,"timestamp":u64,
                 "origin_timestamp":u64,"user_headers_length":u32,"payload_length":u32,
                 "reserved":u64},
       "payload":"<base64>",
       "user_headers":[{"key":{"kind":"string","value":"<base64>"},
                        "value":{"kind":"uint64","value":"<base64>"}}, ...]}, ...]}

The batches are read where they sit (the layout is _wire.pyx's: a 256-byte batch header, then
per message a 48-byte header, the payload and the user-header TLV block); no Python object is
made per message. A first pass bounds the output size, the second writes into one bytearray.
A user-header block that is not a well-formed TLV block is shown as one base64 string, as
Iggy does. Base64 goes through a 4096-entry table of character pairs (12 bits at a time).
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize, PyByteArray_Resize
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from iggy_fast._bytes cimport ld32, ld64, st32, st64
from iggy_fast._wire cimport Walk, batch_checksum_at, walk_next, walk_start
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

from iggy_fast import _wire
from iggy_fast.protocol.errors import InvalidCommand

cdef extern from "_xxhash.h" nogil:
    uint64_t iggy_xxh3_64(const void *data, size_t length)

cdef extern from *:
    """
    static const char B64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    static unsigned short B64_PAIRS[4096];
    static signed char B64_VALUE[256];

    static void iggy_b64_init(void) {
        for (int i = 0; i < 256; i++) B64_VALUE[i] = -1;
        for (int i = 0; i < 64; i++) B64_VALUE[(unsigned char)B64[i]] = (signed char)i;
        for (int i = 0; i < 4096; i++) {
            char pair[2] = {B64[i >> 6], B64[i & 63]};
            memcpy(&B64_PAIRS[i], pair, 2);
        }
    }

    /* Standard base64 with padding; returns the end of what it wrote. */
    static char *iggy_b64(char *out, const unsigned char *in, size_t n) {
        size_t i = 0;
        for (; i + 3 <= n; i += 3) {
            unsigned v = ((unsigned)in[i] << 16) | ((unsigned)in[i + 1] << 8) | in[i + 2];
            memcpy(out, &B64_PAIRS[v >> 12], 2);
            memcpy(out + 2, &B64_PAIRS[v & 0xfff], 2);
            out += 4;
        }
        if (n - i == 1) {
            unsigned v = (unsigned)in[i] << 16;
            out[0] = B64[v >> 18]; out[1] = B64[(v >> 12) & 63]; out[2] = '='; out[3] = '=';
            out += 4;
        } else if (n - i == 2) {
            unsigned v = ((unsigned)in[i] << 16) | ((unsigned)in[i + 1] << 8);
            out[0] = B64[v >> 18]; out[1] = B64[(v >> 12) & 63]; out[2] = B64[(v >> 6) & 63];
            out[3] = '=';
            out += 4;
        }
        return out;
    }

    /* Decode standard padded base64 (length a multiple of 4); 0 on success, -1 if any
       character is not base64 or padding is misplaced. */
    static int iggy_b64_decode(unsigned char *out, const unsigned char *in, size_t n) {
        for (size_t i = 0; i < n; i += 4) {
            int a = B64_VALUE[in[i]], b = B64_VALUE[in[i + 1]];
            int c = B64_VALUE[in[i + 2]], d = B64_VALUE[in[i + 3]];
            int last = i + 4 == n;
            if ((a | b) < 0) return -1;
            if ((c | d) < 0) {
                if (!last || in[i + 3] != '=') return -1;
                if (in[i + 2] == '=') {
                    *out++ = (unsigned char)(a << 2 | b >> 4);
                    return 0;
                }
                if (c < 0) return -1;
                *out++ = (unsigned char)(a << 2 | b >> 4);
                *out++ = (unsigned char)(b << 4 | c >> 2);
                return 0;
            }
            unsigned v = (unsigned)a << 18 | (unsigned)b << 12 | (unsigned)c << 6 | (unsigned)d;
            out[0] = (unsigned char)(v >> 16); out[1] = (unsigned char)(v >> 8);
            out[2] = (unsigned char)v;
            out += 3;
        }
        return 0;
    }

    static char *iggy_u64(char *out, unsigned long long v) {
        char tmp[20];
        int k = 0;
        do { tmp[k++] = (char)('0' + v % 10); v /= 10; } while (v);
        while (k) *out++ = tmp[--k];
        return out;
    }

    static char *iggy_u128(char *out, unsigned long long lo, unsigned long long hi) {
        unsigned __int128 v = ((unsigned __int128)hi << 64) | lo;
        char tmp[40];
        int k = 0;
        do { tmp[k++] = (char)('0' + (int)(v % 10)); v /= 10; } while (v);
        while (k) *out++ = tmp[--k];
        return out;
    }

    static const char *IGGY_KIND_NAMES[16] = {
        "raw", "raw", "string", "bool", "int8", "int16", "int32", "int64", "int128",
        "uint8", "uint16", "uint32", "uint64", "uint128", "float32", "float64"};

    static char *iggy_lit(char *out, const char *s, size_t n) {
        memcpy(out, s, n);
        return out + n;
    }
    """
    void iggy_b64_init()
    char *iggy_b64(char *out, const uint8_t *data, size_t n) nogil
    int iggy_b64_decode(uint8_t *out, const uint8_t *data, size_t n) nogil
    char *iggy_u64(char *out, uint64_t v) nogil
    char *iggy_u128(char *out, uint64_t lo, uint64_t hi) nogil
    char *iggy_lit(char *out, const char *s, size_t n) nogil
    const char **IGGY_KIND_NAMES

iggy_b64_init()

cdef enum:
    HDR = 256
    MSG_HDR = 48
    # A message's JSON without its payload and headers: the field names (~150 bytes) and
    # numbers (at most 20 digits, 39 for the id) fit in this.
    MSG_FIXED = 400
    # Per byte of a user-header block, at most: an entry is at least 12 bytes and its JSON
    # (~80 bytes of names and kinds plus the base64 of its key and value) stays under 10x.
    HEADERS_FACTOR = 10

cdef inline size_t b64_size(size_t n) noexcept nogil:
    return (n + 2) // 3 * 4


cdef char *write_kind_value(char *out, uint8_t kind, const uint8_t *value, uint32_t n) noexcept nogil:
    cdef const char *name = IGGY_KIND_NAMES[kind]
    cdef size_t k = 0
    while name[k]:
        k += 1
    out = iggy_lit(out, b'{"kind":"', 9)
    out = iggy_lit(out, name, k)
    out = iggy_lit(out, b'","value":"', 11)
    out = iggy_b64(out, value, n)
    return iggy_lit(out, b'"}', 2)


cdef char *write_headers(char *out, const uint8_t *h, uint32_t n) noexcept nogil:
    """The TLV block as [HeaderEntry], or as one base64 string if it is not well formed."""
    cdef uint32_t pos = 0, klen, vlen
    cdef uint8_t kkind, vkind
    cdef char *start = out
    out = iggy_lit(out, b"[", 1)
    while pos < n:
        if pos + 5 > n:
            break
        kkind = h[pos]
        klen = ld32(h + pos + 1)
        if kkind == 0 or kkind > 15 or klen > n - pos - 5 or pos + 5 + klen + 5 > n:
            break
        vkind = h[pos + 5 + klen]
        vlen = ld32(h + pos + 5 + klen + 1)
        if vkind == 0 or vkind > 15 or vlen > n - (pos + 10 + klen):
            break
        if pos:
            out = iggy_lit(out, b",", 1)
        out = iggy_lit(out, b'{"key":', 7)
        out = write_kind_value(out, kkind, h + pos + 5, klen)
        out = iggy_lit(out, b',"value":', 9)
        out = write_kind_value(out, vkind, h + pos + 10 + klen, vlen)
        out = iggy_lit(out, b"}", 1)
        pos += 10 + klen + vlen
    if pos != n:
        out = iggy_lit(start, b'"', 1)
        out = iggy_b64(out, h, n)
        return iggy_lit(out, b'"', 1)
    return iggy_lit(out, b"]", 1)


def polled_json(uint32_t partition_id, uint64_t current_offset, chunks) -> bytearray:
    """PolledMessages JSON of the batches in `chunks` (bytes-likes, each whole batches)."""
    cdef const uint8_t[::1] view
    cdef const uint8_t *b
    cdef const uint8_t *f
    cdef Walk w
    cdef uint32_t hlen, plen
    cdef uint64_t messages = 0
    cdef size_t bound = 200
    views = [memoryview(c).cast("B") for c in chunks]
    for v in views:                    # pass 1: check the framing, bound the size
        view = v
        walk_start(&w, &view[0] if view.shape[0] else NULL, view.shape[0])
        while walk_next(&w):
            hlen = ld32(w.frame + 32)
            plen = ld32(w.frame + 36)
            bound += MSG_FIXED + b64_size(plen) + HEADERS_FACTOR * <size_t>hlen + 8
            messages += 1
    out = PyByteArray_FromStringAndSize(NULL, bound)
    cdef char *start = PyByteArray_AS_STRING(out)
    cdef char *o = start
    o = iggy_lit(o, b'{"partition_id":', 16)
    o = iggy_u64(o, partition_id)
    o = iggy_lit(o, b',"current_offset":', 18)
    o = iggy_u64(o, current_offset)
    o = iggy_lit(o, b',"count":', 9)
    o = iggy_u64(o, messages)
    o = iggy_lit(o, b',"messages":[', 13)
    cdef bint first = True
    for v in views:                    # pass 2: write
        view = v
        walk_start(&w, &view[0] if view.shape[0] else NULL, view.shape[0])
        while walk_next(&w):
            b = w.batch
            f = w.frame
            hlen = ld32(f + 32)
            plen = ld32(f + 36)
            if not first:
                o = iggy_lit(o, b",", 1)
            first = False
            o = iggy_lit(o, b'{"header":{"checksum":', 22)
            o = iggy_u64(o, ld64(f))
            o = iggy_lit(o, b',"id":', 6)
            o = iggy_u128(o, ld64(f + 8), ld64(f + 16))
            o = iggy_lit(o, b',"offset":', 10)
            o = iggy_u64(o, ld64(b + 8) + ld32(f + 24))
            o = iggy_lit(o, b',"timestamp":', 13)
            o = iggy_u64(o, ld64(b + 16))
            o = iggy_lit(o, b',"origin_timestamp":', 20)
            o = iggy_u64(o, ld64(b + 24) + ld32(f + 28))
            o = iggy_lit(o, b',"user_headers_length":', 23)
            o = iggy_u64(o, hlen)
            o = iggy_lit(o, b',"payload_length":', 18)
            o = iggy_u64(o, plen)
            o = iggy_lit(o, b',"reserved":', 12)
            o = iggy_u64(o, ld64(f + 40))
            o = iggy_lit(o, b'},"payload":"', 13)
            o = iggy_b64(o, f + MSG_HDR, plen)
            o = iggy_lit(o, b'","user_headers":', 17)
            o = write_headers(o, f + MSG_HDR + plen, hlen)
            o = iggy_lit(o, b"}", 1)
    o = iggy_lit(o, b"]}", 2)
    PyByteArray_Resize(out, o - start)
    return out


ID_LIMIT = 2**128           # message ids are u128


cdef inline Py_ssize_t decoded_size(const char *text, Py_ssize_t n) noexcept nogil:
    """The bytes a padded base64 text decodes to; -1 when its length is not a multiple of 4."""
    if n % 4:
        return -1
    if n == 0:
        return 0
    return n // 4 * 3 - (text[n - 1] == 61) - (text[n - 2] == 61)     # 61: '='


def batch_from_messages(list messages, uint64_t origin_timestamp, header_block, bad,
                        inexact):
    """The producer batch of a send's `messages` ([{id?, payload, user_headers?}] or Iggy's
    newer [{header: {id}, payload, user_headers?}]), as _wire.build_batch would encode it.

    `header_block(entries)` turns a message's user headers into their TLV block;
    `bad(field, why)` makes the exception for a malformed message; `inexact` is raised for an
    id that the JSON parser could only read as a float (past 64 bits)."""
    cdef Py_ssize_t count = len(messages), k, total = HDR, tlen, plen
    cdef const char *text
    cdef object m, mid, header, payload, headers
    cdef list texts = [None] * count       # payload strs, kept alive while we read them
    cdef list blocks = [None] * count      # user-header blocks (bytes) or None
    cdef list ids = [None] * count
    cdef const uint8_t[::1] hv
    for k in range(count):
        m = messages[k]
        if type(m) is not dict:
            raise bad("messages", "expected message objects")
        header = (<dict>m).get("header")
        mid = (<dict>(header if type(header) is dict else m)).get("id", 0)
        if type(mid) is not int or not 0 <= mid < ID_LIMIT:
            if type(mid) is float and mid.is_integer():
                raise inexact()
            raise bad("id", "expected an integer 0..u128")
        ids[k] = mid
        payload = (<dict>m).get("payload")
        if type(payload) is not str:
            raise bad("payload", "expected a base64 string")
        text = PyUnicode_AsUTF8AndSize(payload, &tlen)
        plen = decoded_size(text, tlen)
        if plen < 0:
            raise bad("payload", "invalid base64")
        texts[k] = payload
        headers = (<dict>m).get("user_headers")
        if headers:
            blocks[k] = header_block(headers)
            total += len(blocks[k])
        total += MSG_HDR + plen
    out = PyByteArray_FromStringAndSize(NULL, total)
    cdef uint8_t *o = <uint8_t *>PyByteArray_AS_STRING(out)
    cdef Py_ssize_t pos = HDR, hlen
    cdef uint64_t lo, hi
    for k in range(HDR):
        o[k] = 0
    for k in range(count):
        text = PyUnicode_AsUTF8AndSize(texts[k], &tlen)
        plen = decoded_size(text, tlen)
        if iggy_b64_decode(o + pos + MSG_HDR, <const uint8_t *>text, tlen):
            raise bad("payload", "invalid base64")
        hlen = 0
        if blocks[k] is not None:
            hv = blocks[k]
            hlen = hv.shape[0]
            if hlen:
                memcpy(o + pos + MSG_HDR + plen, &hv[0], hlen)
        mid = ids[k]
        lo = <uint64_t>(mid & 0xFFFFFFFFFFFFFFFF)
        hi = <uint64_t>(mid >> 64)
        st64(o + pos + 8, lo)
        st64(o + pos + 16, hi)
        st32(o + pos + 24, <uint32_t>k)
        st32(o + pos + 28, 0)
        st32(o + pos + 32, <uint32_t>hlen)
        st32(o + pos + 36, <uint32_t>plen)
        st64(o + pos + 40, 0)
        st64(o + pos, iggy_xxh3_64(o + pos + 8, MSG_HDR - 8 + plen + hlen))
        pos += MSG_HDR + plen + hlen
    st64(o + 24, origin_timestamp)
    st64(o + 32, <uint64_t>total)
    st32(o + 48, <uint32_t>count)
    st64(o + 40, _wire.batch_checksum(out))
    return out


def send_json(bytes partitioning, batch) -> bytearray:
    """The body of an HTTP send (the client direction of `batch_from_messages`): the
    partitioning's JSON as given, then each message of the producer `batch` as
    {"id":…,"payload":"<base64>"} (with "user_headers":[…] when it has any), the leanest
    shape the send route reads. InvalidCommand for a truncated batch."""
    cdef const uint8_t[::1] view = memoryview(batch).cast("B")
    cdef Py_ssize_t n = view.shape[0], fpos = HDR
    cdef const uint8_t *f
    cdef uint32_t count, i, hlen, plen
    cdef size_t bound = 40 + len(partitioning)
    if n < HDR or <Py_ssize_t>ld64(&view[0] + 32) != n:
        raise InvalidCommand("truncated batch")
    count = ld32(&view[0] + 48)
    for i in range(count):             # pass 1: check the framing, bound the size
        if fpos + MSG_HDR > n:
            raise InvalidCommand("truncated message")
        f = &view[0] + fpos
        hlen = ld32(f + 32)
        plen = ld32(f + 36)
        if fpos + MSG_HDR + <Py_ssize_t>hlen + plen > n:
            raise InvalidCommand("truncated message")
        bound += 80 + b64_size(plen) + HEADERS_FACTOR * <size_t>hlen
        fpos += MSG_HDR + hlen + plen
    out = PyByteArray_FromStringAndSize(NULL, bound)
    cdef char *start = PyByteArray_AS_STRING(out)
    cdef char *w = iggy_lit(start, b'{"partitioning":', 16)
    w = iggy_lit(w, partitioning, len(partitioning))
    w = iggy_lit(w, b',"messages":[', 13)
    fpos = HDR
    for i in range(count):             # pass 2: write
        f = &view[0] + fpos
        hlen = ld32(f + 32)
        plen = ld32(f + 36)
        if i:
            w = iggy_lit(w, b",", 1)
        w = iggy_lit(w, b'{"id":', 6)
        w = iggy_u128(w, ld64(f + 8), ld64(f + 16))
        w = iggy_lit(w, b',"payload":"', 12)
        w = iggy_b64(w, f + MSG_HDR, plen)
        w = iggy_lit(w, b'"', 1)
        if hlen:
            w = iggy_lit(w, b',"user_headers":', 16)
            w = write_headers(w, f + MSG_HDR + plen, hlen)
        w = iggy_lit(w, b"}", 1)
        fpos += MSG_HDR + hlen + plen
    w = iggy_lit(w, b"]}", 2)
    PyByteArray_Resize(out, w - start)
    return out
