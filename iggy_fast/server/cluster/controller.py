"""Partition placement and leadership: every node follows it, the controller decides it.

Each partition's record sits beside its metadata key, `<partition key>/placement`:

    {"replicas": [node names], "leader": name, "epoch": n, "isr": [names],
     "starts": {epoch: the leader's log end when that epoch began}}

(`starts` is the leader-epoch history followers truncate by, see replication.py: the
controller writes epoch 0's, a new leader its own epoch's before it serves.)

so it travels with the metadata watch (every node sees it change in the same order as the
partitions themselves) and goes with its topic's prefix delete. `Placements.apply` follows
these records on every node.

The controller (the node holding `cluster/controller`, node.py) reconciles whenever nodes
come or go or partitions are created or deleted:

* a partition without a record is placed on `replication_factor` distinct live nodes (fewer
  when fewer are live): its leader is the live node leading fewest partitions so far, its
  followers those holding fewest replicas, so leaders and replicas spread evenly;
* a record whose leader is no longer live gets, as leader, an in-sync replica that is live,
  and its epoch goes up; dead nodes leave the in-sync set. When no in-sync replica is live,
  the record stays as it is (no replica that may lack acknowledged messages is made leader)
  until one of its in-sync replicas returns and leads;
* a record for a partition that no longer exists is deleted.

Every write is one etcd transaction comparing both the record as the controller read it and
the controller key as this node holds it: a controller that has lost its lease (paused past
its TTL, cut off from etcd) can write nothing, and two controllers can never both win.
"""

from __future__ import annotations

import asyncio
import logging


from iggy_fast.server.cluster import etcd as e
from iggy_fast.server.metadata.etcd import encode

log = logging.getLogger("iggy_fast.cluster")

SUFFIX = "/placement"


class Placements:
    """Every partition's record, by partition identity, as the metadata watch reports them."""

    def __init__(self):
        self.records: dict[int, dict] = {}
        self.keys: dict[int, str] = {}
        self.changed: list = []          # callables(): a record came, changed or went

    @staticmethod
    def _identity(key: str) -> int | None:
        if not key.endswith(SUFFIX) or not key.startswith("streams/"):
            return None
        parts = key.split("/")
        if len(parts) != 7 or parts[4] != "partitions":
            return None
        return int(parts[5])

    def apply(self, change) -> None:
        touched = False
        for key in change.deletes:
            identity = self._identity(key)
            if identity is not None:
                self.records.pop(identity, None)
                self.keys.pop(identity, None)
                touched = True
        for key, value in change.puts:
            identity = self._identity(key)
            if identity is not None:
                self.records[identity] = value
                self.keys[identity] = key
                touched = True
        if touched:
            for callback in self.changed:
                callback()

    def of(self, partition) -> dict | None:
        return self.records.get(partition.identity)


class Controller:
    def __init__(self, server, node, placements: Placements):
        self.server = server
        self.node = node
        self.placements = placements
        self._pending: asyncio.Task | None = None
        self._again = False

    def poke(self, *_) -> None:
        """Something changed: reconcile soon (once, however many changes came at once)."""
        if not self.node.is_controller:
            return
        if self._pending is not None and not self._pending.done():
            self._again = True
            return
        self._pending = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            self._again = False
            try:
                await self.reconcile()
            except e.EtcdUnavailable as error:
                log.warning("controller: %s; retrying", error)
                await asyncio.sleep(1)
                self._again = True
            except Exception:
                log.exception("controller: reconciling failed; retrying")
                await asyncio.sleep(1)
                self._again = True
            if not self._again or not self.node.is_controller:
                return
            await asyncio.sleep(0.1)    # a refused swap: let the watch bring what refused it

    def _partitions(self):
        state = self.server.state
        for stream in state.streams.values():
            for topic in stream.topics.values():
                yield from topic.partitions.values()

    async def reconcile(self) -> None:
        live = sorted(self.node.nodes)
        if not live or not self.node.is_controller:
            return
        records = self.placements.records
        leading = {n: 0 for n in live}
        holding = {n: 0 for n in live}
        for record in records.values():
            if record.get("leader") in leading:
                leading[record["leader"]] += 1
            for n in record["replicas"]:
                if n in holding:
                    holding[n] += 1
        alive = set()
        for part in list(self._partitions()):
            alive.add(part.identity)
            key = f"{part.path}{SUFFIX}"
            record = records.get(part.identity)
            if record is None:
                wanted = min(self._factor(part.topic), len(live))
                leader = min(live, key=lambda n: (leading[n], holding[n], n))
                followers = sorted((n for n in live if n != leader),
                                   key=lambda n: (holding[n], n))[:wanted - 1]
                new = {"replicas": [leader, *followers], "leader": leader, "epoch": 0,
                       "isr": [leader, *followers], "starts": {"0": 0}}
                leading[leader] += 1
                for n in new["replicas"]:
                    holding[n] += 1
            else:
                new = self._failover(record, live, leading)
            if new != record:
                await self._swap(key, record, new)
        for identity, record in list(records.items()):
            if identity not in alive and self.server.state.by_identity.get(identity) is None:
                await self._swap(self.placements.keys[identity], record, None)

    def _factor(self, topic) -> int:
        return int(topic.settings.get("replication_factor") or self.node.replication_factor)

    @staticmethod
    def _failover(record: dict, live: list[str], leading: dict) -> dict:
        isr = [n for n in record["isr"] if n in live]
        leader = record["leader"]
        if leader in live:
            return {**record, "isr": isr} if isr != record["isr"] else record
        if not isr:     # wait for an in-sync replica to return (the set names who may)
            return record
        new_leader = min(isr, key=lambda n: (leading[n], n))
        leading[new_leader] += 1
        log.info("partition leader %s is gone: %s leads at epoch %d", leader, new_leader,
                 record["epoch"] + 1)
        return {**record, "leader": new_leader, "epoch": record["epoch"] + 1, "isr": isr}

    async def _swap(self, key: str, old: dict | None, new: dict | None) -> bool:
        """Write one record if it is still `old` and this node is still the controller."""
        store = self.server.store
        full = store.prefix + key
        compare = [e.value_is(self.node.root + "controller", self.node.controller_value()),
                   e.absent(full) if old is None else e.value_is(full, encode(old))]
        op = e.delete(full) if new is None else e.put(full, encode(new))
        won, reply = await self.node.etcd.txn(compare, [op])
        if won:
            await store.seen(int(reply["header"]["revision"]))
        else:
            log.info("controller: %s changed under it (or it is no longer the controller)", key)
            self._again = True
        return won
