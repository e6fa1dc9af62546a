"""When appended messages reach the disk: the fsync policy, with group commit.

Every append goes to the kernel at once (one write per batch). What differs is when it is made
durable with fdatasync, which happens on one worker thread so the event loop never waits. The
worker also settles partitions (PartitionLog.settle: after a rollover, the full segment's
fdatasync, its renaming and the directory fsync; the fsync of new directories), as soon as an
append finds that work pending, whatever the policy; every sync settles first:

* `enforce_fsync` topics: a SendMessages is acknowledged only once a sync that started after
  its append has finished. Sends that arrive while a sync runs wait for the next one and share
  it (group commit): N concurrent producers cost one fdatasync per round, not N.
* other topics: a background sync is requested once `messages_required_to_save` messages or
  `size_of_messages_required_to_save` bytes are unsynced, and every `sync_interval` anyway.

A failed sync fails the sends waiting on it (CannotSaveMessagesToSegment, 4006), and is final
for the partition until a restart (see PartitionLog.sync_error): its fsync-enforced sends are
refused from then on, since no later sync can prove that the failed data reached the disk.
At shutdown every partition is synced.

Counters, cheap enough for the send path: `fdatasyncs` (partition syncs done by the worker) and
`fsync_sends` (fsync-enforced sends appended). Each sync is logged at DEBUG and the totals at
shutdown, so tests and operators can see group commit at work.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import threading

from iggy_fast.config import parse_duration_us
from iggy_fast.protocol.errors import CannotSaveMessagesToSegment

log = logging.getLogger("iggy_fast.durability")

CANNOT_SAVE = 4006


class Durability:
    def __init__(self, server):
        self.server = server
        self._cv = threading.Condition()
        self._queue: set = set()              # partitions to sync
        self._settling: set = set()           # partitions to settle only (PartitionLog.settle)
        self._in_flight: set = set()          # partitions the worker is syncing now
        self._waiters: dict = {}              # PartitionLog -> [(target bytes, future)]
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._loop = None
        self.syncs = 0                        # worker rounds done
        self.fdatasyncs = 0                   # partition syncs done by the worker
        self.fsync_sends = 0                  # fsync-enforced sends appended
        interval = parse_duration_us(server.cfg["system"]["partition"]["sync_interval"])
        server.periodic_tasks.append((interval / 1e6, self.sync_idle))

    # -- the send path -------------------------------------------------------------------

    def append(self, partition, batch, count: int, now: int) -> int:
        plog = partition.log
        if plog.sync_error is not None and partition.topic.settings["enforce_fsync"]:
            raise CannotSaveMessagesToSegment(str(plog.sync_error))
        try:
            base = plog.append(batch, count, now)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                log.error("partition %s: disk full, append refused: %s", partition.key, e)
            raise CannotSaveMessagesToSegment(f"append failed: {e}") from None
        if plog.seal_pending:
            self._request(plog, settle=True)    # a rollover: finish the old segment now
        return base

    def acknowledge(self, partition, reply):
        """The reply now, or an awaitable of it once the append is durable (and, in a
        cluster, once the partition's in-sync replicas have it)."""
        reply = self._acknowledge(partition, reply)
        cluster = self.server.cluster
        return reply if cluster is None else cluster.appended(partition, reply)

    def _acknowledge(self, partition, reply):
        plog = partition.log
        settings = partition.topic.settings
        if settings["enforce_fsync"]:
            self.fsync_sends += 1
            return self._after_sync(plog, reply)
        if (plog.unsynced_messages >= settings["messages_required_to_save"]
                or plog.unsynced_bytes >= settings["size_of_messages_required_to_save"]):
            self._request(plog)
        return reply

    def sync_now(self, partition):
        """An awaitable that completes when everything appended so far is durable."""
        return self._after_sync(partition.log, None)

    def _after_sync(self, plog, reply):
        loop = asyncio.get_running_loop()
        self._loop = loop
        future = loop.create_future()
        self._waiters.setdefault(plog, []).append((plog.appended, future))
        self._request(plog)
        return self._wait(future, reply)

    @staticmethod
    async def _wait(future, reply):
        await future
        return reply

    # -- the worker ----------------------------------------------------------------------

    def _request(self, plog, settle: bool = False) -> None:
        with self._cv:
            (self._settling if settle else self._queue).add(plog)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="iggy-fsync",
                                                daemon=True)
                self._thread.start()
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._settling and not self._stopping:
                    self._cv.wait()
                if self._stopping and not self._queue and not self._settling:
                    return
                batch, self._queue = self._queue, set()
                settle, self._settling = self._settling - batch, set()
                self._in_flight = batch
            for plog in settle:                 # a sync below settles the others too
                try:
                    plog.settle()
                except OSError as e:
                    log.error("settling %s failed: %s", plog.directory, e)
            failures = {}
            for plog in batch:
                try:
                    covered = plog.sync()
                except OSError as e:
                    log.error("fdatasync of %s failed: %s", plog.directory, e)
                    failures[plog] = e
                else:
                    self.fdatasyncs += 1
                    log.debug("synced %s: %d bytes durable", plog.directory, covered)
            self.syncs += 1
            with self._cv:
                self._in_flight = set()
            loop = self._loop
            if loop is not None and not loop.is_closed():
                try:
                    loop.call_soon_threadsafe(self._resolve, batch, failures)
                except RuntimeError:   # the loop closed meanwhile
                    pass

    def _resolve(self, batch, failures) -> None:
        for plog in batch:
            waiters = self._waiters.get(plog)
            if not waiters:
                continue
            still = []
            for target, future in waiters:
                if future.done():
                    continue
                if plog in failures:
                    future.set_exception(CannotSaveMessagesToSegment(str(failures[plog])))
                elif target <= plog.durable:
                    future.set_result(None)
                else:
                    still.append((target, future))
            if still:
                # Each waiter queued a sync after its append; one already queued or running
                # covers it. Ask again only when none is (a later round ended before us).
                self._waiters[plog] = still
                with self._cv:
                    covered = plog in self._queue or plog in self._in_flight
                if not covered:
                    self._request(plog)
            else:
                del self._waiters[plog]

    # -- background and shutdown ---------------------------------------------------------

    def _logs(self):
        for stream in self.server.state.streams.values():
            for topic in stream.topics.values():
                for partition in topic.partitions.values():
                    yield partition.log

    def sync_idle(self, now: int) -> None:
        """The time rule: anything left unsynced for a whole interval is synced now."""
        for plog in self._logs():
            if plog.sync_error is None and (plog.unsynced_bytes or plog.seal_pending):
                self._request(plog, settle=not plog.unsynced_bytes)
            plog.flush_index()

    def close(self) -> None:
        """Stop the worker and make every partition durable."""
        with self._cv:
            self._stopping = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join()
        for plog in self._logs():
            try:
                plog.sync()
            except OSError as e:
                log.error("final fdatasync of %s failed: %s", plog.directory, e)
        log.info("durability: %d fdatasyncs by the sync worker, %d fsync-enforced sends",
                 self.fdatasyncs, self.fsync_sends)
