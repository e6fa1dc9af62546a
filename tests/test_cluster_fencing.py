"""Fencing: a partition leader paused (SIGSTOP) for longer than its lease, then resumed.

Three nodes, one partition with replication factor 2: leader L, follower F, bystander B.
Producers send through B and F (forwarded to whichever node leads), and one straight to L.
L is stopped for well over its lease TTL: the controller moves leadership to F (the only
in-sync replica left) and the producers through B and F are acknowledged by F meanwhile.
Then L resumes with requests queued in its sockets (the direct producer's, and whatever B or
F forwarded to it before they learnt of the new leader). What must hold (issue 12, "Failover
and fencing"): L acknowledges nothing after losing leadership, so every send any producer saw
acknowledged is in F's log; L steps down when it learns of the new epoch, cuts off whatever
it appended that F never had, rejoins as F's follower, returns to the in-sync set, and ends
with a byte-identical copy; its client's sends are forwarded to F from then on. Skipped only
without `etcd`.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from cluster_helpers import (ETCD, Producer, connect, name_of, read_partition, segments,
                             start_cluster, stop_cluster)
from conftest import wait_for
from test_cluster import status

pytestmark = pytest.mark.skipif(ETCD is None, reason="no etcd binary on PATH "
                                "(Debian: apt-get install etcd-server)")

TTL = 3            # seconds: the nodes' lease
PAUSE = 3 * TTL    # how long the leader is stopped: far past its lease


async def wait(predicate, timeout: float):
    """conftest.wait_for off the event loop (the producers keep running meanwhile)."""
    return await asyncio.get_running_loop().run_in_executor(None, wait_for, predicate, timeout)


async def test_a_paused_leader_acknowledges_nothing_after_losing_leadership(tmp_path):
    etcd, nodes = start_cluster(tmp_path, "fence", 3, lease_ttl=f"{TTL} s")
    producers: list[Producer] = []
    try:
        admin = await connect(nodes["node1"])
        await admin.create_stream("f")
        await admin.create_topic("f", "t", partitions_count=1)
        assert await wait(lambda: status(etcd, "fence")["partitions"], 10)
        before = status(etcd, "fence")["partitions"][0]
        leader, epoch = before["leader"], before["epoch"]
        follower = next(n for n in before["replicas"] if n != leader)
        bystander = next(n for n in nodes if n not in before["replicas"])
        L, F, B = nodes[leader], nodes[follower], nodes[bystander]

        # Through B and F: a request stuck on the paused leader times out (3 s) and the
        # producer goes on, reaching the new leader once its node knows it. Straight to L:
        # the request waits for L to resume (and must not come back acknowledged unless F has
        # it).
        producers = [Producer(await connect(B, timeout=3), "f", "t", 0, "via-b").start(),
                     Producer(await connect(F, timeout=3), "f", "t", 0, "via-f").start(),
                     Producer(await connect(L, timeout=60), "f", "t", 0, "direct").start()]
        await asyncio.sleep(1.5)
        assert all(p.acked for p in producers), [p.failures[-3:] for p in producers]

        L.proc.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()

        def moved():
            p = status(etcd, "fence")["partitions"][0]
            return p["leader"] == follower and p["epoch"] == epoch + 1 and p
        assert await wait(moved, 3 * TTL + 10), status(etcd, "fence")
        # The new leader takes sends while the old one is still stopped.
        new_epoch_at = time.monotonic()
        assert await wait(lambda: producers[0].acks_after(new_epoch_at) > 5
                          and producers[1].acks_after(new_epoch_at) > 5, PAUSE + 10), \
            [p.failures[-3:] for p in producers]
        await asyncio.sleep(max(0.0, PAUSE - (time.monotonic() - stopped_at)))
        direct_before = len(producers[2].acked)
        L.proc.send_signal(signal.SIGCONT)
        resumed_at = time.monotonic()

        # L rejoins as a follower: back in the in-sync set, under the new epoch.
        def rejoined():
            p = status(etcd, "fence")["partitions"][0]
            return p["leader"] == follower and sorted(p["isr"]) == sorted([leader, follower])
        assert await wait(rejoined, 30), (status(etcd, "fence"), L.log()[-3000:])
        # Its client goes on: its sends are forwarded to the new leader.
        assert await wait(lambda: producers[2].acks_after(resumed_at) > 5, 30), \
            producers[2].failures[-5:]
        await asyncio.sleep(1.0)
        for p in producers:
            await p.stop()

        reader = await connect(F)
        log = await read_partition(reader, "f", "t", 0)
        await reader.close()
        assert [offset for offset, _ in log] == list(range(len(log)))        # dense
        stored = {payload for _, payload in log}
        assert len(stored) == len(log)          # no payload twice (no send retried)
        for p in producers:
            lost = [x for x in p.acked if x not in stored]
            assert not lost, (p.name, lost[:5], len(lost))
        assert len(producers[2].acked) > direct_before      # the direct client did go on
        # Nothing L appended after it lost leadership survived unless F has it: its copy is
        # F's, byte for byte (it truncated whatever diverged).
        assert await wait(lambda: segments(L) and segments(L) == segments(F), 20), (
            {k: len(v) for k, v in segments(L).items()},
            {k: len(v) for k, v in segments(F).items()})
        # It follows now: a read through it is forwarded to F and sees F's log.
        via_l = await connect(L)
        through_l = await read_partition(via_l, "f", "t", 0)
        await via_l.close()
        assert through_l[:len(log)] == log
    finally:
        for p in producers:
            if p._task is not None and not p._task.done():
                await p.stop()
        stop_cluster(etcd, nodes)


async def test_an_acknowledged_offset_survives_its_leaders_death_at_once(tmp_path):
    """A stored consumer offset is acknowledged only once the in-sync follower has it: the
    leader killed the moment it acknowledged, the new leader has the offset (and a poll with
    auto-commit, acknowledged likewise, too). (Offsets used to reach the follower with its
    next fetch, up to half a second later when the partition was idle, so one committed just
    before its leader died was lost and the consumer got those messages again.)"""
    etcd, nodes = start_cluster(tmp_path, "offs", 2, lease_ttl=f"{TTL} s")
    try:
        admin = await connect(nodes["node1"])
        await admin.create_stream("o")
        await admin.create_topic("o", "t", partitions_count=1)

        def whole():
            ps = status(etcd, "offs")["partitions"]
            return ps and sorted(ps[0]["isr"]) == ["node1", "node2"]
        assert await wait(whole, 20)
        record = status(etcd, "offs")["partitions"][0]
        leader = nodes[record["leader"]]
        follower = next(n for name, n in nodes.items() if name != record["leader"])
        to_leader = await connect(leader)
        await to_leader.send_messages("o", "t", 0, [f"m{i}".encode() for i in range(50)])
        await asyncio.sleep(1.0)           # idle: the follower's fetch is long-polling
        polled = await to_leader.poll_messages("o", "t", partition_id=0, count=10,
                                               auto_commit=True, consumer=8)
        assert [m.offset for m in polled] == list(range(10))
        await to_leader.store_consumer_offset("o", "t", 41, 0, consumer=7)
        leader.proc.send_signal(signal.SIGKILL)       # at once: no fetch can follow

        assert await wait(lambda: status(etcd, "offs")["partitions"][0]["leader"]
                          == name_of(follower), 15)
        to_new = await connect(follower)
        for _ in range(100):        # the new leader takes office
            try:
                stored = await to_new.get_consumer_offset("o", "t", 0, consumer=7)
                break
            except Exception:
                await asyncio.sleep(0.1)
        assert stored is not None and stored.stored_offset == 41, stored
        assert (await to_new.get_consumer_offset("o", "t", 0, consumer=8)).stored_offset == 9
    finally:
        stop_cluster(etcd, nodes)
