"""The cluster's metadata store: etcd, behind the same interface as the SQLite one.

Every node of a cluster keeps the same keys (metadata/__init__.py) under
`/iggy/<cluster>/meta/`, each value its record as sorted-key JSON (so equal records are equal
bytes, which the `expect` conditions compare). `load()` is one range read and its revision;
`commit()` is one etcd transaction: compares for `expect` (the value, or `version == 0` for an
absent key), then the prefix deletes, deletes and puts. etcd's revision is the change's
revision. A watch from the load's revision + 1 turns each etcd revision's events into one
`Change` (a prefix delete arrives as the deletes of the keys it removed) and reports it to
the watchers; every node, the committing one included, applies changes only from there, so
all nodes apply the same changes in the same order. `commit()` returns once the watch has
reported its revision; a refused one waits until the watch has reached the revision that
refused it before raising `Conflict`, so a retry decides on memory that has seen the winner.

A broken watch (etcd restarted, an endpoint lost) is resumed from the last revision seen:
etcd keeps history, so nothing is missed. `durable` needs nothing more: etcd syncs its log
before it answers.
"""

from __future__ import annotations

import asyncio
import logging

import orjson

from iggy_fast.server.cluster import etcd as e
from iggy_fast.server.metadata import Change, Conflict

log = logging.getLogger("iggy_fast.metadata")


def encode(value: dict) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


class EtcdMetadataStore:
    def __init__(self, client: e.Etcd, cluster: str):
        self.etcd = client
        self.prefix = f"/iggy/{cluster}/meta/"
        self._watchers: list = []
        self._seen = 0                      # the last revision reported to the watchers
        self._waiting: list[tuple[int, asyncio.Future]] = []
        self._task: asyncio.Task | None = None

    # -- the interface -------------------------------------------------------------------

    async def load(self) -> Change:
        kvs, revision = await self.etcd.range(self.prefix, prefix=True)
        n = len(self.prefix)
        self._seen = revision
        if self._task is None:
            self._task = asyncio.ensure_future(self._follow())
        return Change(revision, tuple((kv.key[n:], orjson.loads(kv.value)) for kv in kvs))

    async def commit(self, puts=(), deletes=(), delete_prefixes=(), expect=None,
                     durable=False) -> Change:
        p = self.prefix
        compare = [e.absent(p + key) if value is None else e.value_is(p + key, encode(value))
                   for key, value in (expect or {}).items()]
        ops = [e.delete(p + prefix, prefix=True) for prefix in delete_prefixes]
        ops += [e.delete(p + key) for key in deletes]
        ops += [e.put(p + key, encode(value)) for key, value in puts]
        # A refused transaction reads the keys it compared: the newest of their revisions is
        # the change that refused it, which the watch will report.
        ok, reply = await self.etcd.txn(compare, ops, [e.get(p + key) for key in expect or {}])
        revision = int(reply["header"]["revision"])
        if not ok:
            found = [e.KV(kv) for r in reply.get("responses", ())
                     for kv in r.get("response_range", {}).get("kvs", ())]
            newest = max((kv.mod_revision for kv in found), default=0)
            await self.seen(newest)
            if len(found) < sum(1 for v in expect.values() if v is not None):
                # A key it expected was deleted, at a revision the reply does not give.
                try:
                    await asyncio.wait_for(self.seen(revision), 1.0)
                except asyncio.TimeoutError:
                    pass
            raise Conflict("another node changed what this change was decided on")
        wrote = bool(puts) or any(int(r.get("response_delete_range", {}).get("deleted", 0))
                                  for r in reply.get("responses", ()))
        if wrote:       # a transaction that changed nothing made no revision to wait for
            await self.seen(revision)
        return Change(revision, tuple(puts), tuple(deletes), tuple(delete_prefixes))

    def watch(self, callback) -> None:
        self._watchers.append(callback)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for _, waiter in self._waiting:
            waiter.cancel()

    # -- following etcd ------------------------------------------------------------------

    async def seen(self, revision: int) -> None:
        """Return once the watchers have been shown every change up to `revision`."""
        if self._seen >= revision:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append((revision, waiter))
        await waiter

    async def catch_up(self) -> None:
        """Return once the watchers have seen every key stored now: one read of the newest
        key's revision (etcd sorts by it), then a wait for the watch to get there."""
        body = {"key": e.b64(self.prefix), "range_end": e.b64(e.prefix_end(self.prefix)),
                "keys_only": True, "limit": "1", "sort_order": "DESCEND",
                "sort_target": "MOD"}
        reply = await self.etcd.call("/v3/kv/range", body)
        newest = reply.get("kvs") or [{}]
        await self.seen(int(newest[0].get("mod_revision", 0)))

    async def _follow(self) -> None:
        n = len(self.prefix)
        while True:
            try:
                async for events in self.etcd.watch(self.prefix, self._seen + 1):
                    by_revision: dict[int, tuple[list, list]] = {}
                    for kind, kv in events:
                        puts, deletes = by_revision.setdefault(kv.mod_revision, ([], []))
                        if kind == "DELETE":
                            deletes.append(kv.key[n:])
                        else:
                            puts.append((kv.key[n:], orjson.loads(kv.value)))
                    for revision in sorted(by_revision):
                        puts, deletes = by_revision[revision]
                        self._publish(Change(revision, tuple(puts), tuple(deletes)))
            except e.EtcdUnavailable as error:
                log.warning("metadata watch: %s; resuming from revision %d", error,
                            self._seen + 1)
                await asyncio.sleep(1)
            except Exception:
                log.exception("metadata watch failed; resuming from revision %d", self._seen + 1)
                await asyncio.sleep(1)

    def _publish(self, change: Change) -> None:
        for callback in self._watchers:
            try:
                callback(change)
            except Exception:
                log.exception("applying metadata change %d failed", change.revision)
        self._seen = change.revision
        self._wake()

    def _wake(self) -> None:
        still = []
        for revision, waiter in self._waiting:
            if revision <= self._seen:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                still.append((revision, waiter))
        self._waiting = still
