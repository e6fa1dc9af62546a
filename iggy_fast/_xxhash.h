/*
 * Checksums and hashing for the Iggy wire format: XXH3-64 (seed 0) for the per-message and
 * per-batch checksums, XXH32 for message-key partition routing.
 *
 * An independent implementation of the public xxHash specification (XXH3 with the default
 * 192-byte secret, XXH32), written for this project and tested against the `xxhash` package
 * for every length class. Loads are explicit little-endian so the results do not depend on
 * the host's byte order; the long-input loop is plain C over eight 64-bit lanes so the
 * compiler can vectorise it.
 */
#ifndef IGGY_FAST_XXHASH_H
#define IGGY_FAST_XXHASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>


#define IGGY_P32_1 0x9E3779B1U
#define IGGY_P32_2 0x85EBCA77U
#define IGGY_P32_3 0xC2B2AE3DU
#define IGGY_P32_4 0x27D4EB2FU
#define IGGY_P32_5 0x165667B1U
#define IGGY_P64_1 0x9E3779B185EBCA87ULL
#define IGGY_P64_2 0xC2B2AE3D27D4EB4FULL
#define IGGY_P64_3 0x165667B19E3779F9ULL
#define IGGY_P64_4 0x85EBCA77C2B2AE63ULL
#define IGGY_P64_5 0x27D4EB2F165667C5ULL
#define IGGY_MX_1 0x165667919E3779F9ULL
#define IGGY_MX_2 0x9FB21C651E98DF25ULL

/* The default secret of XXH3 (part of the specification). */
static const uint8_t iggy_xxh3_secret[192] = {
    0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
    0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
    0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
    0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
    0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3,
    0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
    0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d,
    0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64,
    0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
    0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e,
    0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce,
    0x45, 0xcb, 0x3a, 0x8f, 0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
};

static inline uint32_t iggy_le32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline uint64_t iggy_le64(const uint8_t *p) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
#else
    return (uint64_t)iggy_le32(p) | ((uint64_t)iggy_le32(p + 4) << 32);
#endif
}

static inline uint32_t iggy_rotl32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }
static inline uint64_t iggy_rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t iggy_swap64(uint64_t x) {
    return ((x << 56) & 0xff00000000000000ULL) | ((x << 40) & 0x00ff000000000000ULL) |
           ((x << 24) & 0x0000ff0000000000ULL) | ((x << 8) & 0x000000ff00000000ULL) |
           ((x >> 8) & 0x00000000ff000000ULL) | ((x >> 24) & 0x0000000000ff0000ULL) |
           ((x >> 40) & 0x000000000000ff00ULL) | ((x >> 56) & 0x00000000000000ffULL);
}

/* 64x64 -> 128-bit multiply, folded to 64 bits by xoring the halves. */
static inline uint64_t iggy_mul_fold(uint64_t a, uint64_t b) {
#if defined(__SIZEOF_INT128__)
    __uint128_t p = (__uint128_t)a * b;
    return (uint64_t)p ^ (uint64_t)(p >> 64);
#else
    uint64_t lo_lo = (a & 0xFFFFFFFFULL) * (b & 0xFFFFFFFFULL);
    uint64_t hi_lo = (a >> 32) * (b & 0xFFFFFFFFULL);
    uint64_t lo_hi = (a & 0xFFFFFFFFULL) * (b >> 32);
    uint64_t hi_hi = (a >> 32) * (b >> 32);
    uint64_t cross = (lo_lo >> 32) + (hi_lo & 0xFFFFFFFFULL) + lo_hi;
    uint64_t upper = (hi_lo >> 32) + (cross >> 32) + hi_hi;
    uint64_t lower = (cross << 32) | (lo_lo & 0xFFFFFFFFULL);
    return lower ^ upper;
#endif
}

static inline uint64_t iggy_xxh64_avalanche(uint64_t h) {
    h ^= h >> 33;
    h *= IGGY_P64_2;
    h ^= h >> 29;
    h *= IGGY_P64_3;
    return h ^ (h >> 32);
}

static inline uint64_t iggy_xxh3_avalanche(uint64_t h) {
    h ^= h >> 37;
    h *= IGGY_MX_1;
    return h ^ (h >> 32);
}

static inline uint64_t iggy_rrmxmx(uint64_t h, uint64_t len) {
    h ^= iggy_rotl64(h, 49) ^ iggy_rotl64(h, 24);
    h *= IGGY_MX_2;
    h ^= (h >> 35) + len;
    h *= IGGY_MX_2;
    return h ^ (h >> 28);
}

static inline uint64_t iggy_mix16(const uint8_t *in, const uint8_t *sec) {
    return iggy_mul_fold(iggy_le64(in) ^ iggy_le64(sec), iggy_le64(in + 8) ^ iggy_le64(sec + 8));
}

/* One 64-byte stripe into the eight accumulators. */
static inline void iggy_accumulate_512(uint64_t *acc, const uint8_t *in,
                                                   const uint8_t *sec) {
    for (int i = 0; i < 8; i++) {
        uint64_t value = iggy_le64(in + 8 * i);
        uint64_t keyed = value ^ iggy_le64(sec + 8 * i);
        acc[i ^ 1] += value;
        acc[i] += (uint64_t)(uint32_t)keyed * (keyed >> 32);
    }
}

static inline void iggy_scramble(uint64_t *acc, const uint8_t *sec) {
    for (int i = 0; i < 8; i++) {
        uint64_t a = acc[i];
        a ^= a >> 47;
        a ^= iggy_le64(sec + 8 * i);
        acc[i] = a * IGGY_P32_1;
    }
}

static uint64_t iggy_xxh3_long_generic(const uint8_t *in, size_t len) {
    const uint8_t *sec = iggy_xxh3_secret;
    const size_t stripes_per_block = (192 - 64) / 8;        /* 16 */
    const size_t block_len = 64 * stripes_per_block;        /* 1024 */
    uint64_t acc[8] = {IGGY_P32_3, IGGY_P64_1, IGGY_P64_2, IGGY_P64_3,
                       IGGY_P64_4, IGGY_P32_2, IGGY_P64_5, IGGY_P32_1};
    size_t blocks = (len - 1) / block_len;
    for (size_t b = 0; b < blocks; b++) {
        const uint8_t *block = in + b * block_len;
        for (size_t s = 0; s < stripes_per_block; s++)
            iggy_accumulate_512(acc, block + 64 * s, sec + 8 * s);
        iggy_scramble(acc, sec + 192 - 64);
    }
    size_t stripes = ((len - 1) - block_len * blocks) / 64;
    const uint8_t *tail = in + blocks * block_len;
    for (size_t s = 0; s < stripes; s++)
        iggy_accumulate_512(acc, tail + 64 * s, sec + 8 * s);
    iggy_accumulate_512(acc, in + len - 64, sec + 192 - 64 - 7);
    uint64_t result = (uint64_t)len * IGGY_P64_1;
    for (int i = 0; i < 4; i++)
        result += iggy_mul_fold(acc[2 * i] ^ iggy_le64(sec + 11 + 16 * i),
                                acc[2 * i + 1] ^ iggy_le64(sec + 11 + 16 * i + 8));
    return iggy_xxh3_avalanche(result);
}

/* The long-input path: portable C (vectorised by the compiler for the baseline ISA) and, on
 * x86-64 with gcc or clang, AVX2 intrinsics; the CPU picks once at run time. */
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>

/* AVX2: four 64-bit lanes per register, two registers per 64-byte stripe. */
__attribute__((target("avx2"))) static uint64_t iggy_xxh3_long_avx2(const uint8_t *in,
                                                                   size_t len) {
    const uint8_t *sec = iggy_xxh3_secret;
    const size_t stripes_per_block = (192 - 64) / 8;
    const size_t block_len = 64 * stripes_per_block;
    uint64_t init[8] = {IGGY_P32_3, IGGY_P64_1, IGGY_P64_2, IGGY_P64_3,
                        IGGY_P64_4, IGGY_P32_2, IGGY_P64_5, IGGY_P32_1};
    __m256i acc[2];
    acc[0] = _mm256_loadu_si256((const __m256i *)init);
    acc[1] = _mm256_loadu_si256((const __m256i *)(init + 4));
    const __m256i prime = _mm256_set1_epi32((int)IGGY_P32_1);
#define IGGY_ACC512(src, key)                                                              \
    for (int r = 0; r < 2; r++) {                                                          \
        __m256i data = _mm256_loadu_si256((const __m256i *)((src) + 32 * r));              \
        __m256i keyed = _mm256_xor_si256(data, _mm256_loadu_si256(                       \
                                                   (const __m256i *)((key) + 32 * r)));    \
        __m256i keyed_hi = _mm256_shuffle_epi32(keyed, _MM_SHUFFLE(0, 3, 0, 1));           \
        __m256i product = _mm256_mul_epu32(keyed, keyed_hi);                               \
        __m256i swapped = _mm256_shuffle_epi32(data, _MM_SHUFFLE(1, 0, 3, 2));             \
        acc[r] = _mm256_add_epi64(product, _mm256_add_epi64(acc[r], swapped));             \
    }
    size_t blocks = (len - 1) / block_len;
    for (size_t b = 0; b < blocks; b++) {
        const uint8_t *block = in + b * block_len;
        for (size_t s = 0; s < stripes_per_block; s++) {
            IGGY_ACC512(block + 64 * s, sec + 8 * s)
        }
        for (int r = 0; r < 2; r++) {
            __m256i a = acc[r];
            a = _mm256_xor_si256(a, _mm256_srli_epi64(a, 47));
            a = _mm256_xor_si256(a, _mm256_loadu_si256((const __m256i *)(sec + 128 + 32 * r)));
            __m256i a_hi = _mm256_shuffle_epi32(a, _MM_SHUFFLE(0, 3, 0, 1));
            __m256i lo = _mm256_mul_epu32(a, prime);
            __m256i hi = _mm256_mul_epu32(a_hi, prime);
            acc[r] = _mm256_add_epi64(lo, _mm256_slli_epi64(hi, 32));
        }
    }
    size_t stripes = ((len - 1) - block_len * blocks) / 64;
    const uint8_t *tail = in + blocks * block_len;
    for (size_t s = 0; s < stripes; s++) {
        IGGY_ACC512(tail + 64 * s, sec + 8 * s)
    }
    IGGY_ACC512(in + len - 64, sec + 192 - 64 - 7)
#undef IGGY_ACC512
    uint64_t lanes[8];
    _mm256_storeu_si256((__m256i *)lanes, acc[0]);
    _mm256_storeu_si256((__m256i *)(lanes + 4), acc[1]);
    uint64_t result = (uint64_t)len * IGGY_P64_1;
    for (int i = 0; i < 4; i++)
        result += iggy_mul_fold(lanes[2 * i] ^ iggy_le64(sec + 11 + 16 * i),
                                lanes[2 * i + 1] ^ iggy_le64(sec + 11 + 16 * i + 8));
    return iggy_xxh3_avalanche(result);
}

static uint64_t iggy_xxh3_long(const uint8_t *in, size_t len) {
    static int has_avx2 = -1;
    if (has_avx2 < 0) {
        __builtin_cpu_init();
        has_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
    }
    return has_avx2 ? iggy_xxh3_long_avx2(in, len) : iggy_xxh3_long_generic(in, len);
}
#else
#define iggy_xxh3_long iggy_xxh3_long_generic
#endif

static inline uint64_t iggy_xxh3_64(const void *data, size_t len) {
    const uint8_t *in = (const uint8_t *)data;
    const uint8_t *sec = iggy_xxh3_secret;
    if (len <= 16) {
        if (len > 8) {
            uint64_t lo = iggy_le64(in) ^ (iggy_le64(sec + 24) ^ iggy_le64(sec + 32));
            uint64_t hi = iggy_le64(in + len - 8) ^ (iggy_le64(sec + 40) ^ iggy_le64(sec + 48));
            uint64_t acc = len + iggy_swap64(lo) + hi + iggy_mul_fold(lo, hi);
            return iggy_xxh3_avalanche(acc);
        }
        if (len >= 4) {
            uint64_t joined = (uint64_t)iggy_le32(in + len - 4) + ((uint64_t)iggy_le32(in) << 32);
            return iggy_rrmxmx(joined ^ (iggy_le64(sec + 8) ^ iggy_le64(sec + 16)), len);
        }
        if (len > 0) {
            uint32_t combined = ((uint32_t)in[0] << 16) | ((uint32_t)in[len >> 1] << 24) |
                                (uint32_t)in[len - 1] | ((uint32_t)len << 8);
            uint64_t flip = (uint64_t)(iggy_le32(sec) ^ iggy_le32(sec + 4));
            return iggy_xxh64_avalanche((uint64_t)combined ^ flip);
        }
        return iggy_xxh64_avalanche(iggy_le64(sec + 56) ^ iggy_le64(sec + 64));
    }
    if (len <= 128) {
        uint64_t acc = (uint64_t)len * IGGY_P64_1;
        if (len > 32) {
            if (len > 64) {
                if (len > 96) {
                    acc += iggy_mix16(in + 48, sec + 96);
                    acc += iggy_mix16(in + len - 64, sec + 112);
                }
                acc += iggy_mix16(in + 32, sec + 64);
                acc += iggy_mix16(in + len - 48, sec + 80);
            }
            acc += iggy_mix16(in + 16, sec + 32);
            acc += iggy_mix16(in + len - 32, sec + 48);
        }
        acc += iggy_mix16(in, sec);
        acc += iggy_mix16(in + len - 16, sec + 16);
        return iggy_xxh3_avalanche(acc);
    }
    if (len <= 240) {
        uint64_t acc = (uint64_t)len * IGGY_P64_1;
        size_t rounds = len / 16;
        for (size_t i = 0; i < 8; i++)
            acc += iggy_mix16(in + 16 * i, sec + 16 * i);
        acc = iggy_xxh3_avalanche(acc);
        for (size_t i = 8; i < rounds; i++)
            acc += iggy_mix16(in + 16 * i, sec + 16 * (i - 8) + 3);
        acc += iggy_mix16(in + len - 16, sec + 136 - 17);
        return iggy_xxh3_avalanche(acc);
    }
    return iggy_xxh3_long(in, len);
}

static inline uint32_t iggy_xxh32_round(uint32_t v, const uint8_t *p) {
    return iggy_rotl32(v + iggy_le32(p) * IGGY_P32_2, 13) * IGGY_P32_1;
}

static inline uint32_t iggy_xxh32(const void *data, size_t len, uint32_t seed) {
    const uint8_t *p = (const uint8_t *)data;
    const uint8_t *end = p + len;
    uint32_t h;
    if (len >= 16) {
        uint32_t v1 = seed + IGGY_P32_1 + IGGY_P32_2, v2 = seed + IGGY_P32_2;
        uint32_t v3 = seed, v4 = seed - IGGY_P32_1;
        const uint8_t *limit = end - 16;
        do {
            v1 = iggy_xxh32_round(v1, p);
            v2 = iggy_xxh32_round(v2, p + 4);
            v3 = iggy_xxh32_round(v3, p + 8);
            v4 = iggy_xxh32_round(v4, p + 12);
            p += 16;
        } while (p <= limit);
        h = iggy_rotl32(v1, 1) + iggy_rotl32(v2, 7) + iggy_rotl32(v3, 12) + iggy_rotl32(v4, 18);
    } else {
        h = seed + IGGY_P32_5;
    }
    h += (uint32_t)len;
    while (p + 4 <= end) {
        h = iggy_rotl32(h + iggy_le32(p) * IGGY_P32_3, 17) * IGGY_P32_4;
        p += 4;
    }
    while (p < end) {
        h = iggy_rotl32(h + (*p) * IGGY_P32_5, 11) * IGGY_P32_1;
        p++;
    }
    h ^= h >> 15;
    h *= IGGY_P32_2;
    h ^= h >> 13;
    h *= IGGY_P32_3;
    return h ^ (h >> 16);
}

#endif /* IGGY_FAST_XXHASH_H */
