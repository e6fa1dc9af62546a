# cython: language_level=3
"""The message paths of the HTTP API in compiled code, both directions on both ends: a send's
body written from a batch (`send_json`, the client) and read back into one
(`send_from_json`, the server), a poll's reply written from the stored batches
(`polled_json`, the server) and read back into the binary payload (`polled_from_json`, the
client). The two readers take only the plain shape and leave anything else to orjson and
`batch_from_messages` (see "Reading message JSON" below).

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
Iggy does. Base64 goes 24 bytes at a time with AVX2 where the CPU has it (checked once at
import), else through a 4096-entry table of character pairs (12 bits at a time); decoding
likewise 32 characters at a time, else by a 256-entry table.
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
    static unsigned char PLAIN_STOP[256];   /* what ends a plain string's scan: '"', '\\', < 32 */
    static int iggy_have_avx2;          /* set by iggy_b64_init */

    static void iggy_b64_init(void) {
    #if defined(__x86_64__) && defined(__GNUC__)
        __builtin_cpu_init();
        iggy_have_avx2 = __builtin_cpu_supports("avx2");
    #endif
        for (int i = 0; i < 256; i++) B64_VALUE[i] = -1;
        for (int i = 0; i < 256; i++) PLAIN_STOP[i] = i < 32 || i == '"' || i == 92;
        for (int i = 0; i < 64; i++) B64_VALUE[(unsigned char)B64[i]] = (signed char)i;
        for (int i = 0; i < 4096; i++) {
            char pair[2] = {B64[i >> 6], B64[i & 63]};
            memcpy(&B64_PAIRS[i], pair, 2);
        }
    }

    /* Standard base64 with padding, a byte triple at a time; returns the end of what it wrote. */
    static char *iggy_b64_scalar(char *out, const unsigned char *in, size_t n) {
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

    #if defined(__x86_64__) && defined(__GNUC__)
    #include <immintrin.h>
    /* 24 bytes to 32 characters per step with AVX2 (Muła and Lemire's method, as for the
       decoder below): the bytes are spread so each 32-bit lane holds one triple, the four
       6-bit fields are moved into place by multiplies, and a 16-entry table maps each field
       to its character. Its 32-byte loads start 4 bytes before the triple (the first one at
       the start, spread by a lane permute instead), so it stops while 32 bytes remain.
       Returns how many bytes it encoded, a multiple of 3. */
    __attribute__((target("avx2")))
    static size_t iggy_b64_avx2(char **out, const unsigned char *in, size_t n) {
        const __m256i spread = _mm256_set_epi8(
            10, 11, 9, 10, 7, 8, 6, 7, 4, 5, 3, 4, 1, 2, 0, 1,
            14, 15, 13, 14, 11, 12, 10, 11, 8, 9, 7, 8, 5, 6, 4, 5);
        const __m256i ascii = _mm256_setr_epi8(
            65, 71, -4, -4, -4, -4, -4, -4, -4, -4, -4, -4, -19, -16, 0, 0,
            65, 71, -4, -4, -4, -4, -4, -4, -4, -4, -4, -4, -19, -16, 0, 0);
        size_t i = 0;
        char *o = *out;
        for (; i + 32 <= n; i += 24) {
            __m256i v;
            if (i == 0)
                v = _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)in),
                                                _mm256_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6));
            else
                v = _mm256_loadu_si256((const __m256i *)(in + i - 4));
            v = _mm256_shuffle_epi8(v, spread);
            __m256i t0 = _mm256_and_si256(v, _mm256_set1_epi32(0x0FC0FC00));
            __m256i t1 = _mm256_mulhi_epu16(t0, _mm256_set1_epi32(0x04000040));
            __m256i t2 = _mm256_and_si256(v, _mm256_set1_epi32(0x003F03F0));
            __m256i t3 = _mm256_mullo_epi16(t2, _mm256_set1_epi32(0x01000010));
            v = _mm256_or_si256(t1, t3);            /* 32 six-bit values */
            __m256i idx = _mm256_subs_epu8(v, _mm256_set1_epi8(51));
            idx = _mm256_sub_epi8(idx, _mm256_cmpgt_epi8(v, _mm256_set1_epi8(25)));
            v = _mm256_add_epi8(v, _mm256_shuffle_epi8(ascii, idx));
            _mm256_storeu_si256((__m256i *)o, v);
            o += 32;
        }
        *out = o;
        return i;
    }
    #endif

    /* Standard base64 with padding: AVX2 for the bulk where the CPU has it, then the scalar
       loop; returns the end of what it wrote. */
    static char *iggy_b64(char *out, const unsigned char *in, size_t n) {
    #if defined(__x86_64__) && defined(__GNUC__)
        if (iggy_have_avx2 && n >= 32) {
            size_t done = iggy_b64_avx2(&out, in, n);
            in += done;
            n -= done;
        }
    #endif
        return iggy_b64_scalar(out, in, n);
    }

    /* Decode standard padded base64 (length a multiple of 4); 0 on success, -1 if any
       character is not base64 or padding is misplaced. */
    static int iggy_b64_decode_scalar(unsigned char *out, const unsigned char *in, size_t n) {
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

    #if defined(__x86_64__) && defined(__GNUC__)
    #include <immintrin.h>
    /* 32 characters to 24 bytes per step with AVX2 (the nibble-table method of Muła and
       Lemire, "Faster Base64 Encoding and Decoding Using AVX2 Instructions", 2018): each
       character is classified by its two nibbles, anything not in the alphabet (padding
       included) stops the loop, and the 6-bit values are packed by multiply-adds and a
       shuffle. It stops while at least 16 characters remain, so its 32-byte stores (24 of
       them used) stay inside the output; the scalar loop decodes the rest. Returns how many
       characters it consumed. */
    __attribute__((target("avx2")))
    static size_t iggy_b64_decode_avx2(unsigned char **out, const unsigned char *in, size_t n) {
        const __m256i lut_lo = _mm256_setr_epi8(
            0x15, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x13, 0x1A, 0x1B, 0x1B,
            0x1B, 0x1A, 0x15, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x13, 0x1A,
            0x1B, 0x1B, 0x1B, 0x1A);
        const __m256i lut_hi = _mm256_setr_epi8(
            0x10, 0x10, 0x01, 0x02, 0x04, 0x08, 0x04, 0x08, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
            0x10, 0x10, 0x10, 0x10, 0x01, 0x02, 0x04, 0x08, 0x04, 0x08, 0x10, 0x10, 0x10, 0x10,
            0x10, 0x10, 0x10, 0x10);
        const __m256i lut_roll = _mm256_setr_epi8(
            0, 16, 19, 4, -65, -65, -71, -71, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 16, 19, 4, -65, -65, -71, -71, 0, 0, 0, 0, 0, 0, 0, 0);
        const __m256i mask_2f = _mm256_set1_epi8(0x2f);
        const __m256i pack_shuffle = _mm256_setr_epi8(
            2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1,
            2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1);
        const __m256i pack_lanes = _mm256_setr_epi32(0, 1, 2, 4, 5, 6, -1, -1);
        size_t i = 0;
        unsigned char *o = *out;
        for (; i + 48 <= n; i += 32) {
            __m256i str = _mm256_loadu_si256((const __m256i *)(in + i));
            __m256i hi_nibbles = _mm256_and_si256(_mm256_srli_epi32(str, 4), mask_2f);
            __m256i lo_nibbles = _mm256_and_si256(str, mask_2f);
            __m256i hi = _mm256_shuffle_epi8(lut_hi, hi_nibbles);
            __m256i lo = _mm256_shuffle_epi8(lut_lo, lo_nibbles);
            if (!_mm256_testz_si256(lo, hi)) break;
            __m256i eq_2f = _mm256_cmpeq_epi8(str, mask_2f);
            __m256i roll = _mm256_shuffle_epi8(lut_roll, _mm256_add_epi8(eq_2f, hi_nibbles));
            str = _mm256_add_epi8(str, roll);
            str = _mm256_maddubs_epi16(str, _mm256_set1_epi32(0x01400140));
            str = _mm256_madd_epi16(str, _mm256_set1_epi32(0x00011000));
            str = _mm256_shuffle_epi8(str, pack_shuffle);
            str = _mm256_permutevar8x32_epi32(str, pack_lanes);
            _mm256_storeu_si256((__m256i *)o, str);
            o += 24;
        }
        *out = o;
        return i;
    }
    #endif

    /* Decode standard padded base64 (length a multiple of 4): AVX2 for the bulk where the
       CPU has it, then the scalar loop. 0 on success, -1 on a character that is not base64
       or misplaced padding. */
    static int iggy_b64_decode(unsigned char *out, const unsigned char *in, size_t n) {
    #if defined(__x86_64__) && defined(__GNUC__)
        if (iggy_have_avx2 && n >= 48) {
            size_t done = iggy_b64_decode_avx2(&out, in, n);
            in += done;
            n -= done;
        }
    #endif
        return iggy_b64_decode_scalar(out, in, n);
    }

    /* Decimal digits two at a time from a table: a division by 100 per pair instead of one
       by 10 per digit (a poll reply writes eight numbers per message, most of 16-20 digits). */
    static const char IGGY_PAIRS[201] =
        "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
        "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
        "8081828384858687888990919293949596979899";

    static char *iggy_u64(char *out, unsigned long long v) {
        char tmp[20];
        char *t = tmp + 20;
        while (v >= 100) {
            unsigned r = (unsigned)(v % 100);
            v /= 100;
            t -= 2;
            memcpy(t, IGGY_PAIRS + 2 * r, 2);
        }
        if (v >= 10) {
            t -= 2;
            memcpy(t, IGGY_PAIRS + 2 * v, 2);
        } else {
            *--t = (char)('0' + v);
        }
        memcpy(out, t, (size_t)(tmp + 20 - t));
        return out + (tmp + 20 - t);
    }

    /* Exactly 19 digits, leading zeros kept (the lower parts of a u128). */
    static char *iggy_u64_19(char *out, unsigned long long v) {
        for (int k = 17; k >= 1; k -= 2) {
            memcpy(out + k, IGGY_PAIRS + 2 * (v % 100), 2);
            v /= 100;
        }
        out[0] = (char)('0' + v);
        return out + 19;
    }

    /* A u128 as at most three u64 parts of 19 digits: two or three 128-bit divisions, not
       one per digit (an Iggy SDK's random ids have 38-39 digits). */
    static char *iggy_u128(char *out, unsigned long long lo, unsigned long long hi) {
        const unsigned long long P19 = 10000000000000000000ULL;
        if (!hi)
            return iggy_u64(out, lo);
        unsigned __int128 v = ((unsigned __int128)hi << 64) | lo;
        unsigned __int128 top = v / P19;
        unsigned long long low = (unsigned long long)(v - top * P19);
        if (top >= P19) {
            unsigned long long mid = (unsigned long long)(top % P19);
            out = iggy_u64(out, (unsigned long long)(top / P19));
            out = iggy_u64_19(out, mid);
        } else {
            out = iggy_u64(out, (unsigned long long)top);
        }
        return iggy_u64_19(out, low);
    }

    static const char *IGGY_KIND_NAMES[16] = {
        "raw", "raw", "string", "bool", "int8", "int16", "int32", "int64", "int128",
        "uint8", "uint16", "uint32", "uint64", "uint128", "float32", "float64"};

    static char *iggy_lit(char *out, const char *s, size_t n) {
        memcpy(out, s, n);
        return out + n;
    }

    /* The scanner of plain message JSON (see "Reading message JSON" below): a cursor over
       the text, and its steps; each answers 0 when the text is not of the plain shape. */
    typedef struct { const unsigned char *p, *end; } iggy_cur;

    static inline void iggy_ws(iggy_cur *c) {
        while (c->p < c->end && (*c->p == 32 || *c->p == 10 || *c->p == 13 || *c->p == 9))
            c->p++;     /* space, newline, return, tab */
    }

    static inline int iggy_take(iggy_cur *c, unsigned char ch) {
        if (c->p < c->end && *c->p == ch) { c->p++; return 1; }    /* compact JSON */
        iggy_ws(c);
        if (c->p < c->end && *c->p == ch) { c->p++; return 1; }
        return 0;
    }

    /* A string without escapes or control characters; *s, *n its text. */
    static int iggy_plain(iggy_cur *c, const unsigned char **s, size_t *n) {
        if (!iggy_take(c, '"')) return 0;
        const unsigned char *q = c->p;
        while (q < c->end && !PLAIN_STOP[*q]) q++;
        if (q == c->end || *q != '"') return 0;     /* an escape, a control character */
        *s = c->p; *n = (size_t)(q - c->p); c->p = q + 1;
        return 1;
    }

    /* An object key and its colon. */
    static int iggy_key(iggy_cur *c, const unsigned char **s, size_t *n) {
        return iggy_plain(c, s, n) && iggy_take(c, ':');
    }

    /* The i-th member of an object (from 0), the one loop of every object these readers
       take: the '{' before the first, a ',' before any other. 1: its key (*s, *n) and colon
       were read, its value is next; 0: the object ended; -1: not the plain shape. */
    static int iggy_member(iggy_cur *c, size_t i, const unsigned char **s, size_t *n) {
        if (i == 0 && !iggy_take(c, '{')) return -1;
        if (iggy_take(c, '}')) return 0;
        if (i && !iggy_take(c, ',')) return -1;
        return iggy_key(c, s, n) ? 1 : -1;
    }

    static inline int iggy_is(const unsigned char *s, size_t n, const char *name) {
        return strlen(name) == n && memcmp(s, name, n) == 0;
    }

    /* A base64 string: up to the next quote (an escape or control character in it fails
       the base64 decoding that follows, which checks every character). */
    static int iggy_b64_text(iggy_cur *c, const unsigned char **s, size_t *n) {
        if (!iggy_take(c, '"')) return 0;
        const unsigned char *q = memchr(c->p, '"', (size_t)(c->end - c->p));
        if (q == NULL) return 0;
        *s = c->p; *n = (size_t)(q - c->p); c->p = q + 1;
        return 1;
    }

    /* A non-negative integer of JSON up to 2^128 - 1 (no sign, fraction or exponent): its
       first 19 digits in 64-bit arithmetic (they cannot overflow it), any more in 128-bit. */
    static int iggy_uint(iggy_cur *c, uint64_t *lo, uint64_t *hi) {
        const unsigned __int128 max = ~(unsigned __int128)0;
        iggy_ws(c);
        const unsigned char *q = c->p, *end = c->end;
        if (q == end || (unsigned)(*q - '0') > 9) return 0;
        if (*q == '0' && q + 1 < end && (unsigned)(q[1] - '0') <= 9) return 0;
        const unsigned char *fast_end = end - q > 19 ? q + 19 : end;
        uint64_t small = 0;
        while (q < fast_end && (unsigned)(*q - '0') <= 9)
            small = small * 10 + (unsigned)(*q++ - '0');
        unsigned __int128 v = small;
        while (q < end && (unsigned)(*q - '0') <= 9) {
            unsigned d = (unsigned)(*q++ - '0');
            if (v > max / 10 || (v == max / 10 && d > max % 10)) return 0;
            v = v * 10 + d;
        }
        if (q < end && (*q == '.' || *q == 'e' || *q == 'E')) return 0;
        *lo = (uint64_t)v; *hi = (uint64_t)(v >> 64); c->p = q;
        return 1;
    }

    /* A u64 integer. */
    static int iggy_u64_value(iggy_cur *c, uint64_t *v) {
        uint64_t hi;
        return iggy_uint(c, v, &hi) && hi == 0;
    }

    /* No user headers: null or an empty array. */
    static int iggy_no_headers(iggy_cur *c) {
        iggy_ws(c);
        if (c->end - c->p >= 4 && memcmp(c->p, "null", 4) == 0) { c->p += 4; return 1; }
        return iggy_take(c, '[') && iggy_take(c, ']');
    }
    """
    void iggy_b64_init()
    char *iggy_b64(char *out, const uint8_t *data, size_t n) nogil
    int iggy_b64_decode(uint8_t *out, const uint8_t *data, size_t n) nogil
    char *iggy_u64(char *out, uint64_t v) nogil
    char *iggy_u128(char *out, uint64_t lo, uint64_t hi) nogil
    char *iggy_lit(char *out, const char *s, size_t n) nogil
    const char **IGGY_KIND_NAMES

    ctypedef struct iggy_cur:
        const uint8_t *p
        const uint8_t *end
    bint iggy_take(iggy_cur *c, uint8_t ch) nogil
    int iggy_member(iggy_cur *c, size_t i, const uint8_t **s, size_t *n) nogil
    bint iggy_is(const uint8_t *s, size_t n, const char *name) nogil
    bint iggy_plain(iggy_cur *c, const uint8_t **s, size_t *n) nogil
    bint iggy_b64_text(iggy_cur *c, const uint8_t **s, size_t *n) nogil
    bint iggy_uint(iggy_cur *c, uint64_t *lo, uint64_t *hi) nogil
    bint iggy_u64_value(iggy_cur *c, uint64_t *v) nogil
    bint iggy_no_headers(iggy_cur *c) nogil
    void iggy_ws(iggy_cur *c) nogil

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


# -- Reading message JSON -------------------------------------------------------------------
#
# The two big documents, a send's body on the server and a poll's reply on the client, are
# read here straight from their text into the binary batch layout, with no Python object per
# message: one pass records each message's numbers and where its base64 payload lies, the
# second decodes the payloads into the batch. Only the plain shape is read: the keys these
# documents have (a message's `id`, `header`, `payload`, `user_headers`; the header's eight
# numbers), strings without escapes, no user headers (null or []). Anything else (user
# headers, an unknown or repeated key, malformed JSON, a number out of range) answers None,
# and the caller parses the document the general way, which also makes the right error.

from libc.stdlib cimport free, realloc
from libc.string cimport memset

cdef enum:
    # The fields a message's JSON had (Msg.seen).
    F_CHECKSUM = 1 << 0
    F_ID = 1 << 1
    F_OFFSET = 1 << 2
    F_TIMESTAMP = 1 << 3
    F_ORIGIN = 1 << 4
    F_HEADERS_LENGTH = 1 << 5
    F_PAYLOAD_LENGTH = 1 << 6
    F_RESERVED = 1 << 7
    F_HEADER = 1 << 8
    F_PAYLOAD = 1 << 9
    F_TOP_ID = 1 << 10
    F_USER_HEADERS = 1 << 11
    # What a polled message must state.
    POLLED = (F_CHECKSUM | F_ID | F_OFFSET | F_TIMESTAMP | F_ORIGIN | F_HEADERS_LENGTH
              | F_PAYLOAD_LENGTH | F_PAYLOAD)
    # Top-level keys of the two documents.
    T_PARTITIONING = 1 << 0
    T_MESSAGES = 1 << 1
    T_PARTITION_ID = 1 << 2
    T_CURRENT_OFFSET = 1 << 3
    T_COUNT = 1 << 4


cdef struct Msg:
    uint64_t checksum, id_lo, id_hi, top_lo, top_hi, offset, timestamp, origin
    uint64_t headers_length, payload_length, reserved
    const uint8_t *text             # the base64 of the payload, in the document
    size_t text_len
    Py_ssize_t size                 # the payload's bytes
    uint32_t seen


cdef struct Msgs:
    Msg *items
    size_t n, cap


cdef bint scan_header(iggy_cur *c, Msg *m) noexcept nogil:
    """{"checksum":…,"id":…,"offset":…,…}: Iggy's message header, any of its fields."""
    cdef const uint8_t *k
    cdef size_t n, i = 0
    cdef int r
    cdef uint64_t *field
    cdef uint32_t bit
    while True:
        r = iggy_member(c, i, &k, &n)
        if r <= 0:
            return r == 0
        i += 1
        if iggy_is(k, n, "id"):
            if m.seen & F_ID or not iggy_uint(c, &m.id_lo, &m.id_hi):
                return False
            bit = F_ID
        else:
            if iggy_is(k, n, "checksum"):
                field, bit = &m.checksum, F_CHECKSUM
            elif iggy_is(k, n, "offset"):
                field, bit = &m.offset, F_OFFSET
            elif iggy_is(k, n, "timestamp"):
                field, bit = &m.timestamp, F_TIMESTAMP
            elif iggy_is(k, n, "origin_timestamp"):
                field, bit = &m.origin, F_ORIGIN
            elif iggy_is(k, n, "user_headers_length"):
                field, bit = &m.headers_length, F_HEADERS_LENGTH
            elif iggy_is(k, n, "payload_length"):
                field, bit = &m.payload_length, F_PAYLOAD_LENGTH
            elif iggy_is(k, n, "reserved"):
                field, bit = &m.reserved, F_RESERVED
            else:
                return False
            if m.seen & bit or not iggy_u64_value(c, field):
                return False
        m.seen |= bit


cdef bint scan_message(iggy_cur *c, Msg *m) noexcept nogil:
    """{"header":{…},"payload":"<base64>","user_headers":[]} (or "id" beside the payload)."""
    cdef const uint8_t *k
    cdef size_t n, i = 0
    cdef int r
    cdef uint32_t bit
    memset(m, 0, sizeof(Msg))
    while True:
        r = iggy_member(c, i, &k, &n)
        if r < 0:
            return False
        if r == 0:
            break
        i += 1
        if iggy_is(k, n, "payload"):
            bit = F_PAYLOAD
            if m.seen & bit or not iggy_b64_text(c, &m.text, &m.text_len):
                return False
        elif iggy_is(k, n, "header"):
            bit = F_HEADER
            if m.seen & bit or not scan_header(c, m):
                return False
        elif iggy_is(k, n, "id"):
            bit = F_TOP_ID
            if m.seen & bit or not iggy_uint(c, &m.top_lo, &m.top_hi):
                return False
        elif iggy_is(k, n, "user_headers"):
            bit = F_USER_HEADERS
            if m.seen & bit or not iggy_no_headers(c):
                return False
        else:
            return False
        m.seen |= bit
    if not m.seen & F_PAYLOAD:
        return False
    m.size = decoded_size(<const char *>m.text, m.text_len)
    return m.size >= 0


cdef bint scan_messages(iggy_cur *c, Msgs *ms) noexcept nogil:
    """[message, …] into `ms` (grown as needed)."""
    cdef Msg *grown
    if not iggy_take(c, c'['):
        return False
    if iggy_take(c, c']'):
        return True
    while True:
        if ms.n == ms.cap:
            ms.cap = 2 * ms.cap + 64
            grown = <Msg *>realloc(ms.items, ms.cap * sizeof(Msg))
            if grown == NULL:
                return False
            ms.items = grown
        if not scan_message(c, &ms.items[ms.n]):
            return False
        ms.n += 1
        if iggy_take(c, c']'):
            return True
        if not iggy_take(c, c','):
            return False


cdef struct Doc:
    # The top level of a message document, as scan_document found it (`seen`: its keys).
    Msgs ms
    uint32_t seen
    uint64_t partition_id, current_offset, count
    const uint8_t *kind             # a send's partitioning, as given (NULL: absent)
    const uint8_t *value
    size_t kind_n, value_n


cdef bint scan_partitioning(iggy_cur *c, Doc *d) noexcept nogil:
    """{"kind":"…","value":"…"}, each at most once (the caller checks what it needs)."""
    cdef const uint8_t *k
    cdef size_t n, i = 0
    cdef int r
    while True:
        r = iggy_member(c, i, &k, &n)
        if r <= 0:
            return r == 0
        i += 1
        if iggy_is(k, n, "kind") and d.kind == NULL:
            if not iggy_plain(c, &d.kind, &d.kind_n):
                return False
        elif iggy_is(k, n, "value") and d.value == NULL:
            if not iggy_plain(c, &d.value, &d.value_n):
                return False
        else:
            return False


cdef bint scan_document(const uint8_t[::1] raw, Doc *d) noexcept nogil:
    """The whole text as one of the two message documents: a send's
    {"partitioning":…,"messages":[…]} or a poll reply's
    {"partition_id":…,"current_offset":…,"count":…,"messages":[…]}, each key at most once
    and nothing after the object. Each caller checks that `d.seen` holds only its keys, and
    frees `d.ms.items` (allocated even when this fails)."""
    cdef iggy_cur c
    cdef const uint8_t *k
    cdef size_t n, i = 0
    cdef int r
    cdef uint32_t bit
    cdef bint ok
    memset(d, 0, sizeof(Doc))
    c.p = &raw[0] if raw.shape[0] else NULL
    c.end = c.p + raw.shape[0]
    while True:
        r = iggy_member(&c, i, &k, &n)
        if r <= 0:
            iggy_ws(&c)
            return r == 0 and c.p == c.end
        i += 1
        if iggy_is(k, n, "messages"):
            bit = T_MESSAGES
        elif iggy_is(k, n, "partitioning"):
            bit = T_PARTITIONING
        elif iggy_is(k, n, "partition_id"):
            bit = T_PARTITION_ID
        elif iggy_is(k, n, "current_offset"):
            bit = T_CURRENT_OFFSET
        elif iggy_is(k, n, "count"):
            bit = T_COUNT
        else:
            return False
        if d.seen & bit:
            return False
        d.seen |= bit
        if bit == T_MESSAGES:
            ok = scan_messages(&c, &d.ms)
        elif bit == T_PARTITIONING:
            ok = scan_partitioning(&c, d)
        elif bit == T_PARTITION_ID:
            ok = iggy_u64_value(&c, &d.partition_id) and d.partition_id <= <uint64_t>0xFFFFFFFF
        elif bit == T_CURRENT_OFFSET:
            ok = iggy_u64_value(&c, &d.current_offset)
        else:
            ok = iggy_u64_value(&c, &d.count)
        if not ok:
            return False


def send_from_json(const uint8_t[::1] raw not None, uint64_t origin_timestamp):
    """A send's body, `{"partitioning":{"kind":…,"value":…},"messages":[…]}`, read straight
    into `(kind, value, batch, count)`: the partitioning's kind and value as given (str;
    kind None without a partitioning, value None without a value), and the producer batch
    `batch_from_messages` would make of the messages. None when the body is not of the plain
    shape (see above) or has no message."""
    cdef Doc d
    cdef bint ok = True
    cdef Py_ssize_t total = HDR, i, pos
    cdef Msg *m
    cdef uint8_t *o
    cdef Msgs ms
    try:
        with nogil:
            ok = scan_document(raw, &d)
        ms = d.ms
        if (not ok or d.seen & ~(T_MESSAGES | T_PARTITIONING) or ms.n == 0
                or (d.seen & T_PARTITIONING and d.kind == NULL)):
            return None
        for i in range(<Py_ssize_t>ms.n):
            total += MSG_HDR + ms.items[i].size
        out = PyByteArray_FromStringAndSize(NULL, total)
        o = <uint8_t *>PyByteArray_AS_STRING(out)
        with nogil:
            memset(o, 0, HDR)
            pos = HDR
            for i in range(<Py_ssize_t>ms.n):
                m = &ms.items[i]
                if iggy_b64_decode(o + pos + MSG_HDR, m.text, m.text_len):
                    ok = False
                    break
                if m.seen & F_HEADER:
                    st64(o + pos + 8, m.id_lo)
                    st64(o + pos + 16, m.id_hi)
                else:
                    st64(o + pos + 8, m.top_lo)
                    st64(o + pos + 16, m.top_hi)
                st32(o + pos + 24, <uint32_t>i)
                st32(o + pos + 28, 0)
                st32(o + pos + 32, 0)
                st32(o + pos + 36, <uint32_t>m.size)
                st64(o + pos + 40, 0)
                st64(o + pos, iggy_xxh3_64(o + pos + 8, MSG_HDR - 8 + m.size))
                pos += MSG_HDR + m.size
        if not ok:      # frames past the bad payload were never written: no checksum walk
            return None
        st64(o + 24, origin_timestamp)
        st64(o + 32, <uint64_t>total)
        st32(o + 48, <uint32_t>ms.n)
        st64(o + 40, batch_checksum_at(o))
        return (None if d.kind == NULL else (<const char *>d.kind)[:d.kind_n].decode(),
                None if d.value == NULL else (<const char *>d.value)[:d.value_n].decode(),
                out, ms.n)
    except UnicodeDecodeError:
        return None
    finally:
        free(d.ms.items)


cdef inline bint same_run(const Msg *first, const Msg *m, size_t k) noexcept nogil:
    """Whether `m`, `k` messages after `first`, was stored in the same batch: the same server
    timestamp, the next offset, and an origin timestamp a u32 delta can reach."""
    return (m.timestamp == first.timestamp and m.offset == first.offset + k
            and m.origin >= first.origin and m.origin - first.origin <= <uint64_t>0xFFFFFFFF)


def polled_from_json(const uint8_t[::1] raw not None):
    """A poll reply's JSON (PolledMessages) read straight into the binary payload the client
    decodes (§7.5): the 16-byte head, then one batch per run of messages stored together
    (same_run), each message's checksum as the server reported it. None when the reply is
    not of the plain shape (see above)."""
    cdef Doc d
    cdef Msgs ms
    cdef size_t start, end, i
    cdef uint64_t partition_id, current_offset
    cdef bint ok = True
    cdef Py_ssize_t total = 16
    cdef const Msg *first
    cdef const Msg *m
    cdef uint8_t *o
    cdef uint8_t *b
    cdef uint8_t *f
    try:
        with nogil:
            ok = scan_document(raw, &d)
            ms = d.ms
            partition_id, current_offset = d.partition_id, d.current_offset
            # count is optional; the messages, partition_id and current_offset are not
            ok = ok and d.seen & ~T_PARTITIONING == d.seen and (
                d.seen & (T_MESSAGES | T_PARTITION_ID | T_CURRENT_OFFSET)
                == (T_MESSAGES | T_PARTITION_ID | T_CURRENT_OFFSET))
            i = 0
            while ok and i < ms.n:              # the plain shape, and the size
                m = &ms.items[i]
                ok = (m.seen & POLLED == POLLED and m.headers_length == 0
                      and <uint64_t>m.size == m.payload_length)
                total += MSG_HDR + m.size
                if i == 0 or not same_run(first, m, i - start):
                    first, start = m, i
                    total += HDR
                i += 1
        if not ok:
            return None
        out = PyByteArray_FromStringAndSize(NULL, total)
        o = <uint8_t *>PyByteArray_AS_STRING(out)
        with nogil:
            st32(o, <uint32_t>partition_id)
            st64(o + 4, current_offset)
            st32(o + 12, <uint32_t>ms.n)
            b = o + 16
            start = 0
            while ok and start < ms.n:
                first = &ms.items[start]
                end = start + 1
                while end < ms.n and same_run(first, &ms.items[end], end - start):
                    end += 1
                memset(b, 0, HDR)
                st64(b, partition_id)
                st64(b + 8, first.offset)
                st64(b + 16, first.timestamp)
                st64(b + 24, first.origin)
                st32(b + 48, <uint32_t>(end - start))
                f = b + HDR
                for i in range(start, end):
                    m = &ms.items[i]
                    if iggy_b64_decode(f + MSG_HDR, m.text, m.text_len):
                        ok = False
                        break
                    st64(f, m.checksum)
                    st64(f + 8, m.id_lo)
                    st64(f + 16, m.id_hi)
                    st32(f + 24, <uint32_t>(i - start))
                    st32(f + 28, <uint32_t>(m.origin - first.origin))
                    st32(f + 32, 0)
                    st32(f + 36, <uint32_t>m.size)
                    st64(f + 40, m.reserved)
                    f += MSG_HDR + m.size
                if not ok:      # the run's later frames were never written: no checksum
                    break
                st64(b + 32, <uint64_t>(f - b))
                st64(b + 40, batch_checksum_at(b))
                b = f
                start = end
        return out if ok else None
    finally:
        free(d.ms.items)
