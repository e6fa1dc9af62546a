"""A partition's message log: a sequence of segments in one directory.

Offsets are dense and 0-based per partition. The last segment is the active one; it is sealed
and a new one opened at the next offset once it holds `segment_size` bytes. Appends come in
two kinds: a producer's batch, which the partition stamps with its id, the next offset and the
append time, and a replicated batch that already carries its offsets (a follower's append),
accepted only if it continues the log exactly.
"""

from __future__ import annotations

import bisect
import logging
import os
import shutil

from iggy_fast import _wire
from iggy_fast._log import Segment, verify_batches
from iggy_fast.errors import IggyError

log = logging.getLogger("iggy_fast.storage")


class PartitionLog:
    def __init__(self, directory: str, partition_id: int, segment_size: int,
                 verify_on_open: bool = True):
        self.directory = directory
        self.partition_id = partition_id
        self.segment_size = segment_size
        os.makedirs(directory, exist_ok=True)
        bases = sorted(int(name[:-4]) for name in os.listdir(directory)
                       if name.endswith(".log") and name[:-4].isdigit())
        self.segments: list[Segment] = []
        for i, base in enumerate(bases):
            # Only the last segment can have a torn tail; sealed ones are checked by the
            # maintenance scan, not on every start (that would read the whole partition).
            seg = Segment.open(directory, base, verify_on_open and i == len(bases) - 1)
            for problem in seg.problems:
                log.warning("recovery: %s", problem)
            self.segments.append(seg)
        if not self.segments:
            self.segments.append(Segment.open(directory, 0))
        for seg in self.segments[:-1]:
            seg.seal()
        self._bases = [s.base_offset for s in self.segments]
        self.last_timestamp = max((s.last_timestamp for s in self.segments), default=0)
        self.unsynced_messages = 0

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
        return self.segments[-1].unsynced_bytes

    # -- writing -------------------------------------------------------------------------

    def _active(self, incoming: int) -> Segment:
        seg = self.segments[-1]
        if seg.size and seg.size + incoming > self.segment_size:
            seg.seal()
            seg = Segment.open(self.directory, seg.end_offset)
            self.segments.append(seg)
            self._bases.append(seg.base_offset)
        return seg

    def append(self, batch, count: int, now_us: int) -> int:
        """Stamp a validated producer batch in place and append it; returns its base offset."""
        seg = self._active(len(batch))
        base = seg.end_offset
        timestamp = now_us if now_us > self.last_timestamp else self.last_timestamp
        _wire.stamp_batch(batch, self.partition_id, base, timestamp)
        seg.append(batch, base, count, timestamp)
        self.last_timestamp = timestamp
        self.unsynced_messages += count
        return base

    def append_replicated(self, batch) -> int:
        """Append a batch stamped elsewhere (a leader's); it must continue this log exactly."""
        base, timestamp, length, count = _wire.batch_info(batch)
        if base != self.next_offset:
            raise IggyError.from_code(3, f"replicated batch starts at {base}, "
                                         f"log continues at {self.next_offset}")
        if length != len(batch) or verify_batches(batch) != (length, 1):
            raise IggyError.from_code(4039, "replicated batch fails its checks")
        seg = self._active(len(batch))
        seg.append(batch, base, count, timestamp)
        self.last_timestamp = max(self.last_timestamp, timestamp)
        self.unsynced_messages += count
        return base

    def sync(self) -> None:
        self.segments[-1].sync()
        self.unsynced_messages = 0

    def flush_index(self) -> None:
        self.segments[-1].flush_index()

    # -- reading -------------------------------------------------------------------------

    def read(self, start: int, count: int) -> tuple[list, int]:
        """Up to `count` messages from offset `start`: (chunks of batches, message count)."""
        if count <= 0 or start >= self.next_offset:
            return [], 0
        start = max(start, self.first_offset)
        chunks: list = []
        got = 0
        i = max(0, bisect.bisect_right(self._bases, start) - 1)
        while got < count and i < len(self.segments):
            seg = self.segments[i]
            first = start + got
            if first < seg.end_offset:
                part, n = seg.read(first, first + (count - got) - 1)
                chunks.extend(part)
                got += n
            i += 1
        return chunks, got

    def offset_for_timestamp(self, timestamp: int) -> int | None:
        for seg in self.segments:
            if seg.last_timestamp >= timestamp and seg.batches:
                return seg.offset_for_timestamp(timestamp)
        return None

    # -- lifecycle -----------------------------------------------------------------------

    def delete_oldest_segments(self, n: int) -> list[Segment]:
        """Delete up to n sealed segments, oldest first; the active one is never deleted."""
        gone = []
        while n > 0 and len(self.segments) > 1:
            seg = self.segments.pop(0)
            self._bases.pop(0)
            seg.delete()
            gone.append(seg)
            n -= 1
        return gone

    def purge(self) -> None:
        """Remove every message; offsets start again at 0."""
        for seg in self.segments:
            seg.delete()
        self.segments = [Segment.open(self.directory, 0)]
        self._bases = [0]
        self.last_timestamp = 0

    def close(self) -> None:
        for seg in self.segments:
            seg.close()

    def destroy(self) -> None:
        self.close()
        shutil.rmtree(self.directory, ignore_errors=True)
