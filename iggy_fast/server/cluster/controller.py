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
come or go, partitions are created or deleted, or a record changes:

* a partition without a record is placed on `replication_factor` distinct live nodes (fewer
  when fewer are live): its leader is the live node leading fewest partitions so far, its
  followers those holding fewest replicas, so leaders and replicas spread evenly;
* a record whose leader is no longer live gets, as leader, an in-sync replica that is live,
  and its epoch goes up; dead nodes leave the in-sync set. When no in-sync replica is live,
  the record stays as it is (no replica that may lack acknowledged messages is made leader)
  until one of its in-sync replicas returns and leads;
* a record with a `target` ({"replicas", "leader"}: where the partition is moving) takes the
  next step of its move, below;
* a record for a partition that no longer exists is deleted.

Moves. A record gets a `target` from `iggy-fast cluster rebalance`, from the replacement of a
replica whose node has been gone longer than `replica_replace_after`, or (a cancelled move's
leftovers) from having more replicas than its factor. Each step is one write:

1. the target's new nodes join `replicas` (not the in-sync set): each starts fetching the
   whole log from the leader (from the leader's log start, when retention has deleted its
   early segments), and the leader adds it to the in-sync set once it has caught up, log and
   consumer offsets (replication.py), as it does for a follower that returns;
2. once every target node is in the in-sync set, `replicas` becomes the target, the others
   leave `replicas` and the in-sync set, and, when the target names another leader, the
   leadership moves to it (an in-sync replica) with the epoch bumped, all in one write.

Nothing acknowledged is lost: replicas leave only when every node staying has caught up, and
leadership goes only to an in-sync replica. A dropped replica stops fetching and deletes its
copy (replication.py). A move whose target names a node that is no longer live is cancelled
(the target goes; the surplus replicas then get trimmed by a new target that keeps the live,
in-sync ones), so a node dying in mid-move never leaves a move waiting for it.

Rebalancing. `iggy-fast cluster rebalance` puts `cluster/rebalance` = {"id", "state":
"requested"} in etcd: a request in etcd rather than an HTTP call, so it needs only the etcd
endpoints (as `cluster status`), survives a change of controller (the next one finds it), and
only the controller ever changes replica sets. The controller plans a target for every
partition (`plan`: fewest moves that leave every live node within one replica, and within one
leadership where the replica sets allow, of every other; a replica on a node that is not live
goes to a live one, and a partition placed on fewer nodes than its factor, when fewer were
live, gets the rest), writes the targets, sets the request to "moving", and to "done" once no
record has a target left. A partition whose leader is not live is left as it is.

Replacing dead replicas. The controller notes when it first saw each node gone (its own clock:
a new controller starts counting afresh, which only ever delays a replacement). A replica on a
node gone for `replica_replace_after` (0 s or "never": never) is replaced by the live node
without a replica of that partition holding fewest replicas, by the same move; a partition
whose leader is not live waits (a new replica has no one to copy from).

Every write is one etcd transaction comparing both the record as the controller read it and
the controller key as this node holds it: a controller that has lost its lease (paused past
its TTL, cut off from etcd) can write nothing, and two controllers can never both win.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson

from iggy_fast.config import NEVER, parse_duration_us
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
        after = parse_duration_us(server.cfg["cluster"]["replica_replace_after"])
        self.replace_after = None if after in (0, NEVER) else after / 1e6
        self._gone: dict[str, float] = {}       # node -> when this controller saw it gone
        self._timer: asyncio.TimerHandle | None = None
        self._pending: asyncio.Task | None = None
        self._again = False
        placements.changed.append(self.poke)    # a move goes on as its records change

    def poke(self, *_) -> None:
        """Something changed: reconcile soon (once, however many changes came at once)."""
        if not self.node.is_controller:
            self._gone.clear()      # a later term counts afresh
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
        self._note_gone(live)
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
                new = self._move(part, new, set(live), holding)
            if new != record:
                await self._swap(key, record, new)
        for identity, record in list(records.items()):
            if identity not in alive and self.server.state.by_identity.get(identity) is None:
                await self._swap(self.placements.keys[identity], record, None)
        await self._rebalance(live)
        self._wake_for_replacements(set(live))

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

    # -- moves ---------------------------------------------------------------------------

    def _move(self, part, record: dict, live: set, holding: dict) -> dict:
        """The record after the next step of its move (the record itself when none is due)."""
        target = record.get("target")
        if target is not None and not set(target["replicas"]) <= live:
            log.info("partition %s: moving to %s cancelled (a node of it is gone)", part.key,
                     ",".join(target["replicas"]))
            record, target = _without_target(record), None
        if target is None:
            target = self._trim(record, self._factor(part.topic), live) \
                or self._replacement(part, record, live, holding)
            if target is None:
                return record
            record = {**record, "target": target}
        if record["leader"] not in live:
            return record       # a move needs a live leader to copy from
        adding = [n for n in target["replicas"] if n not in record["replicas"]]
        if adding:
            log.info("partition %s: new replica(s) %s (moving to %s)", part.key,
                     ",".join(adding), ",".join(target["replicas"]))
            return {**record, "replicas": [*record["replicas"], *adding]}
        if not set(target["replicas"]) <= set(record["isr"]):
            return record       # the new replicas are still catching up
        done = {**_without_target(record), "replicas": list(target["replicas"]),
                "isr": [n for n in target["replicas"] if n in record["isr"]]}
        if target["leader"] != record["leader"]:
            done["leader"], done["epoch"] = target["leader"], record["epoch"] + 1
        log.info("partition %s: now on %s, led by %s at epoch %d", part.key,
                 ",".join(done["replicas"]), done["leader"], done["epoch"])
        return done

    @staticmethod
    def _trim(record: dict, factor: int, live: set) -> dict | None:
        """A target of the record's best `factor` replicas when it has more (a cancelled
        move's leftovers): the leader, then live, in-sync ones."""
        replicas = record["replicas"]
        if len(replicas) <= factor:
            return None
        keep = sorted(replicas, key=lambda n: (n != record["leader"], n not in live,
                                               n not in record["isr"], replicas.index(n)))
        return {"replicas": keep[:factor], "leader": record["leader"]}

    def _note_gone(self, live: list[str]) -> None:
        now = time.monotonic()
        for name in {*self.node.known, *(n for r in self.placements.records.values()
                                         for n in r["replicas"])}:
            if name in live:
                self._gone.pop(name, None)
            else:
                self._gone.setdefault(name, now)

    def _replacement(self, part, record: dict, live: set, holding: dict) -> dict | None:
        """A target replacing the replicas whose node has been gone `replica_replace_after`
        by live nodes that hold no replica of the partition (fewest replicas first)."""
        if self.replace_after is None or record["leader"] not in live:
            return None
        now = time.monotonic()
        dead = [n for n in record["replicas"]
                if n not in live and now - self._gone.get(n, now) >= self.replace_after]
        spare = sorted((n for n in live if n not in record["replicas"]),
                       key=lambda n: (holding[n], n))
        swaps = dict(zip(dead, spare))
        if not swaps:
            return None
        for gone, new in swaps.items():
            holding[new] += 1
            log.info("partition %s: node %s gone for over %.0f s, its replica moves to %s",
                     part.key, gone, self.replace_after, new)
        return {"replicas": [swaps.get(n, n) for n in record["replicas"]],
                "leader": record["leader"]}

    def _wake_for_replacements(self, live: set) -> None:
        """Reconcile again when the next gone replica is due for replacement."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.replace_after is None:
            return
        now = time.monotonic()
        # Only what is still to come: one already due that found no spare node waits for a
        # change (a node joining) rather than for a timer.
        due = [self._gone[n] + self.replace_after for r in self.placements.records.values()
               for n in r["replicas"] if n not in live and n in self._gone
               and self._gone[n] + self.replace_after > now]
        if due:
            self._timer = asyncio.get_running_loop().call_later(min(due) - now + 0.05,
                                                                self.poke)

    # -- rebalancing ---------------------------------------------------------------------

    async def _rebalance(self, live: list[str]) -> None:
        """Serve `cluster/rebalance`: plan and start the moves, then say when they are done."""
        request = self.node.rebalance
        if not request or request.get("state") not in ("requested", "moving"):
            return
        records = self.placements.records
        if request["state"] == "requested":
            plan = self.plan(live)
            for identity, target in plan.items():
                record = records.get(identity)
                if record is None or not await self._swap(self.placements.keys[identity],
                                                          record, {**record,
                                                                   "target": target}):
                    return      # reconciled again with the newer record
            log.info("rebalance %s: %d partition(s) to move over %s", request.get("id"),
                     len(plan), ",".join(live))
            state = {**request, "state": "moving", "partitions": len(plan)}
        elif any("target" in r for r in records.values()):
            return
        else:
            log.info("rebalance %s: done", request.get("id"))
            state = {**request, "state": "done"}
        await self._swap_request(request, state)

    def plan(self, live: list[str]) -> dict[int, dict]:
        """A target for each partition whose replicas or leader should change so that every
        live node holds an even share of the replicas and of the leaderships (within one),
        moving as few replicas as it can: a partition keeps its live replicas unless a node
        holds more than its share, and gives up those it does not lead first."""
        records = self.placements.records
        parts = []      # (identity, record, wanted), partitions whose leader is live
        for part in self._partitions():
            record = records.get(part.identity)
            if record is not None and record["leader"] in live:
                parts.append((part.identity, record,
                              min(self._factor(part.topic), len(live))))
        load = {n: 0 for n in live}
        assign: dict[int, list[str]] = {}
        for identity, record, wanted in parts:
            now = record.get("target", record)      # a move under way: where it goes
            keep = sorted((n for n in now["replicas"] if n in load),
                          key=lambda n: (n != now["leader"], n not in record["isr"],
                                         now["replicas"].index(n)))[:wanted]
            assign[identity] = keep
            for n in keep:
                load[n] += 1
        for identity, record, wanted in parts:       # fill up: dead or missing replicas
            while len(assign[identity]) < wanted:
                n = min((n for n in live if n not in assign[identity]),
                        key=lambda n: (load[n], n))
                assign[identity].append(n)
                load[n] += 1
        leader_of = {identity: record.get("target", record)["leader"]
                     for identity, record, _ in parts}
        while True:     # a replica from the fullest node to the emptiest, until even
            most = max(live, key=lambda n: (load[n], n))
            least = min(live, key=lambda n: (load[n], n))
            if load[most] - load[least] <= 1:
                break
            identity = min((i for i in assign if most in assign[i] and least not in assign[i]),
                           key=lambda i: (leader_of[i] == most, i))
            assign[identity][assign[identity].index(most)] = least
            load[most] -= 1
            load[least] += 1
        leads = {n: 0 for n in live}
        for identity in assign:
            if leader_of[identity] not in assign[identity]:
                leader_of[identity] = min(assign[identity], key=lambda n: (leads[n], n))
            leads[leader_of[identity]] += 1
        while True:     # a leadership from the node with most to one with fewest, until even
            moved = False
            for most in sorted(live, key=lambda n: (-leads[n], n)):
                for least in sorted(live, key=lambda n: (leads[n], n)):
                    if leads[most] - leads[least] <= 1:
                        break
                    movable = [i for i in assign
                               if leader_of[i] == most and least in assign[i]]
                    if movable:
                        leader_of[min(movable)] = least
                        leads[most] -= 1
                        leads[least] += 1
                        moved = True
                        break
                if moved:
                    break
            if not moved:
                break
        plan = {}
        for identity, record, _ in parts:
            leader = leader_of[identity]
            replicas = [leader, *(n for n in assign[identity] if n != leader)]
            now = record.get("target", record)
            if set(replicas) != set(now["replicas"]) or leader != now["leader"]:
                plan[identity] = {"replicas": replicas, "leader": leader}
        return plan

    async def _swap_request(self, old: dict, new: dict) -> bool:
        key = self.node.root + "rebalance"
        compare = [e.value_is(self.node.root + "controller", self.node.controller_value()),
                   e.value_is(key, orjson.dumps(old))]
        won, _ = await self.node.etcd.txn(compare, [e.put(key, orjson.dumps(new))])
        if not won:
            self._again = True
        return won

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


def _without_target(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "target"}
