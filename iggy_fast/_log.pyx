# cython: language_level=3
"""One segment of a partition's log: the storage hot path.

Files are named by the offsets they hold, zero-padded so a listing sorts by offset: the active
segment by its base offset, a sealed one by its first and last offset:

    00000000000000000000-00000000000000000999.log    sealed: offsets 0..999
    00000000000000001000.log                         active: batches back to back, byte for
                                                     byte as they are served
    00000000000000001000.index  one 24-byte entry per batch:
                                [offset_delta u32][message_count u32][position u64][timestamp u64]
                                offset_delta = batch base offset - segment base offset

Invariants: batches are appended whole and in offset order, and offsets are dense, so the
index is sorted by offset, position and (server-stamped, non-decreasing) timestamp; a lookup
by either is a bisection, O(log batches). The log is the truth: the index may lag behind it
(entries are written in groups, not per batch) and is completed from the log on open, where
every batch after the last indexed one is verified (header, length, checksums).

Recovery discards only what it can call a torn tail. Bytes that fail verification anywhere
else are corruption, whatever they hit (a length, a count, an offset, a zeroed page): the scan
resynchronises at the next byte position where a batch continues the offsets and verifies,
and indexes the region in between as one bad entry holding the offsets it skipped, never
served, its bytes left in place and its position logged. Only bytes after the last verifiable
batch of the last segment are cut, and the segment says whether they were a write stopped
early (`short_write`: never acknowledged) or something else (`cut`: offsets in it may have been
handed out; the partition's offset mark keeps them from being reused, see storage/log.py).
Batches already on disk when the segment is opened are verified lazily, the first time a read
reaches them; a corrupt one is logged with its position and never served (reads skip it), and
the rest of the segment is served as usual. That verification can read a whole segment, so a
server asks `needs_verification` first and runs `verify` on a worker thread (it releases the
GIL) before the read; a lock keeps it from running twice at once or on closed files.

Because the index can always be rebuilt, failing to write it (a full disk) never fails an
append whose batch reached the log: the entries stay in memory and are written at the next
flush. A failed log write leaves the file exactly as it was.

Files may be closed while the segment lives on (`close_cold`, for the open-files budget of
storage/files.py): the in-memory index stays, only the descriptors go, and `reopen` brings
them back (no O_CREAT: the files must still be there). A closed segment is never read or
appended to (its log reopens first); its sync opens the log for the fdatasync if it holds
unsynced bytes, and is a no-op otherwise.

Costs: an append is one write(2) of the batch straight from the caller's buffer (the receive
buffer); a read is one pread(2) of a contiguous run of batches, plus a sliced copy of the
first and last batch when only part of them is asked for.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from libc.errno cimport errno, EINTR
from iggy_fast._bytes cimport ld32, ld64
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t, UINT32_MAX
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy

import logging
import os
import threading

from iggy_fast._wire import slice_batch

log = logging.getLogger("iggy_fast.storage")

cdef extern from "<unistd.h>" nogil:
    int close(int fd)
    ssize_t write(int fd, const void *buf, size_t count)
    ssize_t pread(int fd, void *buf, size_t count, long offset)
    int ftruncate(int fd, long length)
    int fdatasync(int fd)

cdef extern from "_xxhash.h" nogil:
    uint64_t iggy_xxh3_64(const void *data, size_t length)

cdef enum:
    BATCH_HDR = 256
    MSG_HDR = 48
    ENTRY = 24
    # Index entries are written once this many are pending (and at every flush and close).
    INDEX_GROUP = 64
    # Bytes read at a time when looking for the next batch after a corrupt region.
    RESYNC_WINDOW = 1 << 20

cdef struct Entry:
    uint32_t delta
    uint32_t count
    uint64_t position
    uint64_t timestamp


def segment_name(uint64_t base_offset):
    return f"{base_offset:020d}"


cdef class OpenFile:
    """A file descriptor closed when the last reference to it goes.

    A segment holds one for its log, and so does every FileRegion cut from it: a reply still
    queued for a slow client keeps reading the file it was cut from even after retention,
    purge or delete closed (or unlinked) the segment, and never a file that reused its number.
    """

    cdef readonly int fd

    def __cinit__(self, int fd):
        self.fd = fd

    def __dealloc__(self):
        cdef int fd = self.fd
        if fd >= 0:
            # The last close of a deleted file frees its blocks (tens of ms for 256 MiB): not
            # while holding the GIL, which would stop the event loop's thread too.
            with nogil:
                close(fd)


cdef class Segment:
    """An append-only log file and its batch index (see the module docstring)."""

    cdef readonly uint64_t base_offset
    cdef readonly uint64_t end_offset      # the next offset this segment would assign
    cdef readonly uint64_t size            # bytes of batches in the log file
    cdef readonly str log_path
    cdef readonly str index_path
    cdef readonly bint sealed
    cdef readonly list problems            # what recovery found and repaired (strings)
    cdef OpenFile log_file                 # owns the log's fd; regions in flight share it
    cdef int fd                            # log_file.fd while open, -1 once closed
    cdef int index_fd
    cdef Entry *entries
    cdef Py_ssize_t n
    cdef Py_ssize_t cap
    cdef Py_ssize_t indexed                # entries already in the index file
    cdef bint index_failing                # the last index write failed (logged once)
    cdef uint64_t synced_size              # log bytes known to be on disk
    cdef Py_ssize_t verified               # batches [0, verified) checked since open
    cdef readonly set bad                  # indexes of batches that failed verification
    cdef readonly uint64_t cut             # bytes recovery cut off the end as a torn tail
    cdef readonly bint short_write         # ... and they were a write stopped early
    # Held while batches are verified (possibly on a worker thread) and while the files are
    # closed, so verification never reads a closed (or reused) descriptor, and never twice.
    cdef object _verify_lock
    # Held while the files are renamed (name_sealed, on the sync worker) or opened by path
    # (reopen on the event loop, sync of a closed segment): never across a slow call.
    cdef object _name_lock

    def __cinit__(self):
        self.fd = -1
        self.index_fd = -1
        self.entries = NULL
        self.n = self.cap = self.indexed = self.verified = self.cut = 0
        self.short_write = False
        self.index_failing = False
        self.problems = []
        self.bad = set()
        self._verify_lock = threading.Lock()
        self._name_lock = threading.Lock()

    def __dealloc__(self):
        if self.index_fd >= 0:
            os.close(self.index_fd)
        free(self.entries)

    @staticmethod
    def open(str directory, uint64_t base_offset, bint verify=True, str stem=None,
             bint tail=True):
        """Open (creating if needed) the segment starting at `base_offset` and recover it.

        The index file is trusted up to its last whole entry that agrees with the log; the
        log after that is scanned batch by batch and re-indexed, corrupt regions kept as bad
        entries; with `tail` (the last segment) what follows the last verifiable batch is cut.
        With `verify` false, stored batches are trusted until a header does not chain.
        """
        cdef Segment s = Segment.__new__(Segment)
        name = os.path.join(directory, stem or segment_name(base_offset))
        s.base_offset = base_offset
        s.end_offset = base_offset
        s.log_path = name + ".log"
        s.index_path = name + ".index"
        s.sealed = stem is not None and "-" in stem
        s.log_file = OpenFile(
            os.open(s.log_path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644))
        s.fd = s.log_file.fd
        s.index_fd = os.open(s.index_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        s._recover(verify, tail)
        if not verify:
            s.verified = s.n
        return s

    cdef int _grow(self) except -1:
        cdef Py_ssize_t cap = self.cap * 2 if self.cap else 256
        cdef Entry *e = <Entry *>realloc(self.entries, cap * sizeof(Entry))
        if e == NULL:
            raise MemoryError()
        self.entries = e
        self.cap = cap
        return 0

    cdef int _push(self, uint32_t delta, uint32_t count, uint64_t position,
                   uint64_t timestamp) except -1:
        if self.n == self.cap:
            self._grow()
        self.entries[self.n].delta = delta
        self.entries[self.n].count = count
        self.entries[self.n].position = position
        self.entries[self.n].timestamp = timestamp
        self.n += 1
        return 0

    cdef _recover(self, bint verify, bint tail):
        cdef uint64_t log_size = os.fstat(self.fd).st_size
        cdef bytes raw = os.pread(self.index_fd, os.fstat(self.index_fd).st_size, 0)
        cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(raw)
        cdef Py_ssize_t whole = len(raw) // ENTRY, i
        cdef uint64_t expect_pos = 0, expect_delta = 0, ts = 0
        cdef uint32_t delta, count
        cdef uint64_t pos
        if len(raw) % ENTRY:
            self.problems.append(f"{self.index_path}: partial index entry dropped")
        # Trust index entries only while they chain: each starts where the previous ended.
        for i in range(whole):
            delta = ld32(p + i * ENTRY)
            count = ld32(p + i * ENTRY + 4)
            pos = ld64(p + i * ENTRY + 8)
            ts = ld64(p + i * ENTRY + 16)
            if (delta != expect_delta or count == 0 or pos >= log_size
                    or (i > 0 and pos <= expect_pos)):
                self.problems.append(
                    f"{self.index_path}: entry {i} inconsistent, rebuilding from the log")
                break
            self._push(delta, count, pos, ts)
            expect_delta = delta + count
            expect_pos = pos
        # The last trusted entry must describe a batch that is really there; re-verify it.
        if self.n:
            self.n -= 1
            expect_pos = self.entries[self.n].position
            expect_delta = self.entries[self.n].delta
        self.indexed = self.n
        # A sealed segment's batches are checked lazily on read, not here.
        good_end = self._scan(expect_pos, log_size, expect_delta, verify and tail)
        self.size = good_end
        self.synced_size = good_end
        self.end_offset = self.base_offset + (
            self.entries[self.n - 1].delta + self.entries[self.n - 1].count if self.n else 0)
        if good_end < log_size and tail:
            self.cut = log_size - good_end
            self.short_write = self._short_write_at(good_end, log_size)
            self.problems.append(
                f"{self.log_path}: torn or corrupt tail at byte {good_end} "
                f"({log_size - good_end} bytes) truncated: "
                + ("a write cut short" if self.short_write else
                   f"no batch there verifies; offsets from {self.end_offset} on may have "
                   f"been handed out"))
            os.ftruncate(self.fd, good_end)
        elif good_end < log_size:
            self.problems.append(
                f"{self.log_path}: bytes {good_end}..{log_size} cannot be indexed and are "
                f"not served")
        # Rewrite the index if it disagreed with the log in any way.
        if self.indexed != whole or len(raw) % ENTRY or self.indexed < self.n:
            os.ftruncate(self.index_fd, self.indexed * ENTRY)
            self.flush_index()

    cdef uint64_t _scan(self, uint64_t pos, uint64_t log_size, uint64_t delta, bint verify):
        """Index the batches from `pos`; return where the last one that could be indexed ends.

        A batch is taken when its header continues the log (next offset, a timestamp that
        does not go back, a plausible length that fits the file) and, with `verify`, its
        checksums hold. Anything else starts a bad region, whatever field was hit (length,
        count, offset, a zeroed page): the scan resynchronises at the next position where a
        batch verifies and continues the offsets, and indexes the region as one bad entry
        (never served) holding the offsets in between. The file ends without a verifiable
        batch after it: the scan stops there (a torn tail, or bytes that cannot be indexed).

        Without `verify` headers are trusted, so a wrong length only shows at the next header:
        the batch before it is then verified, and it starts the bad region if it fails.
        """
        cdef const uint8_t *b
        cdef uint64_t length, after, expected, next_base
        cdef uint32_t count
        cdef uint64_t last_ts = self.entries[self.n - 1].timestamp if self.n else 0
        cdef Py_ssize_t first = self.n, k
        while pos < log_size:
            expected = self.base_offset + delta
            header = os.pread(self.fd, BATCH_HDR, pos)
            b = <const uint8_t *>PyBytes_AS_STRING(header)
            length = 0
            if len(header) == BATCH_HDR and ld64(b + 8) == expected:
                length = claimed_length(b, last_ts)
                if pos + length > log_size or (verify and not self._intact_at(pos, length)):
                    length = 0
            if length:
                count = ld32(b + 48)
                last_ts = ld64(b + 16)
                self._push(<uint32_t>delta, count, pos, last_ts)
                delta += count
                pos += length
                continue
            if not verify and self.n > first:
                k = self.n - 1
                if not self._intact_at(self.entries[k].position, pos - self.entries[k].position):
                    self.n = k
                    pos = self.entries[k].position
                    delta = self.entries[k].delta
                    expected = self.base_offset + delta
                    last_ts = self.entries[k - 1].timestamp if k else 0
            after = self._resync(pos, log_size, expected, last_ts)
            if after == 0:
                break
            next_base = ld64(<const uint8_t *>PyBytes_AS_STRING(
                os.pread(self.fd, BATCH_HDR, after)) + 8)
            self.problems.append(
                f"{self.log_path}: corrupt batch at byte {pos} (offsets {expected}.."
                f"{next_base - 1}) is not served ({after - pos} bytes left in place); the "
                f"batches after it are kept")
            self.bad.add(self.n)
            self._push(<uint32_t>delta, <uint32_t>(next_base - expected), pos, last_ts)
            delta = next_base - self.base_offset
            pos = after
        return pos

    cdef bint _intact_at(self, uint64_t pos, uint64_t length) except -1:
        chunk = os.pread(self.fd, length, pos)
        return (<uint64_t>len(chunk) == length
                and batch_is_intact(<const uint8_t *>PyBytes_AS_STRING(chunk), length))

    cdef uint64_t _resync(self, uint64_t pos, uint64_t log_size, uint64_t expected,
                          uint64_t last_ts) except? 0:
        """The first position after `pos` where a batch verifies and continues the log past
        offset `expected` (a later base offset within this segment's range); 0 if none.

        Batches have no alignment, so every byte is a candidate; the header checks run in C
        on a window of the file and reject almost every position before a checksum is
        computed: the cost is one pass over the bytes of the bad region.
        """
        cdef uint64_t start = pos + 1, base
        cdef uint64_t length, last_base = self.base_offset + <uint64_t>UINT32_MAX
        cdef const uint8_t *w
        cdef Py_ssize_t i, have
        while start + BATCH_HDR <= log_size:
            window = os.pread(self.fd, min(<uint64_t>RESYNC_WINDOW, log_size - start), start)
            have = len(window)
            if have < BATCH_HDR:
                return 0
            w = <const uint8_t *>PyBytes_AS_STRING(window)
            for i in range(have - BATCH_HDR + 1):
                base = ld64(w + i + 8)
                if base <= expected or base > last_base:
                    continue
                length = claimed_length(w + i, last_ts)
                if (length and start + i + length <= log_size
                        and self._first_frame_intact(start + i, length)
                        and self._intact_at(start + i, length)):
                    return start + i
            start += have - BATCH_HDR + 1
        return 0

    cdef bint _first_frame_intact(self, uint64_t pos, uint64_t length) except -1:
        """Whether the first frame of the batch claimed at `pos` carries its checksum.

        Checked before the whole batch is read: a header seen a byte or two off its real
        position can pass every header check (its fields shifted, their top bytes zero) and
        claim hundreds of megabytes; its first frame is garbage.
        """
        head = os.pread(self.fd, BATCH_HDR + MSG_HDR, pos)
        if len(head) < BATCH_HDR + MSG_HDR:
            return False
        cdef const uint8_t *f = <const uint8_t *>PyBytes_AS_STRING(head) + BATCH_HDR
        cdef uint64_t flen = MSG_HDR + <uint64_t>ld32(f + 32) + ld32(f + 36)
        if flen > length - BATCH_HDR or ld64(f + 40) != 0:
            return False
        frame = os.pread(self.fd, flen, pos + BATCH_HDR)
        f = <const uint8_t *>PyBytes_AS_STRING(frame)
        return (<uint64_t>len(frame) == flen
                and iggy_xxh3_64(f + 8, flen - 8) == ld64(f))

    cdef bint _short_write_at(self, uint64_t pos, uint64_t log_size) except -1:
        """Whether the bytes from `pos` to the end are a batch whose write stopped early.

        So they are when they are less than a header, or a header that continues the log
        and claims more bytes than there are, followed by whole frames that each verify,
        fewer than it counts. A complete batch with a bad header (say a flipped length bit)
        or a bad frame is corruption instead: acknowledged once, its offsets handed out.
        """
        cdef uint64_t have = log_size - pos
        cdef uint64_t last_ts = self.entries[self.n - 1].timestamp if self.n else 0
        if have < BATCH_HDR:
            return True
        header = os.pread(self.fd, BATCH_HDR, pos)
        cdef const uint8_t *b = <const uint8_t *>PyBytes_AS_STRING(header)
        if (len(header) < BATCH_HDR or ld64(b + 8) != self.end_offset
                or claimed_length(b, last_ts) <= have):
            return False
        data = os.pread(self.fd, have, pos)
        return (<uint64_t>len(data) == have
                and frames_cut_short(<const uint8_t *>PyBytes_AS_STRING(data), have))

    # ------------------------------------------------------------------------------------
    # Writing

    def append(self, const uint8_t[::1] batch not None, uint64_t base_offset,
               uint32_t count, uint64_t timestamp):
        """Append one stamped batch with a single write(2) from the caller's memory.

        On failure (ENOSPC, EIO) the file is cut back to its previous length, so the log
        never holds a partial batch, and the OSError propagates. Once the batch is written
        nothing can fail the append: the index entry is kept in memory until it can be written.
        """
        if self.sealed:
            raise RuntimeError("segment is sealed")
        if base_offset != self.end_offset:
            raise ValueError(f"batch offset {base_offset} does not continue the log at "
                             f"{self.end_offset}")
        if self.n == self.cap:
            self._grow()                       # before the write: nothing may fail after it
        cdef const uint8_t *p = &batch[0]
        cdef size_t left = batch.shape[0]
        cdef ssize_t w
        cdef int err = 0
        with nogil:
            while left:
                w = write(self.fd, p, left)
                if w < 0:
                    if errno == EINTR:
                        continue
                    err = errno
                    break
                p += w
                left -= w
        if err:
            os.ftruncate(self.fd, self.size)
            raise OSError(err, os.strerror(err), self.log_path)
        self._push(<uint32_t>(base_offset - self.base_offset), count, self.size, timestamp)
        if self.verified == self.n - 1:
            self.verified = self.n             # validated on ingest
        self.size += batch.shape[0]
        self.end_offset = base_offset + count
        if self.n - self.indexed >= INDEX_GROUP:
            self.flush_index()

    def flush_index(self):
        """Write the index entries not yet in the index file; True when none is left.

        Never raises: the index is rebuilt from the log when it falls behind, so a failed
        write (a full disk) is logged once and retried at the next flush.
        """
        cdef Py_ssize_t n = self.n
        if self.indexed == n:
            return True
        if self.index_fd < 0:                  # closed: written when it is reopened
            return False
        data = PyBytes_FromStringAndSize(<const char *>(self.entries + self.indexed),
                                         (n - self.indexed) * ENTRY)
        try:
            written = os.pwrite(self.index_fd, data, self.indexed * ENTRY)
        except OSError as e:
            written = 0
            error = e
        else:
            error = "short write"
        self.indexed += written // ENTRY
        if self.indexed == n:
            if self.index_failing:
                log.info("%s: index writes resumed", self.index_path)
                self.index_failing = False
            return True
        if not self.index_failing:
            log.warning("%s: index write failed (%s); %d entries kept in memory and written "
                        "later", self.index_path, error, n - self.indexed)
            self.index_failing = True
        return False

    def sync(self):
        """fdatasync the log; returns the log size now durable.

        Safe to call from a worker thread while the event loop appends: the size is taken
        before the sync, so everything appended before the call is covered. The index is not
        synced: recovery rebuilds it from the log.
        """
        cdef uint64_t size = self.size
        cdef OpenFile file = self.log_file     # held: a close meanwhile cannot free the fd
        cdef int rc
        if file is None:
            if size <= self.synced_size:
                return self.synced_size
            # Closed with unsynced bytes (evicted by the open-files budget): fdatasync through
            # a descriptor of our own; it covers the file's dirty pages whoever wrote them.
            with self._name_lock:
                try:
                    file = OpenFile(os.open(self.log_path, os.O_RDONLY | os.O_CLOEXEC))
                except FileNotFoundError:      # deleted meanwhile: nothing left to keep
                    return self.synced_size
        with nogil:
            rc = fdatasync(file.fd)
        if rc != 0:
            raise OSError(errno, os.strerror(errno), self.log_path)
        if size > self.synced_size:
            self.synced_size = size
        return size

    @property
    def unsynced_bytes(self):
        return self.size - self.synced_size

    @property
    def synced_bytes(self):
        return self.synced_size

    def seal(self):
        """Make the segment read-only (cheap: it writes the last index entries, nothing more).

        Naming it by its offset range is `name_sealed`, a separate step that the caller runs
        off the event loop and then makes durable with an fsync of the directory. A closed
        segment keeps the entries it could not write for its next reopen (or recovery).
        """
        self.flush_index()
        self.sealed = True

    def name_sealed(self):
        """Rename a sealed segment to show its offset range (two renames).

        The new name is only informative (any segment but the last is sealed again at start),
        so a failed rename is logged and the segment keeps its name. Open descriptors are
        unaffected: reads go on while the files are renamed.
        """
        if not self.sealed or self.n == 0 or "-" in os.path.basename(self.log_path):
            return
        stem = f"{segment_name(self.base_offset)}-{segment_name(self.end_offset - 1)}"
        directory = os.path.dirname(self.log_path)
        log_path = os.path.join(directory, stem + ".log")
        index_path = os.path.join(directory, stem + ".index")
        with self._name_lock:                  # a reopen meanwhile finds both by name
            try:
                os.rename(self.index_path, index_path)
            except OSError as e:
                log.warning("%s: not renamed when sealed: %s", self.log_path, e)
                return
            try:
                os.rename(self.log_path, log_path)
            except OSError as e:
                log.warning("%s: not renamed when sealed: %s", self.log_path, e)
                try:
                    os.rename(index_path, self.index_path)
                except OSError:
                    pass    # an index without its log is removed at start, then rebuilt
                return
            self.log_path, self.index_path = log_path, index_path

    @property
    def is_open(self):
        return self.fd >= 0

    def reopen(self):
        """Open the files of a segment closed by `close_cold` again (they must exist), and
        write the index entries that waited for it."""
        if self.fd >= 0:
            return
        with self._name_lock:
            log_file = OpenFile(os.open(self.log_path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC))
            self.index_fd = os.open(self.index_path, os.O_RDWR | os.O_CLOEXEC)
        self.log_file = log_file
        self.fd = log_file.fd
        self.flush_index()

    def close_cold(self):
        """Close the files to free descriptors, keeping everything in memory; False (nothing
        done) while a verification is using them. Never waits, so the event loop may call it.
        FileRegions in flight keep reading the log (they hold it open)."""
        if not self._verify_lock.acquire(False):
            return False
        try:
            self.flush_index()
            self._close_files()
        finally:
            self._verify_lock.release()
        return True

    def close(self):
        """Close the files; the log's fd stays open while a FileRegion of it is in flight."""
        self.flush_index()
        with self._verify_lock:                # a verification in progress finishes first
            self._close_files()

    cdef _close_files(self):
        self.log_file = None
        self.fd = -1
        if self.index_fd >= 0:
            os.close(self.index_fd)
            self.index_fd = -1

    def delete(self):
        """Close and remove both files (regions in flight still read the removed log)."""
        self.close()
        for path in (self.log_path, self.index_path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    # ------------------------------------------------------------------------------------
    # Reading

    @property
    def batches(self):
        return self.n

    @property
    def first_timestamp(self):
        return self.entries[0].timestamp if self.n else 0

    @property
    def last_timestamp(self):
        return self.entries[self.n - 1].timestamp if self.n else 0

    cdef Py_ssize_t _find_offset(self, uint64_t offset) noexcept:
        """Index of the batch holding `offset` (offset within this segment's range)."""
        cdef uint64_t d = offset - self.base_offset
        cdef Py_ssize_t lo = 0, hi = self.n - 1, mid
        while lo < hi:
            mid = (lo + hi + 1) >> 1
            if self.entries[mid].delta <= d:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def offset_for_timestamp(self, uint64_t timestamp):
        """The first offset whose batch timestamp is >= `timestamp`, or None."""
        cdef Py_ssize_t lo = 0, hi = self.n, mid
        while lo < hi:
            mid = (lo + hi) >> 1
            if self.entries[mid].timestamp < timestamp:
                lo = mid + 1
            else:
                hi = mid
        if lo == self.n:
            return None
        return self.base_offset + self.entries[lo].delta

    def timestamp_at(self, uint64_t offset):
        """The append timestamp of the batch holding `offset`, or None outside this segment
        (consumer lag in seconds: server/metrics.py)."""
        if self.n == 0 or offset < self.base_offset or offset >= self.end_offset:
            return None
        return self.entries[self._find_offset(offset)].timestamp

    cdef Py_ssize_t _last_needed(self, uint64_t first, uint64_t last) noexcept:
        """Index of the last batch a read of offsets [first, last] touches; -1 if none."""
        if first < self.base_offset:
            first = self.base_offset
        if self.n == 0 or first >= self.end_offset or last < first:
            return -1
        if last >= self.end_offset:
            last = self.end_offset - 1
        return self._find_offset(last)

    def needs_verification(self, uint64_t first, uint64_t last):
        """Whether reading offsets [first, last] would first verify stored batches."""
        return self.verified < self.n and self.verified <= self._last_needed(first, last)

    def verify(self, uint64_t first, uint64_t last):
        """Verify the stored batches a read of [first, last] needs; slow, for a worker thread.

        The checks run without the GIL, so the event loop goes on meanwhile.
        """
        cdef Py_ssize_t j = self._last_needed(first, last)
        if self.verified <= j:
            self._verify_through(j)

    cdef int _verify_through(self, Py_ssize_t j) except -1:
        """Check stored batches [verified, j] once; remember the ones that fail."""
        cdef Py_ssize_t k, stop, done
        with self._verify_lock:
            while self.verified <= j and self.fd >= 0:
                k = self.verified
                if k in self.bad:              # already found (and logged) by recovery
                    self.verified = k + 1
                    continue
                stop = min([b for b in self.bad if b > k] + [j + 1])
                done = self._check_run(k, stop)
                if done < stop:                # batch `done` is corrupt
                    self._mark_bad(done)
                    done += 1
                self.verified = done
        return 0

    cdef Py_ssize_t _check_run(self, Py_ssize_t k, Py_ssize_t stop) except -1:
        """Check batches [k, stop) with the GIL released; the index of the first bad one, or
        `stop`. Their positions are copied first: an append may move the entry array."""
        cdef Py_ssize_t runs = stop - k, i
        cdef uint64_t *bounds = <uint64_t *>malloc((runs + 1) * sizeof(uint64_t))
        cdef uint8_t *buf = NULL
        cdef uint8_t *grown
        cdef uint64_t cap = 0, length
        cdef int fd = self.fd
        cdef ssize_t got
        cdef bint nomem = False
        if bounds == NULL:
            raise MemoryError()
        for i in range(runs):
            bounds[i] = self.entries[k + i].position
        bounds[runs] = self.entries[stop].position if stop < self.n else self.size
        i = 0
        with nogil:
            while i < runs:
                length = bounds[i + 1] - bounds[i]
                if length < BATCH_HDR:
                    break
                if length > cap:
                    grown = <uint8_t *>realloc(buf, length)
                    if grown == NULL:
                        nomem = True
                        break
                    buf, cap = grown, length
                got = pread(fd, buf, length, bounds[i])
                if got < 0 and errno == EINTR:
                    continue
                if (<uint64_t>got != length or ld64(buf + 32) != length
                        or not batch_is_intact(buf, length)):
                    break
                i += 1
        free(buf)
        free(bounds)
        if nomem:
            raise MemoryError()
        return k + i

    cdef _mark_bad(self, Py_ssize_t k):
        self.bad.add(k)
        # (No negative indexing here: the module is compiled with wraparound off.)
        problem = (f"{self.log_path}: corrupt batch at byte {self.entries[k].position} (offsets "
                   f"{self.base_offset + self.entries[k].delta}.."
                   f"{self.base_offset + self.entries[k].delta + self.entries[k].count - 1}"
                   f") is not served")
        self.problems.append(problem)
        log.error("%s", problem)

    def read(self, uint64_t first, uint64_t last, bint regions=False):
        """The stored batches covering offsets [first, last], sliced to exactly that range.

        Returns (chunks, message_count, next_offset): chunks to send back to back (bytes, or
        FileRegion for whole batches when `regions` is true), how many messages they hold, and
        the offset after the last one covered (corrupt batches are skipped, not served).
        """
        if first < self.base_offset:
            first = self.base_offset
        if self.n == 0 or first >= self.end_offset or last < first:
            return [], 0, first
        if last >= self.end_offset:
            last = self.end_offset - 1
        cdef Py_ssize_t i = self._find_offset(first), j, k, run
        cdef uint64_t shift
        if self.verified <= i:
            self._verify_through(i)
        # A read that starts in a corrupt batch starts after it, as a read across any gap of
        # offsets does: a poll for fewer messages than the batch held must not come back
        # empty short of the end (a consumer would never get past it).
        while i in self.bad:
            if i + 1 == self.n:
                return [], 0, self.end_offset
            i += 1
            shift = self.base_offset + self.entries[i].delta - first
            first += shift
            last = last + shift if last + shift < self.end_offset else self.end_offset - 1
            if self.verified <= i:
                self._verify_through(i)
        j = self._find_offset(last)
        if self.verified <= j:
            self._verify_through(j)
        chunks = []
        cdef uint64_t count = 0, lo, hi, a, z
        k = i
        while k <= j:
            if k in self.bad:
                k += 1
                continue
            run = k
            while run + 1 <= j and (run + 1) not in self.bad:
                run += 1
            self._emit(chunks, k, run, first, last, regions)
            a = self.base_offset + self.entries[k].delta
            z = self.base_offset + self.entries[run].delta + self.entries[run].count - 1
            lo = a if a > first else first
            hi = z if z < last else last
            count += hi - lo + 1
            k = run + 1
        return chunks, count, last + 1

    def last_within(self, uint64_t first, uint64_t last, uint64_t max_bytes, bint at_least_one):
        """The last offset <= `last` such that the stored batches from `first`'s through its
        own span at most `max_bytes` (a poll reply's cap); `first - 1` when not even the first
        batch fits, unless `at_least_one` (a reply always carries something it can)."""
        if first < self.base_offset:
            first = self.base_offset
        if self.n == 0 or first >= self.end_offset or last < first:
            return last
        if last >= self.end_offset:
            last = self.end_offset - 1
        cdef Py_ssize_t i = self._find_offset(first), j = self._find_offset(last), lo, hi, mid
        cdef uint64_t start = self.entries[i].position
        if self._batch_end(j) - start <= max_bytes:
            return last
        if self._batch_end(i) - start > max_bytes and not at_least_one:
            return <object>first - 1           # a Python int: no wrap below offset 0
        lo, hi = i, j                      # the largest k in [i, j) whose end fits (or i)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._batch_end(mid) - start <= max_bytes:
                lo = mid
            else:
                hi = mid - 1
        cdef uint64_t end = self.base_offset + self.entries[lo].delta + self.entries[lo].count - 1
        return end if end < last else last

    cdef inline uint64_t _batch_end(self, Py_ssize_t k) noexcept:
        return self.entries[k + 1].position if k + 1 < self.n else self.size

    cdef _emit(self, list chunks, Py_ssize_t k, Py_ssize_t run, uint64_t first, uint64_t last,
               bint regions):
        """Append batches k..run (a run of good ones), slicing the first and last if needed."""
        cdef uint64_t start = self.entries[k].position
        cdef uint64_t end = self.entries[run + 1].position if run + 1 < self.n else self.size
        cdef bint head = self.base_offset + self.entries[k].delta < first
        cdef bint tail = (self.base_offset + self.entries[run].delta
                          + self.entries[run].count - 1 > last)
        cdef uint64_t head_end = self.entries[k + 1].position if k + 1 < self.n else self.size
        cdef uint64_t tail_start = self.entries[run].position
        if head:
            chunks.append(slice_batch(os.pread(self.fd, head_end - start, start), first, last))
            if run == k:
                return
            start = head_end
        if tail:
            middle_end = tail_start
        else:
            middle_end = end
        if middle_end > start:
            if regions:
                chunks.append(FileRegion(self.log_file, start, middle_end - start))
            else:
                data = os.pread(self.fd, middle_end - start, start)
                if len(data) != middle_end - start:
                    raise OSError(f"{self.log_path}: short read at {start}")
                chunks.append(data)
        if tail and not (head and run == k):
            chunks.append(slice_batch(os.pread(self.fd, end - tail_start, tail_start),
                                      first, last))


cdef class FileRegion:
    """Bytes of a segment file to be sent as they are (sendfile), or read when that cannot be.

    It holds the file open (OpenFile) for as long as it lives, so it may outlive its segment.
    """

    cdef readonly OpenFile file
    cdef readonly uint64_t offset
    cdef readonly uint64_t length

    def __cinit__(self, OpenFile file not None, uint64_t offset, uint64_t length):
        self.file = file
        self.offset = offset
        self.length = length

    @property
    def fd(self):
        return self.file.fd

    def __len__(self):
        return self.length

    def read(self):
        data = os.pread(self.file.fd, self.length, self.offset)
        if <uint64_t>len(data) != self.length:
            raise OSError(f"short read of {self.length} bytes at {self.offset}")
        return data


cdef uint64_t claimed_length(const uint8_t *b, uint64_t last_ts) noexcept nogil:
    """The length a batch header claims if it could head a stored batch, else 0.

    Plausible: at least one message and room for every message header, a timestamp not
    before `last_ts`, the reserved bytes zero. Offsets are the caller's to check.
    """
    cdef uint32_t count = ld32(b + 48)
    cdef uint64_t length = ld64(b + 32)
    cdef int i
    if count == 0 or length < BATCH_HDR + <uint64_t>MSG_HDR * count or ld64(b + 16) < last_ts:
        return 0
    for i in range(52, BATCH_HDR):
        if b[i]:
            return 0
    return length


cdef bint frames_cut_short(const uint8_t *b, uint64_t have) noexcept nogil:
    """Whether `have` bytes of a batch end before its last frame, every whole frame intact."""
    cdef uint32_t count = ld32(b + 48), i
    cdef uint64_t pos = BATCH_HDR, flen
    cdef const uint8_t *f
    for i in range(count):
        if pos + MSG_HDR > have:
            return True
        f = b + pos
        flen = MSG_HDR + <uint64_t>ld32(f + 32) + ld32(f + 36)
        if pos + flen > have:
            return True
        if iggy_xxh3_64(f + 8, flen - 8) != ld64(f):
            return False
        pos += flen
    return False


cdef bint batch_is_intact(const uint8_t *b, uint64_t length) noexcept nogil:
    """Every frame tiles the batch and carries the checksum it claims; so does the batch,
    and its reserved header bytes are zero (the checksum does not cover them)."""
    cdef uint32_t count = ld32(b + 48), i
    cdef uint64_t pos = BATCH_HDR, flen
    cdef uint64_t scratch_len = 44 + 8 * <uint64_t>count
    cdef uint8_t *scratch
    cdef const uint8_t *f
    cdef bint ok = True
    if length < BATCH_HDR + MSG_HDR * <uint64_t>count:
        return False
    for i in range(52, BATCH_HDR):
        if b[i]:
            return False
    scratch = <uint8_t *>malloc(scratch_len)
    if scratch == NULL:
        return False
    memcpy(scratch, b, 40)
    memcpy(scratch + 40, b + 48, 4)
    for i in range(count):
        if pos + MSG_HDR > length:
            ok = False
            break
        f = b + pos
        flen = MSG_HDR + <uint64_t>ld32(f + 32) + ld32(f + 36)
        if pos + flen > length or iggy_xxh3_64(f + 8, flen - 8) != ld64(f):
            ok = False
            break
        memcpy(scratch + 44 + 8 * i, f, 8)
        pos += flen
    if ok:
        ok = pos == length and iggy_xxh3_64(scratch, scratch_len) == ld64(b + 40)
    free(scratch)
    return ok


def verify_batches(const uint8_t[::1] data not None):
    """Walk batches back to back; return (valid_bytes, batch_count) up to the first bad one."""
    cdef uint64_t pos = 0, n = data.shape[0], length
    cdef Py_ssize_t batches = 0
    while pos + BATCH_HDR <= n:
        length = ld64(&data[0] + pos + 32)
        if length < BATCH_HDR or pos + length > n or not batch_is_intact(&data[0] + pos, length):
            break
        pos += length
        batches += 1
    return pos, batches
