"""Failover of a partition leader under load, on a cluster of etcd and three node processes.

A producer sends through a node that does not lead the partition (its sends are forwarded)
while the leader is killed with SIGKILL: leadership moves to the in-sync follower, every send
that was acknowledged is still there, offsets stay dense, a consumer's stored offset survives, and the killed node, restarted with
its name and data directory, catches up (truncating whatever it had that the new leader does
not) until its copy is byte-identical to the new leader's. Skipped only without `etcd`.
"""

from __future__ import annotations

import asyncio
import glob
import os
import signal
import time

import pytest
from apache_iggy import Consumer, IggyClient, PollingStrategy
from apache_iggy import SendMessage as Message

from conftest import wait_for
from iggy_fast.client.blocking import BlockingClient
from iggy_fast.protocol.codes import NEXT
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


def segments(srv) -> dict[str, bytes]:
    """Every partition's log on one node, by partition directory identity."""
    out = {}
    for d in glob.glob(os.path.join(srv.data_dir, "streams", "*", "topics", "*", "partitions",
                                    "*")):
        out[os.path.basename(d)] = b"".join(
            open(f, "rb").read() for f in sorted(glob.glob(os.path.join(d, "*.log"))))
    return out


async def test_kill_9_of_the_leader_under_load_loses_no_acknowledged_message(tmp_path):
    etcd = EtcdProcess(ETCD).start()
    nodes = {f"node{i}": node(f"node{i}", etcd.endpoint, cluster="fo", lease_ttl="3 s",
                              data_dir=str(tmp_path / f"node{i}")) for i in range(1, 4)}
    try:
        for n in nodes.values():
            n.start()
        assert wait_for(lambda: len(live(etcd, "fo")) == 3, 20)
        admin = await connect(nodes["node1"])
        await admin.create_stream("fo")
        await admin.create_topic(stream="fo", name="t", partitions_count=1)
        assert wait_for(lambda: status(etcd, "fo")["partitions"], 10)
        record = status(etcd, "fo")["partitions"][0]
        leader, follower = record["leader"], [n for n in record["replicas"]
                                              if n != record["leader"]][0]
        bystander = next(name for name in nodes if name not in record["replicas"])
        producer = await connect(nodes[bystander])      # every send is forwarded

        acked: list[bytes] = []
        failed = 0
        stop = asyncio.Event()

        async def produce():
            nonlocal failed
            i = 0
            while not stop.is_set():
                payloads = [f"m{i}-{k}".encode() for k in range(10)]
                try:
                    await producer.send_messages("fo", "t", 0, [Message(p) for p in payloads])
                    acked.extend(payloads)
                except Exception:
                    failed += 1
                    await asyncio.sleep(0.1)
                i += 1

        task = asyncio.ensure_future(produce())
        await asyncio.sleep(1.5)
        before_kill = len(acked)
        assert before_kill > 100
        # A consumer stores its offset through the bystander (forwarded to the leader). Our
        # raw client: the official one polls with auto-commit by another command (103) once
        # it sees several nodes, which this server does not have.
        consumer = BlockingClient(nodes[bystander].address)
        consumer.login()
        first = consumer.poll_messages("fo", "t", 0, NEXT, 0, 100, auto_commit=True,
                                       consumer_id=7)
        assert [m[0] for m in first] == list(range(100))
        killed_at = time.monotonic()
        nodes[leader].stop(signal.SIGKILL)

        def moved():
            p = status(etcd, "fo")["partitions"][0]
            return p["leader"] == follower and p
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, wait_for, moved, 10)
        assert time.monotonic() - killed_at < 10
        # The stored offset survived the leader: Next continues after it.
        after = consumer.poll_messages("fo", "t", 0, NEXT, 0, 1, consumer_id=7)
        assert [m[0] for m in after] == [100]
        consumer.close()
        # Sends are accepted again through the same node.
        settled = len(acked)
        for _ in range(200):
            if len(acked) > settled + 20:
                break
            await asyncio.sleep(0.05)
        assert len(acked) > settled + 20, (failed, status(etcd, "fo"))

        # The killed node comes back as a follower and catches up.
        nodes[leader].start()
        await asyncio.sleep(1.0)
        stop.set()
        await task

        reader = await connect(nodes[follower])
        msgs = await reader.poll_messages(stream="fo", topic="t", consumer=Consumer.Single(1),
                                          partition_id=0,
                                          polling_strategy=PollingStrategy.First(),
                                          count=1_000_000, auto_commit=False)
        assert [m.offset() for m in msgs] == list(range(len(msgs)))      # dense
        stored = {m.payload() for m in msgs}
        assert not [p for p in acked if p not in stored]                 # nothing lost
        def identical():
            a, b = segments(nodes[follower]), segments(nodes[leader])
            return a and a == b
        assert await loop.run_in_executor(None, wait_for, identical, 15), (
            {k: len(v) for k, v in segments(nodes[follower]).items()},
            {k: len(v) for k, v in segments(nodes[leader]).items()}, status(etcd, "fo"),
            nodes[leader].log()[-3000:], nodes[follower].log()[-3000:])
        final = status(etcd, "fo")["partitions"][0]
        assert await loop.run_in_executor(
            None, wait_for, lambda: sorted(status(etcd, "fo")["partitions"][0]["isr"]) ==
            sorted(final["replicas"]), 15)
    finally:
        for n in nodes.values():
            n.stop()
            assert "Traceback" not in n.log(), n.log()
        etcd.cleanup()


async def test_a_tail_no_new_leader_has_is_truncated_when_the_old_leader_returns(tmp_path):
    """The old leader appended a batch its follower never got (the follower was stopped), and
    was killed before any acknowledgement: the follower leads from its own log end, and the
    old leader, restarted, cuts that batch off and copies the new leader's log instead."""
    etcd = EtcdProcess(ETCD).start()
    nodes = {f"node{i}": node(f"node{i}", etcd.endpoint, cluster="tr", lease_ttl="3 s",
                              data_dir=str(tmp_path / f"node{i}")) for i in range(1, 3)}
    try:
        for n in nodes.values():
            n.start()
        assert wait_for(lambda: len(live(etcd, "tr")) == 2, 20)
        admin = await connect(nodes["node1"])
        await admin.create_stream("tr")
        await admin.create_topic(stream="tr", name="t", partitions_count=1)
        assert wait_for(lambda: status(etcd, "tr")["partitions"], 10)
        record = status(etcd, "tr")["partitions"][0]
        leader = record["leader"]
        follower = next(name for name in nodes if name != leader)
        to_leader = await connect(nodes[leader])
        for i in range(5):
            await to_leader.send_messages("tr", "t", 0, [Message(f"acked-{i}")])

        nodes[follower].proc.send_signal(signal.SIGSTOP)
        # The follower's fetch in flight (a long poll) is answered, empty, into its socket
        # buffer: no fetch can carry the next batch to it.
        await asyncio.sleep(1.0)
        doomed = asyncio.ensure_future(
            to_leader.send_messages("tr", "t", 0, [Message("never-acknowledged")]))
        await asyncio.sleep(0.5)          # appended on the leader, waiting for the follower
        assert not doomed.done()
        # Consumers never see past the high watermark: the batch only the leader has is not
        # served.
        reader = await connect(nodes[leader])
        seen = await reader.poll_messages(stream="tr", topic="t", consumer=Consumer.Single(2),
                                          partition_id=0,
                                          polling_strategy=PollingStrategy.First(), count=100,
                                          auto_commit=False)
        assert [m.payload().decode() for m in seen] == [f"acked-{i}" for i in range(5)]
        nodes[leader].stop(signal.SIGKILL)
        nodes[follower].proc.send_signal(signal.SIGCONT)
        with pytest.raises(Exception):
            await doomed

        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, wait_for, lambda: status(etcd, "tr")[
            "partitions"][0]["leader"] == follower, 10)
        to_new = await connect(nodes[follower])
        for _ in range(100):       # the new leader takes office (records its epoch's start)
            try:
                await to_new.send_messages("tr", "t", 0, [Message("after-failover")])
                break
            except Exception:
                await asyncio.sleep(0.1)

        nodes[leader].start()
        assert await loop.run_in_executor(
            None, wait_for, lambda: "truncated from 6 to 5" in nodes[leader].log(), 15), \
            nodes[leader].log()
        assert await loop.run_in_executor(
            None, wait_for, lambda: segments(nodes[leader]) == segments(nodes[follower]), 15)
        again = await connect(nodes[leader])      # reads are forwarded to the new leader
        msgs = await again.poll_messages(stream="tr", topic="t", consumer=Consumer.Single(1),
                                         partition_id=0,
                                         polling_strategy=PollingStrategy.First(), count=100,
                                         auto_commit=False)
        assert [m.payload().decode() for m in msgs] == [
            *(f"acked-{i}" for i in range(5)), "after-failover"]
        assert [m.offset() for m in msgs] == list(range(6))
    finally:
        for n in nodes.values():
            if n.proc is not None:
                n.proc.send_signal(signal.SIGCONT)
            n.stop()
            assert "Traceback" not in n.log(), n.log()
        etcd.cleanup()


async def test_etcd_stopped_and_restarted_mid_run_loses_nothing(tmp_path):
    """With etcd gone, a partition whose in-sync set need not change goes on acknowledging
    sends and serving reads; when etcd returns, the nodes are still (or again) members and
    metadata changes work again."""
    etcd = EtcdProcess(ETCD).start()
    nodes = [node(f"node{i}", etcd.endpoint, cluster="et", lease_ttl="3 s",
                  data_dir=str(tmp_path / f"node{i}")) for i in range(1, 3)]
    try:
        for n in nodes:
            n.start()
        assert wait_for(lambda: len(live(etcd, "et")) == 2, 20)
        admin = await connect(nodes[0])
        await admin.create_stream("et")
        await admin.create_topic(stream="et", name="t", partitions_count=1)
        assert wait_for(lambda: status(etcd, "et")["partitions"], 10)
        leader = status(etcd, "et")["partitions"][0]["leader"]
        c = await connect(next(n for n in nodes if n.env["IGGY_CLUSTER_NODE_NAME"] == leader))
        for i in range(5):
            await c.send_messages("et", "t", 0, [Message(f"before-{i}")])

        etcd.stop()
        for i in range(5):
            await c.send_messages("et", "t", 0, [Message(f"without-etcd-{i}")])
        await asyncio.sleep(4)              # longer than the nodes' lease TTL
        etcd.start()

        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, wait_for,
                                          lambda: len(live(etcd, "et")) == 2, 20)
        other = await connect(nodes[1])
        for _ in range(100):                # metadata changes work again, on every node
            try:
                await other.create_stream("after")
                break
            except Exception:
                await asyncio.sleep(0.1)
        for _ in range(100):
            if await admin.get_stream("after") is not None:
                break
            await asyncio.sleep(0.05)
        assert await admin.get_stream("after") is not None
        await c.send_messages("et", "t", 0, [Message("after-etcd")])
        for reader in (admin, other):
            msgs = await reader.poll_messages(stream="et", topic="t",
                                              consumer=Consumer.Single(1), partition_id=0,
                                              polling_strategy=PollingStrategy.First(),
                                              count=100, auto_commit=False)
            assert [m.payload().decode() for m in msgs] == [
                *(f"before-{i}" for i in range(5)), *(f"without-etcd-{i}" for i in range(5)),
                "after-etcd"]
    finally:
        for n in nodes:
            n.stop()
            assert "Traceback" not in n.log(), n.log()
        etcd.cleanup()
