# cython: language_level=3
"""What _wire.pyx shares with the other compiled modules at C level: the walk over the
messages of stored batches lying back to back, and the batch checksum."""

from libc.stdint cimport uint8_t, uint32_t, uint64_t


cdef struct Walk:
    # Where the walk is: the buffer, the current batch (its header and where it ends), and
    # the next message frame of it (`left` of them remain).
    const uint8_t *data
    Py_ssize_t n
    Py_ssize_t end
    Py_ssize_t fpos
    uint32_t left
    const uint8_t *batch        # the current message's batch header
    const uint8_t *frame        # the current message's 48-byte header


cdef void walk_start(Walk *w, const uint8_t *data, Py_ssize_t n) noexcept nogil
cdef int walk_next(Walk *w) except -1
cdef uint64_t batch_checksum_at(const uint8_t *b) noexcept nogil
