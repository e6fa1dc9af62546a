"""The open-files budget: partition files are opened lazily and closed when cold.

Every descriptor a partition keeps open (a segment's log and index, a consumer offset file)
belongs to a holder registered here, in one LRU across all partitions. Before a holder opens
its files, the least recently used holders are closed until the new ones fit the budget, so
the server's partition files never exceed it, however many partitions there are. A holder
closed this way keeps everything in memory (a segment its index) and opens its files again
when next used (`use`). What holds no descriptor between uses (a partition's offset mark,
a directory fsync, a sync of a closed segment) opens and closes on the spot, within the room
the budget leaves below the process limit.

The budget is `[system.partition] max_open_files`, or by default (0) the process's soft
RLIMIT_NOFILE, read when the budget is first needed (after start-up raised it), less a
reserve for sockets and everything else (a quarter of the limit, at least RESERVE). If an
open still fails for lack of descriptors (the sockets took more than the reserve), cold
holders are closed and the open retried; only when none is left to close does it fail.

Holders implement `reopen()` (open their files again) and `close_cold() -> bool` (close
them without waiting; False when busy, e.g. a segment being verified on a worker thread,
which is then skipped). Only the event loop's thread calls into this class.

Costs: `use` of an open holder is one dict lookup and move (no syscall); opening a cold one
is its open(2)s plus, when the budget is full, the close(2)s of the holders it evicts.
"""

from __future__ import annotations

import errno
import logging
import resource
from collections import OrderedDict

log = logging.getLogger("iggy_fast.storage")

RESERVE = 256          # descriptors left by default for sockets, the metadata store, ...
MINIMUM = 8            # a budget below this could not keep one partition's files open


def default_budget(limit: int | None = None) -> int:
    """The budget for a process whose soft RLIMIT_NOFILE is `limit` (now, by default)."""
    if limit is None:
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if limit == resource.RLIM_INFINITY:
        limit = 1 << 20
    return max(MINIMUM, limit - max(RESERVE, limit // 4))


class OpenFiles:
    """The LRU of open holders, kept within the budget (see the module docstring)."""

    def __init__(self, budget: int = 0):
        self.configured = budget              # 0: derived from the limit when first needed
        self._budget = max(MINIMUM, budget) if budget else 0
        self._lru: OrderedDict = OrderedDict()  # holder -> descriptors it holds
        self.used = 0                          # descriptors held by the holders in the LRU
        self.evictions = 0                     # holders closed to make room

    @property
    def budget(self) -> int:
        if not self._budget:
            self._budget = default_budget()
            log.info("open-files budget: %d descriptors for partition files", self._budget)
        return self._budget

    def use(self, holder, fds: int) -> None:
        """About to use `holder`'s files: mark it most recently used, reopening it if it was
        closed. The hot path: no syscall when it is open."""
        try:
            self._lru.move_to_end(holder)
        except KeyError:
            self._admit(holder.reopen, fds, holder)

    def open_new(self, opener, fds: int):
        """Make room for `fds` descriptors, then `opener()`: it returns the new holder (with
        those files open), which joins the LRU."""
        return self._admit(opener, fds, None)

    def forget(self, holder) -> None:
        """`holder` is closed or about to be closed by its owner: no longer counted."""
        fds = self._lru.pop(holder, 0)
        self.used -= fds

    def _admit(self, opener, fds: int, holder):
        self._shed(self.budget - fds)
        while True:
            try:
                got = opener()
                break
            except OSError as e:
                # The process limit was reached before the budget (sockets took more than
                # the reserve): close cold files and retry while there are any.
                if e.errno not in (errno.EMFILE, errno.ENFILE) or not self._shed(
                        max(0, self.used - 2 * fds)):
                    raise
        holder = holder if holder is not None else got
        self._lru[holder] = fds
        self.used += fds
        return got

    def _shed(self, target: int) -> bool:
        """Close the least recently used holders until at most `target` descriptors are
        held; whether any was closed. Busy holders are skipped and stay oldest."""
        busy = []
        closed = False
        lru = self._lru
        while self.used > target and lru:
            holder, fds = lru.popitem(last=False)
            if holder.close_cold():
                self.used -= fds
                self.evictions += 1
                closed = True
            else:
                busy.append((holder, fds))
        for holder, fds in reversed(busy):
            lru[holder] = fds
            lru.move_to_end(holder, last=False)
        return closed
