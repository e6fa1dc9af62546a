"""Where metadata lives: the asynchronous, watchable store the in-memory model follows.

Metadata is streams, topics, partitions, consumer groups, users and tokens; never messages nor
consumer offsets (those live beside their partition's log, see offsets.py). The store is a
key/value map with '/'-separated keys whose values are JSON-able dicts. Its interface is what
etcd offers, so an etcd-backed store can replace the embedded SQLite one behind it:

* `load()`: everything stored, as one `Change` of puts in key order at the current revision
  (etcd: a range read, which returns the store's revision).
* `commit(puts, deletes, delete_prefixes, expect, durable)`: one atomic change. Prefix
  deletes, then deletes, then puts. `expect` maps keys to the value each must hold now (None:
  the key must be absent), else nothing is written and `Conflict` is raised (etcd: a
  transaction comparing values or `version == 0`). `durable`: on disk before it returns.
  Each committed change gets the next revision.
* `watch(callback)`: `callback(change)` is called on the event loop for every committed
  change after the last load, in revision order, whoever made it (etcd: a watch from the
  load's revision + 1). `commit` returns only after every watcher has seen its change, so a
  writer finds its change applied to memory when its await returns.

The server's model (state.py, users.py, tokens.py, groups.py) changes only by applying
changes: the snapshot from `load()` at start, then each change the watch reports, its own
included. A mutation validates against memory, commits, and finds the result applied. On one
node an asyncio lock around validate+commit keeps two mutations from deciding on the same
memory (two creates of one name: the second sees the first and gets the right error). Across
nodes the store itself must refuse the loser: the commit carries `expect` conditions on the
keys its decision read (the identity counter here; a name or id index key per stream/topic
in a cluster), and a refused commit is retried after the watch has caught up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Protocol


@dataclass(frozen=True, slots=True)
class Change:
    """One committed change: applied in this order, prefix deletes, deletes, puts."""
    revision: int
    puts: tuple[tuple[str, dict], ...] = ()
    deletes: tuple[str, ...] = ()
    delete_prefixes: tuple[str, ...] = ()


class Conflict(Exception):
    """A commit's `expect` conditions did not hold: nothing was written."""


class MetadataStore(Protocol):
    async def load(self) -> Change:
        """Everything stored, as puts in key order, at the current revision."""

    async def commit(self, puts: Iterable[tuple[str, dict]] = (), deletes: Iterable[str] = (),
                     delete_prefixes: Iterable[str] = (),
                     expect: dict[str, dict | None] | None = None,
                     durable: bool = False) -> Change:
        """Write one atomic change; returns it once every watcher has seen it."""

    def watch(self, callback: Callable[[Change], None]) -> None:
        """Report every later committed change to `callback`, in revision order."""

    def close(self) -> None:
        """Finish pending commits and release the store."""


def upper_bound(prefix: str) -> str:
    """The smallest key greater than every key starting with `prefix`."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)
