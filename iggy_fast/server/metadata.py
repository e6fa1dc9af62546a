"""Where metadata lives: streams, topics, partitions, users, tokens, groups, consumer offsets.

The server talks to a `MetadataStore`: a key/value map with '/'-separated keys
("streams/3", "topics/3/1", "offsets/3/1/0/c/42") whose values are JSON-able dicts, written in
atomic groups and deleted by prefix. That is all a replicated store (etcd has exactly these
operations: transactions and range deletes) needs to offer to replace the embedded one.

`SqliteMetadataStore` keeps the map in one SQLite table in WAL mode. Messages never go here.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Iterable, Iterator, Protocol

import orjson


class MetadataStore(Protocol):
    def scan(self, prefix: str) -> Iterator[tuple[str, dict]]:
        """Every (key, value) whose key starts with `prefix`, in key order."""

    def apply(self, puts: Iterable[tuple[str, dict]] = (), deletes: Iterable[str] = (),
              delete_prefixes: Iterable[str] = (), durable: bool = False) -> None:
        """Write puts and deletes as one atomic change; `durable` means on disk on return."""

    def close(self) -> None: ...


def _upper(prefix: str) -> str:
    """The smallest key greater than every key starting with `prefix`."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class SqliteMetadataStore:
    """The embedded store: one `kv` table in `<dir>/metadata.db`, WAL journal."""

    def __init__(self, directory: str, fsync: bool = False):
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, "metadata.db")
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a commit survives a process crash; FULL: also a power loss.
        self._fsync = fsync
        self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        self._db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB) "
                         "WITHOUT ROWID")

    def scan(self, prefix: str) -> Iterator[tuple[str, dict]]:
        rows = self._db.execute("SELECT key, value FROM kv WHERE key >= ? AND key < ? "
                                "ORDER BY key", (prefix, _upper(prefix))).fetchall()
        for key, value in rows:
            yield key, orjson.loads(value)

    def apply(self, puts=(), deletes=(), delete_prefixes=(), durable=False) -> None:
        db = self._db
        upgrade = durable and not self._fsync
        if upgrade:   # this one commit syncs the WAL (a consumer offset of an fsync'd topic)
            db.execute("PRAGMA synchronous=FULL")
        try:
            self._apply(db, puts, deletes, delete_prefixes)
        finally:
            if upgrade:
                db.execute("PRAGMA synchronous=NORMAL")

    @staticmethod
    def _apply(db, puts, deletes, delete_prefixes) -> None:
        db.execute("BEGIN")
        try:
            for prefix in delete_prefixes:
                db.execute("DELETE FROM kv WHERE key >= ? AND key < ?", (prefix, _upper(prefix)))
            for key in deletes:
                db.execute("DELETE FROM kv WHERE key = ?", (key,))
            for key, value in puts:
                db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)",
                           (key, orjson.dumps(value)))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()
