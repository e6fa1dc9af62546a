"""The single-node metadata store: SQLite in WAL mode, committing off the event loop.

One `kv` table (key, JSON value) and a one-row `revision` table in `<dir>/metadata.db`. Every
load and commit runs on one dedicated thread, so commits happen in the order they were asked
for and a commit that waits for fsync (milliseconds) never stalls the loop. The revision goes
up by one in the same transaction as the change it numbers.

A commit reports itself to the watchers from that thread with `call_soon_threadsafe` before
its result is handed back, so the loop sees changes in revision order and runs the watchers
before the committing coroutine resumes (the interface's promise, see __init__.py).
Durability: synchronous=NORMAL survives a process crash; FULL (fsync of the WAL at every
commit) is used when the server is configured for it, and for a single `durable` commit.

The files are the owner's only (0600) whatever the umask: they hold the users' password hashes
and tokens. SQLite creates `-wal` and `-shm` with the database file's mode, so the database file
is created 0600 before SQLite opens it; files an older version left readable are tightened.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import orjson

from iggy_fast.server.metadata import Change, Conflict, upper_bound

log = logging.getLogger("iggy_fast.metadata")

OWNER_ONLY = 0o600


class SqliteMetadataStore:
    def __init__(self, directory: str, fsync: bool = False):
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, "metadata.db")
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, OWNER_ONLY))
        for path in (self.path, self.path + "-wal", self.path + "-shm"):
            try:
                if os.stat(path).st_mode & 0o777 != OWNER_ONLY:   # the umask, or an old file
                    os.chmod(path, OWNER_ONLY)
            except FileNotFoundError:
                pass
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._fsync = fsync
        self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        self._db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB) "
                         "WITHOUT ROWID")
        self._db.execute("CREATE TABLE IF NOT EXISTS revision (id INTEGER PRIMARY KEY "
                         "CHECK (id = 0), revision INTEGER NOT NULL)")
        self._db.execute("INSERT OR IGNORE INTO revision VALUES (0, 0)")
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="metadata")
        self._watchers: list = []

    # -- the interface -------------------------------------------------------------------

    async def load(self) -> Change:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    async def commit(self, puts=(), deletes=(), delete_prefixes=(), expect=None,
                     durable=False) -> Change:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._executor, self._commit, loop, tuple(puts), tuple(deletes),
                tuple(delete_prefixes), expect or {}, durable)
        except sqlite3.OperationalError as e:
            if e.sqlite_errorcode != sqlite3.SQLITE_FULL:
                raise
            # A full disk is reported as the OS reports it, whatever the store.
            raise OSError(errno.ENOSPC, f"metadata store: {e}") from e

    def watch(self, callback) -> None:
        self._watchers.append(callback)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._db.close()

    # -- on the store's thread -----------------------------------------------------------

    def _load(self) -> Change:
        db = self._db
        db.execute("BEGIN")      # one snapshot: the rows and the revision they are at
        try:
            (revision,) = db.execute("SELECT revision FROM revision").fetchone()
            rows = db.execute("SELECT key, value FROM kv ORDER BY key").fetchall()
        finally:
            db.execute("COMMIT")
        return Change(revision, tuple((key, orjson.loads(value)) for key, value in rows))

    def _commit(self, loop, puts, deletes, delete_prefixes, expect, durable) -> Change:
        db = self._db
        upgrade = durable and not self._fsync
        if upgrade:   # this one commit syncs the WAL
            db.execute("PRAGMA synchronous=FULL")
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                for key, wanted in expect.items():
                    row = db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
                    if (None if row is None else orjson.loads(row[0])) != wanted:
                        raise Conflict(f"{key} is no longer {wanted}")
                for prefix in delete_prefixes:
                    db.execute("DELETE FROM kv WHERE key >= ? AND key < ?",
                               (prefix, upper_bound(prefix)))
                for key in deletes:
                    db.execute("DELETE FROM kv WHERE key = ?", (key,))
                for key, value in puts:
                    db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)",
                               (key, orjson.dumps(value)))
                db.execute("UPDATE revision SET revision = revision + 1")
                (revision,) = db.execute("SELECT revision FROM revision").fetchone()
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        finally:
            if upgrade:
                db.execute("PRAGMA synchronous=NORMAL")
        change = Change(revision, puts, deletes, delete_prefixes)
        loop.call_soon_threadsafe(self._publish, change)
        return change

    # -- on the loop ---------------------------------------------------------------------

    def _publish(self, change: Change) -> None:
        for callback in self._watchers:
            try:
                callback(change)
            except Exception:
                # Memory may now lag the store for this watcher; the next start reloads it.
                log.exception("applying metadata change %d failed", change.revision)
