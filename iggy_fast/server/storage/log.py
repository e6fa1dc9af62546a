"""A partition's message log: a sequence of segments in one directory.

Offsets are dense and 0-based per partition. The last segment is the active one; it is sealed
and a new one opened at the next offset once it holds `segment_size` bytes. Appends come in
two kinds: a producer's batch, which the partition stamps with its id, the next offset and the
append time, and a replicated batch that already carries its offsets (a follower's append),
accepted only if it continues the log exactly.

The event loop never waits for the disk here; what can take long runs on a worker thread:
* Rollover opens the new segment and marks the old one read-only (both cheap) so appends go
  on at once; the old segment's fdatasync (up to a whole segment of dirty data), its renaming
  by offset range and the directory fsync are left to the next `settle()` (every `sync()`
  settles first), which the durability worker runs at once (`seal_pending`). A failure to create the new segment (a full disk, out
  of inodes or file descriptors) changes nothing and the append fails cleanly; a last segment
  found sealed at start (a crash, or an older version) gets a new active one after it.
* A stored batch is verified the first time it is read (see _log.pyx); `needs_verification`
  says whether a read would do that and `verify_for_read` does it in an executor.
* Deleting segments (retention, purge, a deleted partition) removes their directory entries
  at once, which is cheap while their files are still open; the close that then frees the
  blocks (tens of ms for a large file) runs in an executor.

Durability bookkeeping: `appended` counts bytes appended since start and `durable` the part of
them known to be on disk; `durable_offset` is the log end the last sync covered (a cluster
follower reports it, so a leader acknowledges an fsync-enforced send only once the follower's
copy is on disk too: cluster/replication.py). `sync()` runs on the durability worker thread while the event loop
appends: it reads the target first, then takes the segments to sync under `_lock` (rollover
changes them under it too), so everything counted before the call is covered: the segments
sealed since the last sync and the active one. `_io_lock` keeps files from being closed under
a sync. New directory entries (a partition's directories, a new segment, a seal's rename) are
made durable by a directory fsync in the next `settle()` or `sync()`, so an fsync-enforced
send, answered only after a sync that started after it, never depends on an entry that could
vanish.

A failed fdatasync (EIO) is final for this process: the kernel may have dropped the dirty pages
it could not write, so a later sync that succeeds proves nothing about them ("fsyncgate").
`sync_error` keeps the failure and every later sync raises it; `durable` never moves past it.
A failed directory fsync is treated the same way. Restarting recovers the partition from what
is really on disk.

Open files: segments open and close through the server's open-files budget (files.py), an
LRU across all partitions. Any segment may be closed when cold, the active one included: it
keeps its in-memory index and reopens (O_APPEND) at the next append or read. Recovery opens
one segment at a time, so a partition with more segments than the budget still starts. The
offset mark holds no descriptor: it is opened for its rare writes and syncs.

Offsets are never handed out twice, even when recovery has to cut acknowledged batches (a
corrupt last batch) or a reboot lost unsynced ones: `OffsetMark` keeps a high-water mark that
the next offset after a restart never goes below when the log alone cannot be trusted for it.
A gap of offsets is the price (reads skip it); reuse would make one offset name two messages.
The exceptions are a cluster follower's: `truncate` cuts a tail its new leader does not have
(at any batch boundary, across segments), and `restart_at` empties the log to go on from its
leader's log start; both set the mark to where the log now goes on.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import re
import shutil
import threading

from iggy_fast import _wire
from iggy_fast._log import FileRegion, Segment, segment_name, verify_batches
from iggy_fast.server.storage.files import OpenFiles
from iggy_fast.protocol.errors import InvalidBatchChecksum, InvalidCommand

log = logging.getLogger("iggy_fast.storage")

SEGMENT_FDS = 2        # a segment's log and index, as counted by the open-files budget
INDEX_ENTRY = 24       # bytes of one index entry (_log.pyx): u32 offset delta first


def fsync_dir(path: str) -> None:
    """Make the entries of directory `path` (created, renamed files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: str) -> list[str]:
    """Create `path` and its missing parents; the directories that got a new entry, whose
    fsync makes the new directories durable (parents first)."""
    missing = []
    p = os.path.abspath(path)
    while not os.path.isdir(p):
        missing.append(p)
        p = os.path.dirname(p)
    os.makedirs(path, exist_ok=True)
    return [os.path.dirname(d) for d in reversed(missing)]


def off_loop(job, *args) -> None:
    """Run `job(*args)` in the event loop's executor, or now when no loop is running (start,
    shutdown, tools). Nothing waits for it, so a failure is logged here."""
    def logged():
        try:
            job(*args)
        except Exception:
            log.exception("background storage job %s failed", job.__qualname__)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        logged()
    else:
        loop.run_in_executor(None, logged)


def close_segments(segments, io_lock) -> None:
    """Close segments already taken out of a log (their last close frees the disk blocks)."""
    with io_lock:                      # not under a sync that is using them
        for seg in segments:
            seg.close()


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""        # unknown: the log is never trusted alone after a crash


BOOT_ID = _boot_id()


class OffsetMark:
    """A partition's offset high-water mark: no offset at or above `offset` was handed out.

    The file `offsets.mark` holds one line, "<offset> <state>". While the partition is open
    the state is the machine's boot id and the offset a reservation: an append that would
    hand out an offset beyond it first reserves the next RESERVE offsets, so the file is
    written once per RESERVE offsets, never per send, and made durable by the next sync of
    the partition, before any acknowledgement that waits for the log. A clean close writes
    the exact next offset and the state "exact". No descriptor is kept between these rare
    writes (each opens the file), so a partition costs the open-files budget nothing for it.
    """

    NAME = "offsets.mark"
    RESERVE = 1 << 16
    _LINE = "{:020d} {:<36}\n"

    def __init__(self, directory: str):
        self.path = path = os.path.join(directory, self.NAME)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            text = os.pread(fd, 128, 0).decode("ascii", "replace")
        finally:
            os.close(fd)
        self.closed = False
        self.offset, self.state = 0, "exact"      # absent (a new partition, an older version)
        if text:
            try:
                offset, self.state = text.split()
                self.offset = int(offset)
            except ValueError:
                log.error("recovery: %s: unreadable (%r); offsets continue from the log",
                          path, text)
        self.reserved = 0      # in memory; the first append writes a reservation
        self._dirty = False

    def next_offset(self, log_end: int, cut: int, short_write: bool) -> int:
        """Where offsets continue after recovery: never below one handed out before.

        The log's end alone is right after a crash of the process on this same boot (the
        page cache kept every byte written) when nothing was cut from the tail but a write
        the crash stopped early, which was never acknowledged. Otherwise the mark counts
        too: after a clean close it is exact; after a reboot unsynced batches may be gone
        without a trace; a cut tail that is not a short write held acknowledged offsets.
        """
        if BOOT_ID and self.state == BOOT_ID and (not cut or short_write):
            return log_end
        return max(log_end, self.offset)

    def reserve(self, end: int) -> None:
        """Allow offsets below `end` (and RESERVE more) to be handed out."""
        self._write(end + self.RESERVE, BOOT_ID or "unknown")
        self.reserved = end + self.RESERVE
        self._dirty = True

    def sync(self) -> None:
        """Make the last reservation durable (nothing to do unless one was written since)."""
        if self._dirty and not self.closed:
            self._dirty = False
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:        # the partition was deleted meanwhile
                return
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)

    def _write(self, offset: int, state: str) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.pwrite(fd, self._LINE.format(offset, state).encode(), 0)
        finally:
            os.close(fd)

    def reset(self, offset: int = 0) -> None:
        """Offsets go on from `offset` (a purge: 0; a follower's truncation or new start at its
        leader's offsets), made durable by the next sync. The next append reserves again."""
        self._write(offset, "exact")
        self.reserved = offset
        self._dirty = True

    def close(self, next_offset: int | None) -> None:
        """Record the exact next offset, so a clean restart leaves no gap (None: the
        partition is being deleted, just let go of the file)."""
        if self.closed:
            return
        self.closed = True
        try:
            if next_offset is not None:
                self._write(next_offset, "exact")
        except OSError as e:      # the reservation stays: a gap after restart, never reuse
            log.warning("%s: not updated at close: %s", self.NAME, e)


class PartitionLog:
    def __init__(self, directory: str, partition_id: int, segment_size: int,
                 verify_on_open: bool = True, files: OpenFiles | None = None):
        self.directory = directory
        self._files = files if files is not None else OpenFiles()
        self.partition_id = partition_id
        self.segment_size = segment_size
        # Directories with entries not yet made durable; the next sync() or settle() fsyncs
        # them (on the durability worker), before any fsync'd send is answered.
        self._unsynced_dirs: list[str] = make_dirs(directory)
        fresh = not os.path.exists(os.path.join(directory, OffsetMark.NAME))
        self._mark = OffsetMark(directory)
        self.segments: list[Segment] = []
        stems = self._stems()
        for i, (base, stem) in enumerate(stems):
            seg = self._open_segment(base, verify_on_open, stem, i == len(stems) - 1)
            self._report(seg)
            self.segments.append(seg)
        for seg in self.segments[:-1]:
            seg.seal()
            seg.name_sealed()
        last = self.segments[-1] if self.segments else None
        base = self._mark.next_offset(last.end_offset if last else 0,
                                      last.cut if last else 0, bool(last and last.short_write))
        if last is not None and base > last.end_offset:
            log.warning("recovery: %s: offsets %d..%d are skipped: they may have been handed "
                        "out before", directory, last.end_offset, base - 1)
            if last.batches:
                last.seal()
                last.name_sealed()
            else:
                self._files.forget(last)
                last.delete()
                self.segments.pop()
            last = None
        if last is None or last.sealed:
            # A new partition, a gap of offsets not to reuse, or a crash (or an older version)
            # left the last segment sealed: appends need an active segment at `base`.
            if last is not None:
                log.warning("recovery: %s: the last segment is sealed; new active segment "
                            "at offset %d", directory, base)
            self.segments.append(self._open_segment(base))
            fresh = True
        if fresh:
            self._unsynced_dirs.append(directory)
        self._bases = [s.base_offset for s in self.segments]
        self.last_timestamp = max((s.last_timestamp for s in self.segments), default=0)
        self.appended = self.durable = 0
        self.appended_messages = self.durable_messages = 0
        self.sync_error: OSError | None = None
        # (the active segment, its end offset) as the last sync found them before syncing:
        # durable_offset. Kept by segment rather than as a bare offset so that a truncation
        # or purge since (which replaces the active segment) cannot leave it claiming
        # offsets that were written again and not synced.
        self._synced_to: tuple = (None, 0)
        self._io_lock = threading.Lock()
        # Guards what the event loop changes and the sync worker reads: the segment list, the
        # segments sealed but not yet synced and named (`_sealing`), and `_unsynced_dirs`.
        # Never held across an fdatasync, so the loop never waits long for it.
        self._lock = threading.Lock()
        self._sealing: list[Segment] = []
        self._destroyed = False

    def _open_segment(self, base: int, verify: bool = True, stem: str | None = None,
                      tail: bool = True) -> Segment:
        """Open (creating or recovering) a segment within the open-files budget."""
        return self._files.open_new(
            lambda: Segment.open(self.directory, base, verify, stem, tail), SEGMENT_FDS)

    _NAME = re.compile(r"^(\d{20})(?:-(\d{20}))?\.(log|index)$")

    def _stems(self) -> list[tuple[int, str]]:
        """Segment files by base offset; index files without their log are removed."""
        logs, indexes = {}, []
        for name in os.listdir(self.directory):
            m = self._NAME.match(name)
            if m is None:
                continue
            stem = name.rsplit(".", 1)[0]
            if m.group(3) == "log":
                logs[stem] = int(m.group(1))
            else:
                indexes.append(stem)
        for stem in indexes:
            if stem not in logs:   # left by a crash between the two renames of a seal
                os.unlink(os.path.join(self.directory, stem + ".index"))
        return sorted(((base, stem) for stem, base in logs.items()))

    @staticmethod
    def _report(seg: Segment) -> None:
        for problem in seg.problems:
            log.warning("recovery: %s", problem)

    # -- facts ---------------------------------------------------------------------------

    @property
    def next_offset(self) -> int:
        return self.segments[-1].end_offset

    @property
    def first_offset(self) -> int:
        """The oldest offset still stored (moves up as retention deletes segments)."""
        for seg in self.segments:
            if seg.end_offset > seg.base_offset:
                return seg.base_offset
        return self.next_offset

    @property
    def messages_count(self) -> int:
        return self.next_offset - self.first_offset

    @property
    def current_offset(self) -> int:
        """The offset of the last message (0 when empty), as Iggy reports it."""
        return self.next_offset - 1 if self.next_offset else 0

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self.segments)

    @property
    def unsynced_bytes(self) -> int:
        return self.appended - self.durable

    @property
    def unsynced_messages(self) -> int:
        return self.appended_messages - self.durable_messages

    @property
    def durable_offset(self) -> int:
        """Every offset below this is on disk (the log end the last sync covered). A lower
        bound: 0 until a sync, and again after a truncation or purge until the next one."""
        seg, end = self._synced_to
        if seg is not None:
            for s in reversed(self.segments):      # the last one, unless it rolled over since
                if s is seg:
                    return end
        return 0

    @property
    def seal_pending(self) -> bool:
        """Whether a rollover or a new directory left work for settle() (the durability worker
        does it at once, whatever the topic's policy)."""
        return bool(self._sealing or self._unsynced_dirs)

    # -- writing -------------------------------------------------------------------------

    def _active(self, incoming: int) -> Segment:
        seg = self.segments[-1]
        if seg.sealed or (seg.size and seg.size + incoming > self.segment_size):
            seg = self._roll(seg)
        return seg

    def _roll(self, old: Segment) -> Segment:
        """Open the next segment, then seal `old`; a failure to open it changes nothing.

        Only cheap steps happen here: the sync of `old`, its renaming and the directory fsync
        are the next sync()'s (see the module docstring).
        """
        new = self._open_segment(old.end_offset)
        old.seal()
        with self._lock:
            self._sealing.append(old)
            self._unsynced_dirs.append(self.directory)   # the new files, then the renames
            self.segments.append(new)
        self._bases.append(new.base_offset)
        return new

    def append(self, batch, count: int, now_us: int) -> int:
        """Stamp a validated producer batch in place and append it; returns its base offset."""
        seg = self._active(len(batch))
        self._files.use(seg, SEGMENT_FDS)          # reopens it if the budget closed it
        base = seg.end_offset
        if base + count > self._mark.reserved:     # once per RESERVE offsets, not per send
            self._mark.reserve(base + count)
        timestamp = now_us if now_us > self.last_timestamp else self.last_timestamp
        _wire.stamp_batch(batch, self.partition_id, base, timestamp)
        seg.append(batch, base, count, timestamp)
        self.last_timestamp = timestamp
        self.appended += len(batch)
        self.appended_messages += count
        return base

    def append_replicated(self, batch) -> int:
        """Append a batch stamped elsewhere (a leader's); it must continue this log exactly."""
        base, timestamp, length, count = _wire.batch_info(batch)
        if base != self.next_offset:
            raise InvalidCommand(f"replicated batch starts at {base}, "
                                         f"log continues at {self.next_offset}")
        if length != len(batch) or verify_batches(batch) != (length, 1):
            raise InvalidBatchChecksum("replicated batch fails its checks")
        seg = self._active(len(batch))
        self._files.use(seg, SEGMENT_FDS)
        if base + count > self._mark.reserved:
            self._mark.reserve(base + count)
        seg.append(batch, base, count, timestamp)
        self.last_timestamp = max(self.last_timestamp, timestamp)
        self.appended += length
        self.appended_messages += count
        return base

    def truncate(self, offset: int) -> None:
        """Drop every message at or after `offset`, a batch boundary (a cluster follower whose
        tail diverged from its new leader's log), in whichever segment it falls: the segments
        after that one are deleted, that one is cut at the batch and becomes the active
        segment again. An `offset` at or before the log's start empties the log, which then
        goes on from `offset` (`restart_at`); one in a gap of offsets (left at recovery so
        that no offset is handed out twice) cuts at the gap's start, where the log then goes
        on (below `offset`: a follower fetches what it lacks from there). ValueError when
        `offset` is inside a batch (the caller copies the log anew); nothing changes then.

        Made durable before it returns (a sync: file sizes, deleted and renamed files, the
        offset mark): the follower records its new leader epoch right after, and a cut tail that
        came back after a power loss would then never be cut again. A truncation is rare
        (a follower after a failover), so the event loop pays for those fsyncs."""
        if offset >= self.next_offset:
            return
        if offset <= self.segments[0].base_offset:
            self.restart_at(offset)
            self.sync()
            return
        i = bisect.bisect_right(self._bases, offset) - 1
        seg = self.segments[i]
        position = self._batch_position(seg, offset)
        with self._lock:            # the later segments go at once, as retention's do
            doomed = self.segments[i + 1:]
            del self.segments[i + 1:]
            del self._bases[i + 1:]
            self._drop(doomed)
        with self._io_lock, self._lock:     # no sync is using the segment being cut
            self._files.forget(seg)
            if seg in self._sealing:
                self._sealing.remove(seg)
            seg.close()
            entries = self._index_entries_before(seg.index_path, offset - seg.base_offset)
            os.truncate(seg.log_path, position)
            os.truncate(seg.index_path, entries * INDEX_ENTRY)
            stem = os.path.join(self.directory, segment_name(seg.base_offset))
            if seg.log_path != stem + ".log":         # sealed and named by its range
                os.rename(seg.log_path, stem + ".log")
                os.rename(seg.index_path, stem + ".index")
            self.segments[i] = self._open_segment(seg.base_offset)
        self._mark.reset(self.next_offset)
        self.last_timestamp = max((s.last_timestamp for s in self.segments), default=0)
        self.sync()

    def _batch_position(self, seg: Segment, offset: int) -> int:
        """Where in `seg`'s log file the batch starting at `offset` is (its size when
        `offset` is its end or in the gap after it); ValueError when no stored batch starts
        there."""
        if offset == seg.base_offset:
            return 0
        if offset >= seg.end_offset:
            return seg.size
        self._files.use(seg, SEGMENT_FDS)
        parts = seg.read(offset, seg.end_offset - 1, True)[0]      # whole batches
        if not parts or type(parts[0]) is not FileRegion or \
                _wire.batch_info(os.pread(parts[0].fd, 256, parts[0].offset))[0] != offset:
            raise ValueError(f"offset {offset} is not where a stored batch starts")
        return parts[0].offset

    @staticmethod
    def _index_entries_before(path: str, delta: int) -> int:
        """How many of the index file's entries describe batches before `delta` (offsets
        from the segment's base), found by bisection: the index keeps them and recovery
        only checks the last one, rather than reading the whole segment again."""
        with open(path, "rb") as f:
            lo, hi = 0, os.fstat(f.fileno()).st_size // INDEX_ENTRY
            while lo < hi:
                mid = (lo + hi) // 2
                if int.from_bytes(os.pread(f.fileno(), 4, mid * INDEX_ENTRY), "little") < delta:
                    lo = mid + 1
                else:
                    hi = mid
        return lo

    def restart_at(self, offset: int) -> None:
        """Remove every message; the log goes on from `offset`, as an empty active segment
        there (a purge: 0; a cluster follower whose leader's log starts later, its early
        segments deleted by retention, begins its copy at the leader's start). Offsets
        below `offset` are never served here: `first_offset` is `offset`."""
        with self._lock:
            doomed, self.segments = self.segments, []
            self._drop(doomed)
            self.segments = [self._open_segment(offset)]
            self._unsynced_dirs.append(self.directory)
            self._mark.reset(offset)
        self._bases = [offset]
        self.last_timestamp = 0
        self.durable = self.appended
        self.durable_messages = self.appended_messages

    def sync(self) -> int:
        """Make everything appended so far durable, with the directory entries it needs;
        returns the byte count covered.

        Runs on the durability worker thread (and at shutdown): it may take long.
        """
        target, messages = self.appended, self.appended_messages
        with self._io_lock:                    # truncate() waits: the segments stay these
            active = self.segments[-1]
            end = active.end_offset            # written before it was counted: covered
            self._sync_segment(self._settle())
            self._synced_to = (active, end)
        if target > self.durable:
            self.durable = target
        if messages > self.durable_messages:
            self.durable_messages = messages
        return target

    def settle(self) -> None:
        """Finish what rollovers and new directories left (see seal_pending), without syncing
        the active segment. For the durability worker."""
        with self._io_lock:
            self._settle()

    def _settle(self) -> Segment:
        """Sync and name the segments sealed since the last call, fsync the directories with
        new entries; returns the active segment as of the start (under `_io_lock`)."""
        with self._lock:
            sealing, self._sealing = self._sealing, []
            dirs, self._unsynced_dirs = self._unsynced_dirs, []
            active = self.segments[-1]
        for seg in sealing:
            self._sync_segment(seg)            # before it is named: a named segment is whole
            with self._lock:                   # not while the loop deletes it
                if seg in self.segments and not self._destroyed:
                    seg.name_sealed()
        for path in dict.fromkeys(dirs):
            self._sync_dir(path)
        return active

    def _sync_segment(self, seg: Segment) -> None:
        if self.sync_error is not None:
            raise self.sync_error
        try:
            self._mark.sync()
            seg.sync()
        except OSError as e:
            self._failed(e)
            raise

    def _sync_dir(self, path: str) -> None:
        if self.sync_error is not None:
            raise self.sync_error
        try:
            fsync_dir(path)
        except FileNotFoundError:
            pass                               # deleted meanwhile: nothing left to keep
        except OSError as e:
            self._failed(e)
            raise

    def _failed(self, e: OSError) -> None:
        self.sync_error = OSError(e.errno, f"fdatasync failed earlier ({e.strerror}); "
                                  f"restart the server to recover", self.directory)
        log.error("%s: fdatasync failed: %s; nothing more is acknowledged as durable "
                  "until a restart", self.directory, e)

    def flush_index(self) -> None:
        self.segments[-1].flush_index()

    # -- reading -------------------------------------------------------------------------

    def needs_verification(self, start: int, count: int) -> bool:
        """Whether read(start, count) would first verify stored batches (a first read after
        a restart): then await verify_for_read() before reading. Cheap: most segments were
        written by this process and are known good."""
        end = start + count - 1
        segments = self.segments
        for i in range(max(0, bisect.bisect_right(self._bases, start) - 1), len(segments)):
            seg = segments[i]
            if seg.base_offset > end:
                break
            if seg.needs_verification(start, end):
                return True
        return False

    async def verify_for_read(self, start: int, count: int) -> None:
        """Verify, in an executor, what read(start, count) needs."""
        loop = asyncio.get_running_loop()
        end = start + count - 1
        for seg in self.segments[max(0, bisect.bisect_right(self._bases, start) - 1):]:
            if seg.base_offset > end:
                break
            if seg.needs_verification(start, end):
                # Opened here, on the loop; if the budget closes it again before the worker
                # starts, verify does nothing and the read verifies on the loop instead.
                self._files.use(seg, SEGMENT_FDS)
                await loop.run_in_executor(None, seg.verify, start, end)

    def read(self, start: int, count: int, regions: bool = False,
             max_bytes: int | None = None) -> tuple[list, int, int]:
        """Up to `count` messages from offset `start`, in at most `max_bytes` of whole stored
        batches (but at least one batch: a batch is never split by size, only by count).

        Returns (chunks of batches, message count, offset after the last one covered).
        `regions` lets whole stored batches come back as FileRegion for sendfile.
        """
        if count <= 0 or start >= self.next_offset:
            return [], 0, start
        start = max(start, self.first_offset)
        chunks: list = []
        got = 0
        position = start
        i = max(0, bisect.bisect_right(self._bases, start) - 1)
        while got < count and i < len(self.segments):
            seg = self.segments[i]
            if position < seg.end_offset:
                # A gap between segments (left at recovery so that no offset is handed out
                # twice) holds nothing: the read goes on from the segment's base.
                first = max(position, seg.base_offset)
                last = first + (count - got) - 1
                capped = False
                if max_bytes is not None:
                    fit = seg.last_within(first, last, max_bytes, not got)
                    if fit < first:
                        break
                    capped = fit < min(last, seg.end_offset - 1)
                    last = fit
                self._files.use(seg, SEGMENT_FDS)
                part, n, position = seg.read(first, last, regions)
                chunks.extend(part)
                got += n
                if seg.problems:
                    self._report(seg)
                    seg.problems.clear()
                if capped:
                    break
                if max_bytes is not None:
                    max_bytes -= sum(len(c) for c in part)
            i += 1
        return chunks, got, position

    def offset_for_timestamp(self, timestamp: int) -> int | None:
        # Stamping never goes back in time, so segments hold increasing timestamps: the first
        # segment whose last timestamp reaches `timestamp` is found by bisection, then the
        # offset inside it by the segment's own index. Only the active (last) segment may be
        # empty, and it holds nothing to find.
        segments = self.segments
        end = len(segments) - (0 if segments and segments[-1].batches else 1)
        i = bisect.bisect_left(segments, True, 0, max(end, 0),
                               key=lambda seg: seg.last_timestamp >= timestamp)
        return segments[i].offset_for_timestamp(timestamp) if i < end else None

    # -- lifecycle -----------------------------------------------------------------------

    def _drop(self, doomed: list[Segment]) -> None:
        """Remove segments already taken out of `segments` (under `_lock`): their directory
        entries go now (cheap, the files are still open), the close that frees their blocks
        goes to an executor."""
        for seg in doomed:
            self._files.forget(seg)
            if seg in self._sealing:
                self._sealing.remove(seg)
            for path in (seg.log_path, seg.index_path):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        off_loop(close_segments, doomed, self._io_lock)

    def delete_oldest_segments(self, n: int) -> list[str]:
        """Delete up to n sealed segments, oldest first (never the active one); their names."""
        with self._lock:
            doomed = self.segments[:max(0, min(n, len(self.segments) - 1))]
            del self.segments[:len(doomed)]
            del self._bases[:len(doomed)]
            self._drop(doomed)
        return [os.path.basename(seg.log_path) for seg in doomed]

    def purge(self) -> None:
        """Remove every message; offsets start again at 0."""
        self.restart_at(0)

    def close(self) -> None:
        with self._io_lock:
            for seg in self.segments:
                self._files.forget(seg)
                seg.close()
            self._mark.close(self.next_offset)

    def discard(self) -> None:
        """Undo the creation of a new partition (one never committed to the metadata): close
        its files and remove them and its directory. Only names it made are unlinked, with
        no directory listing, so it works even when no descriptor is left to open."""
        self.close()
        remove_fresh_partition(self.directory)

    def release(self) -> None:
        """Let go of a deleted partition's files without waiting: the closes, which may have to
        wait for a sync that is using a file and which free the disk blocks, go to an executor.
        Removing the directory is the caller's (destroy, or the state's removal of a tree)."""
        with self._lock:
            doomed = self.segments
            for seg in doomed:
                self._files.forget(seg)
            self._destroyed = True
            self._sealing.clear()
            self._unsynced_dirs.clear()
            self._mark.close(None)
        off_loop(close_segments, doomed, self._io_lock)

    def destroy(self) -> None:
        """Delete the partition's files and directory. Every file in it is open, so the
        removal itself is cheap; the closes that free the blocks go to an executor."""
        self.release()
        shutil.rmtree(self.directory, ignore_errors=True)


def remove_fresh_partition(directory: str) -> None:
    """Remove what creating a partition at `directory` makes (its first segment and offset
    mark, then the directory), by name: no descriptor needed. Anything else in it is left;
    the start-up sweep removes directories of partitions that were never committed."""
    for name in (segment_name(0) + ".log", segment_name(0) + ".index", OffsetMark.NAME):
        try:
            os.unlink(os.path.join(directory, name))
        except FileNotFoundError:
            pass
    try:
        os.rmdir(directory)
    except FileNotFoundError:
        pass
