"""Moving replicas between nodes: `iggy-fast cluster rebalance` onto a node that joined, and
the replacement of replicas whose node is gone for good (issue 12, placement).

On etcd and node processes on loopback: a two-node cluster with a topic of 4 partitions at
replication factor 2 gets a third node; `cluster rebalance`, run while a producer sends,
spreads replicas and leaderships over the three (read back with `cluster status`), sends go
on being acknowledged throughout, every acknowledged message reads back through every node
with dense offsets, every replica's log is byte-identical to its leader's, and a dropped
replica's copy is deleted; a move onto a node that dies midway is cancelled; partitions
placed on fewer nodes than their factor (fewer were live) get the rest. A node killed
for good has its replicas replaced on the others once `replica_replace_after` has passed (and
not before), and deletes its stale copies if it comes back after all. Skipped only without
`etcd`.
"""

from __future__ import annotations

import asyncio
import glob
import os
import signal
import subprocess
import sys
import time

import pytest
from apache_iggy import Consumer, IggyClient, PollingStrategy
from apache_iggy import SendMessage as Message

from conftest import wait_for
from iggy_fast.server.cluster.dev import EtcdProcess, find_etcd, node
from test_cluster import live, status

ETCD = find_etcd()
pytestmark = pytest.mark.skipif(ETCD is None, reason="no etcd binary on PATH "
                                "(Debian: apt-get install etcd-server)")


async def connect(srv) -> IggyClient:
    c = IggyClient(srv.address)
    await c.connect()
    await c.login_user("iggy", "iggy")
    return c


def logs(srv) -> dict[int, bytes]:
    """Each partition's log on one node, by partition id (the only topic's partitions, whose
    directories are named by identity in the order of their ids)."""
    dirs = sorted(glob.glob(os.path.join(srv.data_dir, "streams", "*", "topics", "*",
                                         "partitions", "*")),
                  key=lambda d: int(os.path.basename(d)))
    return {pid: b"".join(open(f, "rb").read() for f in sorted(glob.glob(f"{d}/*.log")))
            for pid, d in enumerate(dirs)}


async def read_all(client: IggyClient, stream: str, partition: int) -> list:
    """Every message of a partition, page by page, through one node."""
    out, offset = [], 0
    while True:
        page = await client.poll_messages(stream=stream, topic="t", consumer=Consumer.Single(1),
                                          partition_id=partition,
                                          polling_strategy=PollingStrategy.Offset(offset),
                                          count=1000, auto_commit=False)
        if not page:
            return out
        out.extend(page)
        offset = page[-1].offset() + 1


def placed(etcd, cluster: str, partitions: int) -> bool:
    """Every partition placed, settled (in-sync set = replicas, no move under way)."""
    parts = status(etcd, cluster)["partitions"]
    return len(parts) == partitions and all(
        sorted(p["isr"]) == sorted(p["replicas"]) and "target" not in p for p in parts)


def spread(st: dict) -> tuple[dict, dict]:
    replicas = {n: 0 for n, v in st["nodes"].items() if v["live"]}
    leaders = dict(replicas)
    for p in st["partitions"]:
        leaders[p["leader"]] += 1
        for n in p["replicas"]:
            replicas[n] += 1
    return replicas, leaders


class Producer:
    """Sends batches of 10 to the partitions in turn through one node, each batch retried
    until acknowledged; notes what was acknowledged and when."""

    def __init__(self, client: IggyClient, stream: str, partitions: int, size: int = 0):
        self.client, self.stream, self.partitions = client, stream, partitions
        self.size = size        # each payload padded to this many bytes
        self.acked: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
        self.times: list[float] = []
        self.failed = 0
        self.errors: list[str] = []
        self._stop = asyncio.Event()
        self._task = None

    def start(self) -> "Producer":
        self._task = asyncio.ensure_future(self._run())
        return self

    async def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            pid = i % self.partitions
            payloads = [f"{self.stream}-{i}-{k}".encode().ljust(self.size, b".")
                        for k in range(10)]
            while True:
                try:
                    await self.client.send_messages(self.stream, "t", pid,
                                                    [Message(p) for p in payloads])
                    break
                except Exception as e:      # refused during a leadership move: again
                    self.failed += 1
                    self.errors.append(str(e))
                    await asyncio.sleep(0.1)
            self.acked[pid].extend(payloads)
            self.times.append(time.monotonic())
            i += 1
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self._stop.set()
        await self._task

    def count(self) -> int:
        return sum(len(v) for v in self.acked.values())

    def longest_gap(self, start: float, end: float) -> float:
        """The longest time without an acknowledgement between `start` and `end`."""
        marks = [start, *(t for t in self.times if start <= t <= end), end]
        return max(b - a for a, b in zip(marks, marks[1:]))


async def check_every_replica(nodes: dict, etcd, cluster: str, producer: Producer) -> None:
    """Every acknowledged message reads back through every live node, offsets dense; every
    replica's log is byte-identical to its leader's; a non-replica holds no copy."""
    loop = asyncio.get_running_loop()
    st = status(etcd, cluster)
    for name, srv in nodes.items():
        if not st["nodes"][name]["live"]:
            continue
        reader = await connect(srv)
        for pid in range(producer.partitions):
            msgs = await read_all(reader, cluster, pid)
            assert [m.offset() for m in msgs] == list(range(len(msgs)))
            stored = {m.payload() for m in msgs}
            lost = [p for p in producer.acked[pid] if p not in stored]
            assert not lost, (name, pid, len(lost), producer.errors[-5:])

    def identical():
        copies = {name: logs(srv) for name, srv in nodes.items() if st["nodes"][name]["live"]}
        for p in st["partitions"]:
            pid = p["partition"]
            leader = copies[p["leader"]][pid]
            if not leader or any(copies[r][pid] != leader for r in p["replicas"]):
                return False
            if any(copies[n][pid] for n in copies if n not in p["replicas"]):
                return False
        return True
    assert await loop.run_in_executor(None, wait_for, identical, 20), (
        st, {name: {pid: len(data) for pid, data in logs(srv).items()}
             for name, srv in nodes.items()})


def rebalance(etcd, cluster: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "iggy_fast.cli", "cluster", "rebalance",
                           "--etcd-endpoints", etcd.endpoint, "--name", cluster,
                           "--timeout", "120"], capture_output=True, text=True, timeout=180)


async def test_rebalance_spreads_replicas_and_leaders_onto_a_node_that_joined(tmp_path):
    etcd = EtcdProcess(ETCD).start()
    nodes = {f"node{i}": node(f"node{i}", etcd.endpoint, cluster="rb", lease_ttl="3 s",
                              data_dir=str(tmp_path / f"node{i}")) for i in range(1, 4)}
    loop = asyncio.get_running_loop()
    producer = None
    try:
        nodes["node1"].start()
        nodes["node2"].start()
        assert wait_for(lambda: len(live(etcd, "rb")) == 2, 20)
        admin = await connect(nodes["node1"])
        await admin.create_stream("rb")
        await admin.create_topic(stream="rb", name="t", partitions_count=4)
        assert await loop.run_in_executor(None, wait_for, lambda: placed(etcd, "rb", 4), 20)
        assert all(sorted(p["replicas"]) == ["node1", "node2"]
                   for p in status(etcd, "rb")["partitions"])

        # 1000-byte messages: the new replicas have megabytes to copy while sends go on.
        producer = Producer(await connect(nodes["node1"]), "rb", 4, size=1000).start()
        await asyncio.sleep(2.0)
        assert producer.count() > 100               # sent before the move
        nodes["node3"].start()
        assert await loop.run_in_executor(None, wait_for,
                                          lambda: len(live(etcd, "rb")) == 3, 20)
        # A node that joins takes no replica of an existing partition by itself.
        assert all("node3" not in p["replicas"] for p in status(etcd, "rb")["partitions"])

        was = {p["partition"]: p for p in status(etcd, "rb")["partitions"]}
        began, before = time.monotonic(), producer.count()
        out = await loop.run_in_executor(None, rebalance, etcd, "rb")
        ended = time.monotonic()
        assert out.returncode == 0, (out.stdout, out.stderr, nodes["node1"].log()[-3000:])
        assert "rebalanced" in out.stdout
        await asyncio.sleep(1.0)                    # sends go on after the move, too
        await producer.stop()

        # Sends were acknowledged during the move, never more than a few seconds apart.
        assert producer.count() > before
        assert producer.longest_gap(began, ended) < 8, producer.errors[-5:]
        st = status(etcd, "rb")
        assert placed(etcd, "rb", 4), st
        assert all(len(p["replicas"]) == 2 for p in st["partitions"])
        replicas, leaders = spread(st)
        assert sorted(replicas.values()) == [2, 3, 3], st          # 8 replicas over 3
        assert sorted(leaders.values()) == [1, 1, 2], st           # 4 leaderships over 3
        for p in st["partitions"]:      # a leadership moved bumps the epoch; none else does
            old = was[p["partition"]]
            assert p["epoch"] == old["epoch"] + (p["leader"] != old["leader"]), (old, p)
        assert "node3" in out.stdout

        await check_every_replica(nodes, etcd, "rb", producer)
        # A second rebalance finds nothing to move.
        again = await loop.run_in_executor(None, rebalance, etcd, "rb")
        assert again.returncode == 0 and "0 partition(s) to move" in again.stdout, again.stdout
        assert status(etcd, "rb")["partitions"] == st["partitions"]
    finally:
        if producer is not None and producer._task is not None and not producer._task.done():
            await producer.stop()
        for n in nodes.values():
            n.stop()
            assert "Traceback" not in n.log(), n.log()
        etcd.cleanup()


async def test_a_node_gone_for_good_has_its_replicas_replaced_after_replica_replace_after(
        tmp_path):
    etcd = EtcdProcess(ETCD).start()
    after = 8       # seconds; the checks below allow 3 s for a slow `cluster status`
    nodes = {f"node{i}": node(f"node{i}", etcd.endpoint, cluster="rp", lease_ttl="3 s",
                              data_dir=str(tmp_path / f"node{i}"),
                              env={"IGGY_CLUSTER_REPLICA_REPLACE_AFTER": f"{after} s"})
             for i in range(1, 4)}
    loop = asyncio.get_running_loop()
    try:
        for n in nodes.values():
            n.start()
        assert wait_for(lambda: len(live(etcd, "rp")) == 3, 20)
        admin = await connect(nodes["node1"])
        await admin.create_stream("rp")
        await admin.create_topic(stream="rp", name="t", partitions_count=3)
        assert await loop.run_in_executor(None, wait_for, lambda: placed(etcd, "rp", 3), 20)
        producer = Producer(await connect(nodes["node1"]), "rp", 3).start()
        await asyncio.sleep(1.5)
        await producer.stop()
        assert producer.count() > 30

        # The victim: a node that is not the one the producer and checks go through.
        victim = "node3"
        held = [p["partition"] for p in status(etcd, "rp")["partitions"]
                if victim in p["replicas"]]
        assert held
        nodes[victim].stop(signal.SIGKILL)
        assert await loop.run_in_executor(None, wait_for,
                                          lambda: victim not in live(etcd, "rp"), 15)
        seen_gone = time.monotonic()
        # Not replaced yet: it has been gone less than replica_replace_after.
        st = status(etcd, "rp")
        assert time.monotonic() - seen_gone < after - 3 and all(
            victim in p["replicas"] for p in st["partitions"] if p["partition"] in held), st

        def replaced():
            st = status(etcd, "rp")
            return all(victim not in p["replicas"] and len(p["replicas"]) == 2
                       for p in st["partitions"]) and placed(etcd, "rp", 3)
        assert await loop.run_in_executor(None, wait_for, replaced, 30), (
            status(etcd, "rp"), nodes["node1"].log()[-3000:], nodes["node2"].log()[-3000:])
        assert time.monotonic() - seen_gone >= after - 3
        st = status(etcd, "rp")
        assert all(sorted(p["replicas"]) == ["node1", "node2"] for p in st["partitions"])

        # Sends work on every partition, and everything reads back from both replicas.
        for pid in range(3):
            await producer.client.send_messages("rp", "t", pid, [Message(f"after-{pid}")])
            producer.acked[pid].append(f"after-{pid}".encode())
        await check_every_replica({n: nodes[n] for n in ("node1", "node2")}, etcd, "rp",
                                  producer)
        # The node, back after all, replicates nothing now: it deletes its stale copies.
        assert any(logs(nodes[victim]).values())
        nodes[victim].start()
        assert await loop.run_in_executor(None, wait_for,
                                          lambda: victim in live(etcd, "rp"), 20)
        assert await loop.run_in_executor(
            None, wait_for, lambda: not any(logs(nodes[victim]).values()), 15)
        assert all(victim not in p["replicas"] for p in status(etcd, "rp")["partitions"])
    finally:
        for n in nodes.values():
            n.stop()
            assert "Traceback" not in n.log(), n.log()
        etcd.cleanup()


async def test_a_move_onto_a_node_that_dies_midway_is_cancelled_and_loses_nothing(tmp_path):
    """The joining node is paused (SIGSTOP) before it can copy anything: the moves onto it
    wait, its lease expires, the controller cancels them (the surplus replica leaves, the
    partitions keep their old replicas, all in sync) and the rebalance ends."""
    etcd = EtcdProcess(ETCD).start()
    # node3's lease is long enough that it is still live (though paused) when the
    # rebalance, a process of its own, plans moves onto it, even on a loaded machine.
    nodes = {f"node{i}": node(f"node{i}", etcd.endpoint, cluster="cx",
                              lease_ttl="10 s" if i == 3 else "3 s",
                              data_dir=str(tmp_path / f"node{i}")) for i in range(1, 4)}
    loop = asyncio.get_running_loop()
    producer = None
    try:
        nodes["node1"].start()
        nodes["node2"].start()
        assert wait_for(lambda: len(live(etcd, "cx")) == 2, 20)
        admin = await connect(nodes["node1"])
        await admin.create_stream("cx")
        await admin.create_topic(stream="cx", name="t", partitions_count=4)
        assert await loop.run_in_executor(None, wait_for, lambda: placed(etcd, "cx", 4), 20)
        before = {p["partition"]: sorted(p["replicas"])
                  for p in status(etcd, "cx")["partitions"]}
        producer = Producer(await connect(nodes["node2"]), "cx", 4).start()
        nodes["node3"].start()
        assert await loop.run_in_executor(None, wait_for,
                                          lambda: len(live(etcd, "cx")) == 3, 20)
        nodes["node3"].proc.send_signal(signal.SIGSTOP)

        out = await loop.run_in_executor(None, rebalance, etcd, "cx")
        assert out.returncode == 0, (out.stdout, out.stderr)
        await producer.stop()
        log = nodes["node1"].log() + nodes["node2"].log()
        assert "new replica(s) node3" in log and "cancelled" in log, log[-3000:]
        assert placed(etcd, "cx", 4)
        assert {p["partition"]: sorted(p["replicas"])
                for p in status(etcd, "cx")["partitions"]} == before
        await check_every_replica({n: nodes[n] for n in ("node1", "node2")}, etcd, "cx",
                                  producer)
    finally:
        if producer is not None and producer._task is not None and not producer._task.done():
            await producer.stop()
        for n in nodes.values():
            if n.proc is not None:
                n.proc.send_signal(signal.SIGCONT)
            n.stop()
            assert "Traceback" not in n.log(), n.log()
        etcd.cleanup()


async def test_rebalance_gives_partitions_placed_short_their_missing_replicas(tmp_path):
    """A topic made while only one node was live has one replica per partition; once a second
    node joins, the rebalance brings each partition up to its replication factor."""
    etcd = EtcdProcess(ETCD).start()
    nodes = {f"node{i}": node(f"node{i}", etcd.endpoint, cluster="sh", lease_ttl="3 s",
                              data_dir=str(tmp_path / f"node{i}")) for i in range(1, 3)}
    loop = asyncio.get_running_loop()
    try:
        nodes["node1"].start()
        assert wait_for(lambda: len(live(etcd, "sh")) == 1, 20)
        admin = await connect(nodes["node1"])
        await admin.create_stream("sh")
        await admin.create_topic(stream="sh", name="t", partitions_count=2)
        assert await loop.run_in_executor(None, wait_for, lambda: placed(etcd, "sh", 2), 20)
        assert all(p["replicas"] == ["node1"] for p in status(etcd, "sh")["partitions"])
        producer = Producer(admin, "sh", 2).start()
        await asyncio.sleep(1.0)
        await producer.stop()
        nodes["node2"].start()
        assert await loop.run_in_executor(None, wait_for,
                                          lambda: len(live(etcd, "sh")) == 2, 20)

        out = await loop.run_in_executor(None, rebalance, etcd, "sh")
        assert out.returncode == 0 and "2 partition(s) to move" in out.stdout, out.stdout
        st = status(etcd, "sh")
        assert placed(etcd, "sh", 2), st
        assert all(sorted(p["replicas"]) == ["node1", "node2"] for p in st["partitions"]), st
        assert sorted(spread(st)[1].values()) == [1, 1], st
        await check_every_replica(nodes, etcd, "sh", producer)
    finally:
        for n in nodes.values():
            n.stop()
            assert "Traceback" not in n.log(), n.log()
        etcd.cleanup()
