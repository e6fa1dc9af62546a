"""Soak: rounds of kill -9 of a random node under load, on etcd and three node processes.

A topic of 3 partitions with replication factor 2. Two producers send to every partition
(one connection per partition, so a partition between leaders never holds up another's
sends; each connection fails over between all nodes), and a consumer group of two members
(our IggyConsumer) reads, committing after it has handled each batch. Each round kills one
node at random with SIGKILL, waits until every partition accepts sends again, restarts the
node with its name and data directory, waits until every partition accepts sends again and
its in-sync set is whole again (so that the next death, whichever node it is, is one that no
acknowledged message can be lost to), and goes on.

At the end: no acknowledged message is lost, offsets are dense, every partition's two
replicas are byte-identical, every partition accepted sends again within 30 s of each death
and each return, and no message was delivered to the group again after the group had
committed it.

The group's members connect to node1 and node2 (each reconnecting to its node when that one is
killed): a group is shared across nodes, its polls and commits served by each partition's
leader. Its commits are acknowledged only once the in-sync follower has them (replication.py),
without which 20 rounds found messages delivered again after their commit.

    IGGY_SOAK_ROUNDS=20 python -m pytest -q -p no:cacheprovider test_cluster_soak.py

runs the long setting (issue 12 asks for 20 rounds; CI runs 3). Skipped only without `etcd`.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time

import pytest

from cluster_helpers import (ETCD, Producer, connect, read_partition, segments, start_cluster,
                             stop_cluster)
from conftest import wait_for
from iggy_fast.client.consumer import AutoCommit, IggyConsumer
from iggy_fast.protocol.errors import IggyError
from test_cluster import live, status

pytestmark = pytest.mark.skipif(ETCD is None, reason="no etcd binary on PATH "
                                "(Debian: apt-get install etcd-server)")

ROUNDS = int(os.environ.get("IGGY_SOAK_ROUNDS", "3"))
PARTITIONS = 3
BACK_WITHIN = 30.0                      # seconds: every partition takes sends again
MEMBER_NODES = ("node1", "node2")       # where the two group members connect


async def wait(predicate, timeout: float):
    return await asyncio.get_running_loop().run_in_executor(None, wait_for, predicate, timeout)


class Group:
    """The group's two members, consuming until stopped; what they were handed, checked as
    it comes against what the group had committed by then."""

    def __init__(self):
        self.delivered: dict[int, set[int]] = {p: set() for p in range(PARTITIONS)}
        self.payloads: set[bytes] = set()
        self.committed: dict[int, int] = {}         # partition -> highest committed offset
        self.again: list[tuple] = []                # (partition, offset, committed then)
        self.errors: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    def start(self, servers) -> "Group":
        self._tasks = [asyncio.ensure_future(self._member(s, i)) for i, s in enumerate(servers)]
        return self

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _member(self, server, index: int) -> None:
        client = await connect(server, timeout=5)
        while not self._stop.is_set():
            member = IggyConsumer(client, "soak", "t", group="g", auto_commit=AutoCommit.never(),
                                  batch_length=500, sync_interval=0.5, name=f"m{index}")
            try:
                async for batch in member.batches(idle_timeout=0.5):
                    pid = batch.partition_id
                    for message in batch:
                        if message.offset <= self.committed.get(pid, -1):
                            self.again.append((pid, message.offset, self.committed[pid]))
                        self.delivered[pid].add(message.offset)
                        self.payloads.add(bytes(message.payload))
                    await member.commit()       # handled: commit it
                    for p, offset in member.committed.items():
                        self.committed[p] = max(self.committed.get(p, -1), offset)
                    if self._stop.is_set():
                        break
            except Exception as e:          # a node died under it: a new member view
                self.errors.append(f"{type(e).__name__}: {e}")
                await asyncio.sleep(0.2)
        try:
            await member.close()        # commits what was handled, leaves the group
        except (IggyError, ConnectionError, TimeoutError) as e:
            self.errors.append(f"closing: {type(e).__name__}: {e}")
        await client.close()


def accepting_again(producers, since: float) -> dict[int, float | None]:
    """Per partition: seconds from `since` to its first acknowledged send after it."""
    out = {}
    for pid in range(PARTITIONS):
        after = [t for p in producers if p.partition == pid for t in p.acked_at if t > since]
        out[pid] = min(after) - since if after else None
    return out


async def test_rounds_of_kill_9_under_load_lose_nothing(tmp_path):
    etcd, nodes = start_cluster(tmp_path, "soak", 3)
    names = sorted(nodes)
    producers: list[Producer] = []
    group = None
    seed = int(os.environ.get("IGGY_SOAK_SEED", time.time_ns() % 1000))
    rng = random.Random(seed)       # IGGY_SOAK_SEED=<seed> repeats a run's choice of victims
    try:
        admin = await connect(nodes["node1"])
        await admin.create_stream("soak")
        await admin.create_topic("soak", "t", partitions_count=PARTITIONS)

        def whole():
            ps = status(etcd, "soak")["partitions"]
            return len(ps) == PARTITIONS and all(sorted(p["isr"]) == sorted(p["replicas"])
                                                 for p in ps) and ps
        assert await wait(whole, 20)
        for k, order in enumerate((names, names[1:] + names[:1])):
            for pid in range(PARTITIONS):
                client = await connect(*(nodes[n] for n in order), timeout=5)
                producers.append(Producer(client, "soak", "t", pid, f"p{k}.{pid}",
                                          pause=0.01).start())
        group = Group().start([nodes[n] for n in MEMBER_NODES])
        await asyncio.sleep(2)

        slow: list[tuple] = []
        worst = {"death": 0.0, "return": 0.0}      # seconds until every partition took sends
        for round_ in range(ROUNDS):
            victim = rng.choice(names)
            nodes[victim].stop(signal.SIGKILL)
            died = time.monotonic()
            assert await wait(lambda: all(v is not None for v in
                                          accepting_again(producers, died).values()),
                              BACK_WITHIN + 5), (seed, round_, victim, status(etcd, "soak"))
            took = accepting_again(producers, died)
            worst["death"] = max(worst["death"], *took.values())
            slow += [(round_, "death", victim, pid, s) for pid, s in took.items()
                     if s > BACK_WITHIN]
            nodes[victim].start()
            back = time.monotonic()
            assert await wait(lambda: victim in live(etcd, "soak"), 20)
            assert await wait(lambda: all(v is not None for v in
                                          accepting_again(producers, back).values()),
                              BACK_WITHIN + 5), (seed, round_, victim, status(etcd, "soak"))
            took = accepting_again(producers, back)
            worst["return"] = max(worst["return"], *took.values())
            slow += [(round_, "return", victim, pid, s) for pid, s in took.items()
                     if s > BACK_WITHIN]
            assert await wait(whole, 30), (seed, round_, victim, status(etcd, "soak"))
        assert not slow, slow

        for p in producers:
            await p.stop()
        acked = [x for p in producers for x in p.acked]
        assert len(acked) > 1000
        print(f"\n{ROUNDS} rounds (seed {seed}), {len(acked)} messages acknowledged; every "
              f"partition took "
              f"sends again within {worst['death']:.1f} s of a death, {worst['return']:.1f} s "
              f"of a return")

        stored = set()
        logs = {}
        reader = await connect(*(nodes[n] for n in names))
        for pid in range(PARTITIONS):
            logs[pid] = await read_partition(reader, "soak", "t", pid)
            assert [offset for offset, _ in logs[pid]] == list(range(len(logs[pid]))), pid
            stored |= {payload for _, payload in logs[pid]}
        lost = [x for x in acked if x not in stored]
        assert not lost, (len(lost), lost[:5])

        # The group reads everything there is (what the producers' failed sends stored too),
        # and nothing again once committed.
        def read_all():
            return all(group.delivered[pid] >= set(range(len(logs[pid])))
                       for pid in range(PARTITIONS))
        await wait(read_all, 30)
        await group.stop()
        problems = [f"partition {pid}: {len(group.delivered[pid])} of {len(logs[pid])} "
                    f"offsets delivered" for pid in range(PARTITIONS)
                    if group.delivered[pid] != set(range(len(logs[pid])))]
        if group.again:
            problems.append(f"{len(group.again)} deliveries after a commit, e.g. "
                            f"{group.again[:5]} (partition, offset, committed offset)")
        # Every partition's two replicas hold the same bytes (the third node has none).
        def identical():
            copies: dict[str, list[bytes]] = {}
            for n in nodes.values():
                for identity, data in segments(n).items():
                    if data:
                        copies.setdefault(identity, []).append(data)
            return len(copies) == PARTITIONS and all(
                len(c) == 2 and c[0] == c[1] for c in copies.values())
        assert await wait(identical, 30), {n: {k: len(v) for k, v in segments(s).items()}
                                           for n, s in nodes.items()}
        assert not problems, problems
    finally:
        for p in producers:
            if p._task is not None and not p._task.done():
                await p.stop()
        if group is not None and not all(t.done() for t in group._tasks):
            await group.stop()
        stop_cluster(etcd, nodes)
