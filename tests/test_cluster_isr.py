"""The per-topic replication options on a cluster of etcd and two node processes.

`min_in_sync_replicas`: while a partition has fewer in-sync replicas than its topic asks
for, a send is refused with transient_not_accepted (code 58) and nothing is appended; sends
are accepted again once the dead follower is back in sync. The leader's GET /cluster/status
shows the same (a single node has no such route: test_http's 404s cover unknown paths). A
topic without it keeps accepting. `replication_factor` places partitions on that many nodes; options that could
never be met are refused at creation. Skipped only without `etcd`.
"""

from __future__ import annotations

import base64
import os
import signal
import struct

import aiohttp
import pytest
from apache_iggy import IggyClient
from apache_iggy import SendMessage as Message

from conftest import wait_for
from iggy_fast.server.cluster.dev import EtcdProcess, find_etcd, node
from test_cluster import live, status
from test_metrics_http import base, bearer, jwt

ETCD = find_etcd()
pytestmark = pytest.mark.skipif(ETCD is None, reason="no etcd binary on PATH "
                                "(Debian: apt-get install etcd-server)")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def connect(srv) -> IggyClient:
    c = IggyClient(srv.address)
    await c.connect()
    await c.login_user("iggy", "iggy")
    return c


def placement(etcd, topic_id: int) -> dict:
    return next(p for p in status(etcd, "isr")["partitions"] if p["topic"] == topic_id)


async def test_sends_below_min_in_sync_replicas_are_refused_until_the_follower_returns(tmp_path):
    etcd = EtcdProcess(ETCD).start()
    nodes = {f"node{i}": node(f"node{i}", etcd.endpoint, cluster="isr", lease_ttl="3 s",
                              data_dir=str(tmp_path / f"node{i}")) for i in (1, 2)}
    try:
        for n in nodes.values():
            n.start()
        assert wait_for(lambda: len(live(etcd, "isr")) == 2, 20)
        admin = await connect(nodes["node1"])
        await admin.create_stream("s")
        with pytest.raises(Exception):      # 3 in-sync replicas of 2: never met
            await admin.create_topic(stream="s", name="never", partitions_count=1,
                                     options={"min_in_sync_replicas": "3"})
        with pytest.raises(Exception):
            await admin.create_topic(stream="s", name="zero", partitions_count=1,
                                     options={"replication_factor": "0"})
        await admin.create_topic(stream="s", name="strict", partitions_count=1,
                                 options={"min_in_sync_replicas": "2"})
        await admin.create_topic(stream="s", name="loose", partitions_count=1)
        await admin.create_topic(stream="s", name="single", partitions_count=1,
                                 options={"replication_factor": "1"})
        topics = {t.name: t for t in await admin.get_topics("s")}
        strict, loose = topics["strict"].id, topics["loose"].id
        assert wait_for(lambda: len(status(etcd, "isr")["partitions"]) == 3
                        and len(placement(etcd, strict)["isr"]) == 2
                        and len(placement(etcd, loose)["isr"]) == 2, 20)
        assert len(placement(etcd, topics["single"].id)["replicas"]) == 1
        record = placement(etcd, strict)
        leader = record["leader"]
        follower = next(n for n in record["replicas"] if n != leader)
        producer = await connect(nodes[leader])
        await producer.send_messages("s", "strict", 0, [Message(b"before")])

        # Over HTTP too the follower forwards to the leader (test_cluster_forwarding.py).
        send = {"partitioning": {"kind": "partition_id", "value": b64(struct.pack("<I", 0))},
                "messages": [{"payload": b64(b"over http")}]}
        loose_leader = placement(etcd, loose)["leader"]
        loose_follower = next(n for n in nodes if n != loose_leader)
        async with aiohttp.ClientSession() as session:
            for offset, name in enumerate((loose_follower, loose_leader)):
                headers = bearer(await jwt(session, nodes[name]))
                async with session.post(base(nodes[name]) + "/streams/s/topics/loose/messages",
                                        json=send, headers=headers) as r:
                    assert r.status == 201, (name, await r.text())
                    assert (await r.json())["confirmations"][0]["base_offset"] == offset

        os.kill(nodes[follower].proc.pid, signal.SIGKILL)
        nodes[follower].proc.wait()
        assert wait_for(lambda: placement(etcd, strict)["isr"] == [leader], 30)
        with pytest.raises(Exception) as refused:
            await producer.send_messages("s", "strict", 0, [Message(b"refused")])
        assert "58" in str(refused.value) or "ransient" in str(refused.value), refused.value
        assert "min_in_sync_replicas is 2" in nodes[leader].log()
        await producer.send_messages("s", "loose", 0, [Message(b"accepted")])

        async with aiohttp.ClientSession() as session:
            url = base(nodes[leader]) + "/cluster/status"
            async with session.get(url) as r:
                assert r.status == 401
            async with session.get(url, headers=bearer(await jwt(session, nodes[leader]))) as r:
                assert r.status == 200, await r.text()
                doc = await r.json()
        assert doc["node"] == leader and doc["cluster"] == "isr"
        assert doc["nodes"][follower]["live"] is False and doc["nodes"][leader]["live"]
        row = next(p for p in doc["partitions"] if p["topic"] == strict)
        assert row["isr"] == [leader] and row["end"] == 1 and row["high_watermark"] == 1
        got = await producer.get_topic("s", "strict")
        assert got.messages_count == 1                  # the refused send appended nothing

        nodes[follower].start()
        assert wait_for(lambda: len(placement(etcd, strict)["isr"]) == 2, 30)
        await producer.send_messages("s", "strict", 0, [Message(b"after")])
        assert (await producer.get_topic("s", "strict")).messages_count == 2
    finally:
        for n in nodes.values():
            n.stop()
        etcd.cleanup()
    for n in nodes.values():
        assert "Traceback" not in n.log(), n.log()
