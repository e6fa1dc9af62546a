"""Consumer offsets, stored beside their partition's log rather than in the metadata store.

A partition's offsets are small files in `<partition dir>/offsets/`, one per consumer, named by
its key ("<kind>.<id>": 1 a consumer, 2 a consumer group; a named consumer's id is the xxh32 of
its name, as Iggy keys it) and holding the stored offset as 8 little-endian bytes. They move
and get replicated with the partition, and storing one costs a pwrite, not a metadata commit:
an auto-committing poll stays cheap.

Storing overwrites the 8 bytes in place with one pwrite, which a process crash cannot tear,
on a descriptor kept open while it is warm: each open offset file is a holder in the server's
open-files budget (storage/files.py), closed when it goes cold and reopened by the next store,
and a partition keeps at most MAX_OPEN of them (many consumers of one partition do not crowd
the budget's other files out).
When the topic enforces fsync or asks for `consumer_offset_durability = "persisted"`, the
file (and, for a new file, its directory) is synced on a worker thread before the store is
acknowledged; otherwise it reaches the disk with the kernel's writeback. A file of any other
size (a crash between creating and writing it) is ignored at load. Deleting unlinks the file.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os

from iggy_fast.protocol.errors import CannotOpenConsumerOffsetsFile
from iggy_fast.server.storage.files import OpenFiles
from iggy_fast.server.storage.log import fsync_dir

log = logging.getLogger("iggy_fast.offsets")

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
MAX_OPEN = 8        # offset files one partition keeps open


class OffsetFile:
    """One consumer's offset file, open for writing while the budget lets it stay open."""

    __slots__ = ("path", "fd")

    def __init__(self, path: str):
        self.path = path
        self.fd = -1

    def reopen(self) -> None:
        self.fd = os.open(self.path, _FLAGS, 0o644)

    def close_cold(self) -> bool:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        return True


class ConsumerOffsets:
    """One partition's stored consumer offsets, in memory and in `directory`."""

    def __init__(self, directory: str, files: OpenFiles | None = None):
        self.directory = directory
        self.values: dict[str, int] = {}        # consumer key -> stored offset
        self._files = files if files is not None else OpenFiles()
        self._open: dict[str, OffsetFile] = {}  # consumer key -> its file (open, or closed
                                                # by the budget since)
        if not os.path.isdir(directory):    # made by the first store
            return
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                data = f.read(9)
            if len(data) == 8:
                self.values[name] = int.from_bytes(data, "little")
            else:
                log.warning("ignoring consumer offset file %s: %d bytes, not 8", path, len(data))

    def get(self, ckey: str) -> int | None:
        return self.values.get(ckey)

    def __contains__(self, ckey: str) -> bool:
        return ckey in self.values

    def store(self, ckey: str, offset: int, durable: bool):
        """Store `offset`; returns None, or (`durable`) an awaitable done once it is on disk."""
        try:
            file = self._open.get(ckey)
            if file is None:
                if len(self._open) >= MAX_OPEN:
                    self.close()
                file = self._open[ckey] = OffsetFile(f"{self.directory}/{ckey}")
            try:
                self._files.use(file, 1)
            except FileNotFoundError:               # the first store makes the directory
                os.mkdir(self.directory)
                self._files.use(file, 1)
            os.pwrite(file.fd, offset.to_bytes(8, "little"), 0)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # A full disk answers Iggy's code for an offsets file it cannot write, not 1;
            # the offset stays what it was (a new consumer's empty file is ignored at load).
            log.warning("cannot store consumer offset %s in %s: %s", ckey, self.directory, e)
            raise CannotOpenConsumerOffsetsFile(f"{self.directory}/{ckey}: {e.strerror}") from e
        created = ckey not in self.values
        self.values[ckey] = offset
        if not durable:
            return None
        return asyncio.get_running_loop().run_in_executor(
            None, self._sync, f"{self.directory}/{ckey}", created)

    def _sync(self, path: str, created: bool) -> None:
        """On a worker thread: the file's bytes, and its directory entry if it is new."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:       # deleted meanwhile: nothing left to make durable
            return
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)
        if created:      # its entry, and the directory's own in case the store made it
            fsync_dir(self.directory)
            fsync_dir(os.path.dirname(self.directory))

    def delete(self, ckey: str, durable: bool):
        """Forget `ckey`'s offset; returns None, or (`durable`) an awaitable of the unlink
        reaching the disk. Raises KeyError if it has none."""
        del self.values[ckey]
        file = self._open.pop(ckey, None)
        if file is not None:
            self._files.forget(file)
            file.close_cold()
        os.unlink(f"{self.directory}/{ckey}")
        if not durable:
            return None
        return asyncio.get_running_loop().run_in_executor(None, fsync_dir, self.directory)

    def clear(self) -> None:
        """Forget every offset (a purge: the log starts again at 0)."""
        for ckey in list(self.values):
            self.delete(ckey, False)

    def close(self) -> None:
        for file in self._open.values():
            self._files.forget(file)
            file.close_cold()
        self._open.clear()
