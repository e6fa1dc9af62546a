# cython: language_level=3
"""Little-endian loads and stores shared by the compiled modules (hosts are little-endian:
_wire checks at import). memcpy keeps unaligned access defined; the compiler makes it a move."""

from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy


cdef inline uint32_t ld32(const uint8_t *p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v

cdef inline uint64_t ld64(const uint8_t *p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v

cdef inline void st32(uint8_t *p, uint32_t v) noexcept nogil:
    memcpy(p, &v, 4)

cdef inline void st64(uint8_t *p, uint64_t v) noexcept nogil:
    memcpy(p, &v, 8)
