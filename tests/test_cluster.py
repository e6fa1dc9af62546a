"""The replicated cluster on loopback: etcd and three `iggy-fast server` nodes as real processes.

What is shown here: nodes register and GetClusterMetadata lists them with the answering node as
the one to talk to; metadata created through one node is visible through every node, with
dense unique ids under concurrent creates on different nodes; a topic's partitions are placed
on `replication_factor` distinct nodes with leaders spread (read back with `iggy-fast cluster
status`); code 104 (the 0.9.0 SDK's routed auto-committing poll on a cluster) is served
through any node; a killed controller and partition leader are replaced within 10 s (epoch
bumped, the dead node out of the in-sync set) and the node restarted with its name and data
directory rejoins at once; a second live node with the same name, and a data directory of another
cluster, are refused with one line; a node started before etcd says so and comes up once etcd
does. Skipped (with the reason) only when there is no `etcd` binary.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time

import pytest
from apache_iggy import IggyClient
from apache_iggy import SendMessage as Message

from conftest import wait_for
from iggy_fast.client.blocking import BlockingClient
from iggy_fast.server.cluster.dev import EtcdProcess, find_etcd, node

ETCD = find_etcd()
pytestmark = pytest.mark.skipif(ETCD is None, reason="no etcd binary on PATH "
                                "(Debian: apt-get install etcd-server)")
TTL = "3 s"


@pytest.fixture(scope="module")
def etcd():
    process = EtcdProcess(ETCD).start()
    yield process
    process.cleanup()


@pytest.fixture(scope="module")
def cluster(etcd, tmp_path_factory):
    base = tmp_path_factory.mktemp("cluster")
    nodes = [node(f"node{i}", etcd.endpoint, cluster="test", lease_ttl=TTL,
                  data_dir=str(base / f"node{i}")) for i in range(1, 4)]
    for n in nodes:
        n.start()
    assert wait_for(lambda: len(live(etcd, "test")) == 3, 20), status(etcd, "test")
    yield nodes
    for n in nodes:
        n.stop()
        assert "Traceback" not in n.log(), n.log()


def status(etcd, name: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "iggy_fast.cli", "cluster", "status",
                          "--etcd-endpoints", etcd.endpoint, "--name", name, "--json"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def live(etcd, name: str) -> list[str]:
    return sorted(n for n, v in status(etcd, name)["nodes"].items() if v["live"])


def cluster_metadata(address: str) -> tuple[str, list[tuple]]:
    """GetClusterMetadata (code 12) through our raw client, decoded as PROTOCOL.md §5.1.4."""
    with BlockingClient(address) as c:
        c.login()
        body = bytes(c.call(12).body)
    def text(at):
        n = int.from_bytes(body[at:at + 4], "little")
        return body[at + 4:at + 4 + n].decode(), at + 4 + n
    name, at = text(0)
    count = int.from_bytes(body[at:at + 4], "little")
    at += 4
    nodes = []
    for _ in range(count):
        node_name, at = text(at)
        ip, at = text(at)
        tcp = int.from_bytes(body[at:at + 2], "little")
        role, state = body[at + 8], body[at + 9]
        at += 10
        nodes.append((node_name, ip, tcp, role, state))
    return name, nodes


async def connect(srv) -> IggyClient:
    c = IggyClient(srv.address)
    await c.connect()
    await c.login_user("iggy", "iggy")
    return c


def test_every_node_lists_the_cluster_and_names_itself_leader(cluster):
    for n in cluster:
        name, nodes = cluster_metadata(n.address)
        assert name == "test"
        me = n.env["IGGY_CLUSTER_NODE_NAME"]
        # The answering node first and as leader: the official client stays where it dialled.
        assert nodes[0][:4] == (me, "127.0.0.1", n.tcp_port, 0)
        assert sorted(x[0] for x in nodes) == ["node1", "node2", "node3"]
        assert all(x[4] == 0 for x in nodes)                       # all healthy
        assert [x[3] for x in nodes[1:]] == [1, 1]                 # the others followers
        assert {x[2] for x in nodes} == {m.tcp_port for m in cluster}


async def test_metadata_made_on_one_node_is_seen_on_every_node(cluster):
    a = await connect(cluster[0])
    await a.create_stream("everywhere")
    await a.create_topic(stream="everywhere", name="t", partitions_count=2)
    for n in cluster[1:]:
        c = await connect(n)
        # At once: a node that does not know a stream or topic yet catches up with etcd
        # before it answers "not found".
        topic = await c.get_topic("everywhere", "t")
        assert topic.partitions_count == 2 and topic.name == "t"
        await c.send_messages("everywhere", "t", 1, [Message(b"first")])     # raises if not
    await a.delete_stream("everywhere")
    for n in cluster:
        c = await connect(n)
        for _ in range(100):
            if await c.get_stream("everywhere") is None:
                break
            await asyncio.sleep(0.05)
        assert await c.get_stream("everywhere") is None


async def test_concurrent_creates_on_different_nodes_get_dense_unique_ids(cluster):
    clients = [await connect(n) for n in cluster]
    names = [f"race-{i}" for i in range(9)]
    await asyncio.gather(*(clients[i % 3].create_stream(name) for i, name in enumerate(names)))
    views = []
    for c in clients:
        for _ in range(100):
            streams = {s.name: s.id for s in await c.get_streams() if s.name.startswith("race-")}
            if len(streams) == 9:
                break
            await asyncio.sleep(0.05)
        views.append(streams)
    assert views[0] == views[1] == views[2]
    assert sorted(views[0]) == sorted(names)
    ids = sorted(views[0].values())
    assert len(set(ids)) == 9 and ids == list(range(ids[0], ids[0] + 9))
    for name in names:
        await clients[0].delete_stream(name)


async def test_partitions_are_placed_on_distinct_nodes_with_leaders_spread(cluster, etcd):
    c = await connect(cluster[1])
    await c.create_stream("placed")
    await c.create_topic(stream="placed", name="t", partitions_count=3)
    sid = (await c.get_stream("placed")).id

    def placed():
        ps = [p for p in status(etcd, "test")["partitions"] if p["stream"] == sid]
        return ps if len(ps) == 3 else None
    assert wait_for(placed, 10)
    ps = placed()
    assert sorted(p["partition"] for p in ps) == [0, 1, 2]
    for p in ps:
        assert len(p["replicas"]) == 2 == len(set(p["replicas"]))
        assert p["leader"] == p["replicas"][0] and p["isr"] == p["replicas"]
        assert p["epoch"] == 0
    assert sorted(p["leader"] for p in ps) == ["node1", "node2", "node3"]


async def test_sends_through_any_node_reach_the_leader_and_every_replica(cluster, etcd):
    from apache_iggy import Consumer, PollingStrategy
    from apache_iggy import SendMessage as Message
    clients = [await connect(n) for n in cluster]
    await clients[0].create_stream("data")
    await clients[0].create_topic(stream="data", name="t", partitions_count=3)
    sid = (await clients[0].get_stream("data")).id
    # Each node sends to every partition: the ones it does not lead are forwarded.
    for round_ in range(3):
        for i, c in enumerate(clients):
            for pid in range(3):
                r = await c.send_messages("data", "t", pid, [
                    Message(f"{round_}-{i}-{pid}-{k}".encode()) for k in range(10)])
    expected = sorted(f"{r}-{i}-{p}-{k}" for r in range(3) for i in range(3) for p in range(3)
                      for k in range(10))
    for c in clients:           # read back through every node: the same, densely
        got = []
        for pid in range(3):
            msgs = await c.poll_messages(stream="data", topic="t", consumer=Consumer.Single(1),
                                         partition_id=pid,
                                         polling_strategy=PollingStrategy.First(),
                                         count=1000, auto_commit=False)
            assert [m.offset() for m in msgs] == list(range(90))
            got += [m.payload().decode() for m in msgs]
        assert sorted(got) == expected
    # Every replica holds the leader's bytes (acknowledged only once the in-sync set had them).
    placements = [p for p in status(etcd, "test")["partitions"] if p["stream"] == sid]
    by_name = {n.env["IGGY_CLUSTER_NODE_NAME"]: n for n in cluster}
    for p in placements:
        copies = [partition_files(by_name[name], sid, p["partition"]) for name in p["replicas"]]
        assert copies[0] and all(c == copies[0] for c in copies), p


async def test_code_104_polls_with_auto_commit_through_any_node(cluster):
    # Seeing several nodes, SDK 0.9.0 sends auto-committing polls as code 104 (after routing
    # them with 103: test_cluster_groups.py), with PollMessages' body: served as such,
    # forwarded to the leader, the offset stored there.
    import struct
    clients = [await connect(n) for n in cluster]
    await clients[0].create_stream("autocommit")
    await clients[0].create_topic(stream="autocommit", name="t", partitions_count=1)
    await clients[0].send_messages("autocommit", "t", 0,
                                   [Message(f"m{k}".encode()) for k in range(30)])
    # consumer Single(5), stream and topic by name, partition 0, strategy Next, count 10,
    # auto-commit (PROTOCOL.md §5.10).
    body = (b"\x01\x01\x04" + struct.pack("<I", 5) + b"\x02\x0aautocommit" + b"\x02\x01t"
            + b"\x01" + struct.pack("<I", 0) + b"\x05" + struct.pack("<QI", 0, 10) + b"\x01")
    for i, c in enumerate(clients):     # each node in turn continues where the last left
        reply = bytes(await c.send_binary_request(104, body))
        partition, _current, count = struct.unpack_from("<IQI", reply)
        assert partition == 0 and count == 10
        last, after = f"m{10 * i + 9}".encode(), f"m{10 * i + 10}".encode()
        assert last in reply and after not in reply
        assert i == 0 or f"m{10 * i - 1}".encode() not in reply
    reply = bytes(await clients[1].send_binary_request(104, body))
    assert struct.unpack_from("<IQI", reply)[2] == 0    # all 30 committed


def partition_files(srv, sid: int, pid: int) -> bytes:
    """The segment files of partition `pid` of topic 0 of stream `sid` on one node (their
    directories are identities: the one whose record says id == pid)."""
    import glob
    import os
    stream = os.path.join(srv.data_dir, "streams")
    found = []
    for d in sorted(glob.glob(os.path.join(stream, "*", "topics", "*", "partitions", "*"))):
        found.append(d)
    # Identities grow with creation order: stream, topic, then its partitions 0..n-1.
    parts = sorted(found, key=lambda d: int(os.path.basename(d)))[-3:]
    d = parts[pid]
    return b"".join(open(f, "rb").read() for f in sorted(glob.glob(os.path.join(d, "*.log"))))


async def test_kill_9_moves_control_and_leadership_and_the_node_rejoins_at_once(cluster, etcd):
    before = status(etcd, "test")
    victim_name = before["controller"]
    victim = next(n for n in cluster if n.env["IGGY_CLUSTER_NODE_NAME"] == victim_name)
    led = {(p["stream"], p["topic"], p["partition"]): p for p in before["partitions"]
           if p["leader"] == victim_name}
    assert led, before        # the placement test gave every node a partition to lead
    killed_at = time.monotonic()
    victim.stop(signal.SIGKILL)

    def moved():
        now = status(etcd, "test")
        ps = {(p["stream"], p["topic"], p["partition"]): p for p in now["partitions"]}
        return (now["controller"] not in (None, victim_name)
                and all(ps[k]["leader"] != victim_name for k in led)) and now
    assert wait_for(moved, 10), status(etcd, "test")
    elapsed = time.monotonic() - killed_at
    assert elapsed < 10
    after = moved()
    assert not after["nodes"][victim_name]["live"]
    for key, old in led.items():
        new = next(p for p in after["partitions"]
                   if (p["stream"], p["topic"], p["partition"]) == key)
        assert new["epoch"] == old["epoch"] + 1
        assert new["leader"] in old["isr"] and victim_name not in new["isr"]
    survivor = next(n for n in cluster if n is not victim)
    _, nodes = cluster_metadata(survivor.address)
    assert dict((x[0], x[4]) for x in nodes)[victim_name] == 3      # unreachable

    # Restarted with its name and data directory: it is the same node and takes its place.
    victim.start()
    assert wait_for(lambda: victim_name in live(etcd, "test"), 10)
    _, nodes = cluster_metadata(victim.address)
    assert nodes[0][0] == victim_name and all(x[4] == 0 for x in nodes)


def test_a_node_restarted_at_once_replaces_its_live_registration(etcd, tmp_path):
    """Killed and restarted while its old lease is still live (30 s: far longer than a
    restart takes, even on a loaded machine; the module's 3 s lease is not, so a slow
    restart there may find the lease already gone): it does not wait for that lease."""
    n = node("again", etcd.endpoint, cluster="rejoin", lease_ttl="30 s",
             data_dir=str(tmp_path / "again"))
    try:
        n.start()
        assert wait_for(lambda: "again" in live(etcd, "rejoin"), 10)
        n.stop(signal.SIGKILL)
        restarted_at = time.monotonic()
        n.start()
        assert wait_for(lambda: "again" in live(etcd, "rejoin"), 10)
        assert time.monotonic() - restarted_at < 10
        assert "replaced the registration of this node's previous run" in n.log()
        _, nodes = cluster_metadata(n.address)
        assert [(x[0], x[4]) for x in nodes] == [("again", 0)]
    finally:
        n.stop()
        n.cleanup()


def test_a_replication_peer_speaking_garbage_is_refused_with_one_line(cluster):
    import socket
    n = cluster[2]
    host, port = n.env["IGGY_CLUSTER_REPLICATION_ADDRESS"].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(100) == b""           # closed, nothing answered
    assert wait_for(lambda: "replication peer" in n.log(), 5)
    lines = [line for line in n.log().splitlines() if "replication peer" in line]
    assert len(lines) == 1 and "refused: it sent a frame of" in lines[0], lines
    # The node goes on serving its clients and its peers.
    name, nodes = cluster_metadata(n.address)
    assert len(nodes) == 3


def test_same_name_other_data_directory_is_refused(cluster, etcd, tmp_path):
    twin = node("node2", etcd.endpoint, cluster="test", lease_ttl=TTL,
                data_dir=str(tmp_path / "twin"))
    with pytest.raises(RuntimeError) as failed:
        twin.start()
    lines = [line for line in twin.log().splitlines() if "iggy-fast:" in line]
    assert "exited with 2" in str(failed.value)
    assert lines == ["iggy-fast: node name 'node2' is live in cluster 'test' with another "
                     "data directory"], twin.log()


def test_a_taken_replication_address_is_refused_with_one_line(cluster, etcd, tmp_path):
    taken = cluster[0].env["IGGY_CLUSTER_REPLICATION_ADDRESS"]      # node1 listens there
    late = node("node8", etcd.endpoint, cluster="test", lease_ttl=TTL,
                data_dir=str(tmp_path / "late"),
                env={"IGGY_CLUSTER_REPLICATION_ADDRESS": taken})
    with pytest.raises(RuntimeError) as failed:
        late.start()
    assert "exited with" in str(failed.value)
    assert "Traceback" not in late.log(), late.log()
    assert f"iggy-fast: replication cannot listen on {taken}: address already in use" \
        in late.log(), late.log()
    late.cleanup()


def test_another_clusters_data_directory_is_refused(cluster, etcd):
    stranger = node("node9", etcd.endpoint, cluster="other", lease_ttl=TTL,
                    data_dir=cluster[0].data_dir)
    with pytest.raises(RuntimeError):
        stranger.start()
    assert (f"iggy-fast: data directory {cluster[0].data_dir} belongs to cluster 'test', "
            f"not 'other'") in stranger.log()


def test_a_node_started_before_etcd_waits_for_it(tmp_path):
    etcd = EtcdProcess(ETCD)
    n = node("early", etcd.endpoint, cluster="late", lease_ttl=TTL,
             data_dir=str(tmp_path / "early"))
    try:
        with pytest.raises(RuntimeError, match="did not listen"):
            n.start(timeout=3)          # no client is served before the metadata is loaded
        assert "etcd unreachable at" in n.log() and "retrying" in n.log()
        etcd.start()
        assert wait_for(lambda: "etcd reached" in n.log(), 15), n.log()
        assert wait_for(lambda: live(etcd, "late") == ["early"], 15)
    finally:
        n.stop()
        etcd.cleanup()
