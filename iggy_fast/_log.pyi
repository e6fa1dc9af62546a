"""Type stubs for the compiled storage module `iggy_fast._log` (see _log.pyx)."""

from typing import Any

Buffer = bytes | bytearray | memoryview

def segment_name(base_offset: int) -> str:
    """The zero-padded file stem of a segment starting at `base_offset`."""

class OpenFile:
    """A file descriptor closed when the last reference to it goes (a segment's log, shared
    with the FileRegions cut from it, so a region in flight outlives the segment's close)."""
    fd: int
    def __init__(self, fd: int) -> None: ...

class FileRegion:
    """Bytes of a segment file to send as they are (sendfile), or to read when that cannot be.
    Holds its file open: still readable after the segment was closed or deleted."""
    file: OpenFile
    fd: int
    offset: int
    length: int
    def __init__(self, file: OpenFile, offset: int, length: int) -> None: ...
    def __len__(self) -> int: ...
    def read(self) -> bytes: ...

class Segment:
    """An append-only log file plus its batch index."""
    base_offset: int
    end_offset: int
    size: int
    log_path: str
    index_path: str
    sealed: bool
    problems: list[str]
    bad: set[int]
    cut: int              # bytes recovery cut off the end as a torn tail
    short_write: bool     # those bytes were a write stopped early (never acknowledged)
    batches: int
    first_timestamp: int
    last_timestamp: int
    unsynced_bytes: int
    synced_bytes: int
    @staticmethod
    def open(directory: str, base_offset: int, verify: bool = True, stem: str | None = None,
             tail: bool = True) -> Segment:
        """Open or create, then recover: complete the index, keep corrupt regions as bad
        entries (never served) and resynchronise after them; cut a torn tail (`tail` only)."""
    def append(self, batch: Buffer, base_offset: int, count: int, timestamp: int) -> None:
        """One write(2) of a stamped batch; on failure the file is cut back and OSError raised.
        Once the batch is written nothing fails: index entries wait in memory if need be."""
    def flush_index(self) -> bool:
        """Write pending index entries; False if the write failed (logged once, retried later)
        or the segment is closed (they are written when it reopens)."""
    def sync(self) -> int:
        """fdatasync; returns the log size now durable. Safe from a worker thread. A closed
        segment with unsynced bytes opens its log for it; without, it is a no-op."""
    def seal(self) -> None:
        """Read-only from now on (cheap: writes pending index entries, renames nothing)."""
    def name_sealed(self) -> None:
        """Rename a sealed segment to <first>-<last> (a failed rename is only logged); the
        caller fsyncs the directory. Open descriptors, and reads through them, go on."""
    def needs_verification(self, first: int, last: int) -> bool:
        """Whether reading offsets [first, last] would first verify stored batches."""
    def verify(self, first: int, last: int) -> None:
        """Verify what a read of [first, last] needs, without the GIL: for a worker thread."""
    is_open: bool
    def reopen(self) -> None:
        """Open the files of a segment closed by close_cold again (they must still exist)."""
    def close_cold(self) -> bool:
        """Close the files, keeping the segment in memory (reopen brings them back); False,
        and nothing done, while a verification uses them. Never waits."""
    def close(self) -> None:
        """Close the files; the log stays open while a FileRegion of it is alive."""
    def delete(self) -> None:
        """Close and remove the files; FileRegions alive still read the removed log."""
    def offset_for_timestamp(self, timestamp: int) -> int | None: ...
    def timestamp_at(self, offset: int) -> int | None:
        """The append timestamp of the batch holding `offset` (None outside this segment)."""
    def last_within(self, first: int, last: int, max_bytes: int, at_least_one: bool) -> int:
        """The last offset <= `last` whose batches from `first`'s span at most `max_bytes`
        (`first - 1` if none fits, unless `at_least_one`)."""
    def read(self, first: int, last: int, regions: bool = False) -> tuple[list[Any], int, int]:
        """(chunks, message count, next offset) for offsets [first, last]; corrupt batches skipped."""

def verify_batches(data: Buffer) -> tuple[int, int]:
    """(valid bytes, batch count) of batches back to back, up to the first bad one."""
