"""Consumer groups shared by a cluster's nodes: etcd and three `iggy-fast server` nodes as real
processes, members connected to different nodes through the official SDK (0.9.0).

What is shown: members on different nodes share one group (every node reports the same
assignment; their partitions are disjoint and cover the topic, and each member's polls read
only its own partitions, wherever their leaders are); a member leaving, or logging out,
gives its partitions to the others; kill -9 of a partition's leader (with a member connected
to it): leadership moves, the dead node's member vanishes with its lease and its partitions
go to the survivors, who resume from the committed group offsets: every message is delivered
once, none again after its commit, none lost. Skipped only without `etcd`.
"""

from __future__ import annotations

import asyncio
import signal
import struct
import time

import pytest
from apache_iggy import Consumer, IggyClient, PollingStrategy
from apache_iggy import SendMessage as Message

from conftest import wait_for
from iggy_fast._wire import Writer
from iggy_fast.server.cluster.dev import EtcdProcess, find_etcd, node
from sdk_errors import expect_code
from test_cluster import live, status

ETCD = find_etcd()
pytestmark = pytest.mark.skipif(ETCD is None, reason="no etcd binary on PATH "
                                "(Debian: apt-get install etcd-server)")
NAME = "groups"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    etcd = EtcdProcess(ETCD).start()
    base = tmp_path_factory.mktemp("cluster-groups")
    nodes = [node(f"node{i}", etcd.endpoint, cluster=NAME, lease_ttl="3 s",
                  data_dir=str(base / f"node{i}")) for i in range(1, 4)]
    try:
        for n in nodes:
            n.start()
        assert wait_for(lambda: len(live(etcd, NAME)) == 3, 20), status(etcd, NAME)
        yield etcd, {n.env["IGGY_CLUSTER_NODE_NAME"]: n for n in nodes}
    finally:
        for n in nodes:
            n.stop()
            assert "Traceback" not in n.log(), n.log()
        etcd.cleanup()


async def connect(srv) -> IggyClient:
    c = IggyClient(srv.address)
    await c.connect()
    await c.login_user("iggy", "iggy")
    return c


def group_body(group: str, stream: str, topic: str) -> bytes:
    """[stream][topic][group]: the body of Join, Leave and Sync (PROTOCOL.md §5.8)."""
    return Writer().identifier(stream).identifier(topic).identifier(group).getvalue()


async def owned(c: IggyClient, stream: str, topic: str, group: str) -> list[int] | None:
    """SyncConsumerGroup (606) on the member's own connection: the partitions it owns (None:
    not a member)."""
    reply = bytes(await c.send_binary_request(606, group_body(group, stream, topic)))
    if not reply:
        return None
    count = struct.unpack_from("<I", reply, 8)[0]
    return sorted(struct.unpack_from(f"<{count}I", reply, 12))


async def commit(c: IggyClient, group: str, stream: str, topic: str, pid: int,
                 offset: int) -> None:
    """StoreConsumerOffset (121) for the group, on the member's own connection."""
    body = (b"\x02" + Writer().identifier(group).identifier(stream).identifier(topic).getvalue()
            + b"\x01" + struct.pack("<IQ", pid, offset))
    await c.send_binary_request(121, body)


async def poll(c: IggyClient, stream: str, topic: str, group: str, count: int = 10,
               auto_commit: bool = False) -> list:
    """One group poll (the SDK picks the partition from its assignment)."""
    return await c.poll_messages(stream=stream, topic=topic, consumer=Consumer.Group(group),
                                 polling_strategy=PollingStrategy.Next(), count=count,
                                 auto_commit=auto_commit)


async def settled(members, stream, topic, group, partitions: int, timeout: float = 10):
    """Every member's own view, once they are disjoint and cover the topic (else the last)."""
    deadline = time.monotonic() + timeout
    while True:
        views = [await owned(m, stream, topic, group) for m in members]
        flat = sorted(p for v in views for p in v or ())
        if flat == list(range(partitions)) or time.monotonic() > deadline:
            return views
        await asyncio.sleep(0.1)


async def test_members_on_different_nodes_share_the_partitions(cluster):
    etcd, nodes = cluster
    admin = await connect(nodes["node1"])
    await admin.create_stream("shared")
    await admin.create_topic(stream="shared", name="t", partitions_count=3)
    await admin.create_consumer_group("shared", "t", "g")
    for pid in range(3):
        await admin.send_messages("shared", "t", pid,
                                  [Message(f"{pid}-{k}".encode()) for k in range(5)])
    a, b = await connect(nodes["node2"]), await connect(nodes["node3"])
    await a.join_consumer_group("shared", "t", "g")
    await b.join_consumer_group("shared", "t", "g")
    views = await settled([a, b], "shared", "t", "g", 3)
    assert sorted(views[0] + views[1]) == [0, 1, 2]          # disjoint, covering the topic
    assert views[0] and views[1]
    # Every node, the members' own and the third, reports the same two members and split.
    for c in (admin, a, b):
        group = await c.get_consumer_group("shared", "t", "g")
        assert group.members_count == 2
        assert sorted(sorted(m.partitions) for m in group.members) == sorted(views)
    # Each member reads its own partitions only, whichever node leads them.
    for member, mine in ((a, views[0]), (b, views[1])):
        got = set()
        for _ in range(3 * len(mine)):
            got |= {m.payload().decode() for m in await poll(member, "shared", "t", "g")}
        assert got == {f"{pid}-{k}" for pid in mine for k in range(5)}


async def test_a_member_leaving_or_logging_out_gives_its_partitions_to_the_others(cluster):
    etcd, nodes = cluster
    admin = await connect(nodes["node1"])
    await admin.create_stream("leaving")
    await admin.create_topic(stream="leaving", name="t", partitions_count=4)
    await admin.create_consumer_group("leaving", "t", "g")
    a, b, c = [await connect(nodes[n]) for n in ("node1", "node2", "node3")]
    for m in (a, b, c):
        await m.join_consumer_group("leaving", "t", "g")
    views = await settled([a, b, c], "leaving", "t", "g", 4)
    assert sorted(p for v in views for p in v) == [0, 1, 2, 3] and all(views)
    await c.leave_consumer_group("leaving", "t", "g")
    views = await settled([a, b], "leaving", "t", "g", 4)
    assert sorted(views[0] + views[1]) == [0, 1, 2, 3] and all(views)
    assert await owned(c, "leaving", "t", "g") is None        # Sync: not a member
    # A logout ends the membership too: the one left owns everything, on every node.
    await b.logout_user()
    views = await settled([a], "leaving", "t", "g", 4, timeout=15)
    assert views == [[0, 1, 2, 3]]
    group = await admin.get_consumer_group("leaving", "t", "g")
    assert group.members_count == 1


async def test_the_sdk_polls_with_auto_commit_on_a_cluster(cluster):
    """SDK 0.9.0 routes auto-committing polls when it sees several nodes (RoutePoll 103,
    BindPollRoute 14, RoutedPoll 104: service/routing.py); it used to fail with
    InvalidCommand on its own side, reading a poll's answer to 103 as a route."""
    etcd, nodes = cluster
    clients = [await connect(nodes[name]) for name in sorted(nodes)]
    await clients[0].create_stream("autocommit")
    await clients[0].create_topic(stream="autocommit", name="t", partitions_count=2)
    sent = sorted(f"{pid}-{k:02}" for pid in range(2) for k in range(12))
    for pid in range(2):
        await clients[0].send_messages("autocommit", "t", pid,
                                       [Message(f"{pid}-{k:02}".encode()) for k in range(12)])
    # A single consumer through every node in turn: each continues where the last committed.
    poll_body = (b"\x01\x01\x04" + struct.pack("<I", 3) + b"\x02\x0aautocommit" + b"\x02\x01t"
                 + b"\x01" + struct.pack("<I", 0) + b"\x05" + struct.pack("<QI", 0, 4) + b"\x01")
    got = []
    for c in clients:
        msgs = await c.poll_messages(stream="autocommit", topic="t", partition_id=0,
                                     consumer=Consumer.Single(3),
                                     polling_strategy=PollingStrategy.Next(), count=4,
                                     auto_commit=True)
        got += [m.payload().decode() for m in msgs]
    assert got == [f"0-{k:02}" for k in range(12)]
    # A group member committing as it polls, then another on another node once it has left:
    # the second starts where the first committed.
    await clients[0].create_consumer_group("autocommit", "t", "g")
    first, second = clients[1], clients[2]
    delivered = []

    async def drain(member, polls: int) -> None:
        for _ in range(polls):
            msgs = await member.poll_messages(stream="autocommit", topic="t",
                                              consumer=Consumer.Group("g"),
                                              polling_strategy=PollingStrategy.Next(),
                                              count=3, auto_commit=True)
            delivered.extend(m.payload().decode() for m in msgs)

    await first.join_consumer_group("autocommit", "t", "g")
    await settled([first], "autocommit", "t", "g", 2)
    await drain(first, 4)
    assert len(delivered) == 12 and len(set(delivered)) == 12
    await first.leave_consumer_group("autocommit", "t", "g")
    await second.join_consumer_group("autocommit", "t", "g")
    await settled([second], "autocommit", "t", "g", 2)
    await drain(second, 8)
    assert sorted(delivered) == sent            # each once: nothing again, nothing lost
    # A route token binds only a connection of the same user to the one it was given to: a
    # token this node did not give is refused (41), one of the wrong size is malformed (3).
    route = bytes(await first.send_binary_request(103, poll_body))
    await first.send_binary_request(14, route[:32])             # its own: accepted
    forged = bytes(8) + route[8:32]
    await expect_code(second.send_binary_request(14, forged), 41)
    await expect_code(second.send_binary_request(14, route[:31]), 3)


async def test_group_offsets_and_members_survive_the_death_of_a_partition_leader(cluster):
    # Last in this module: it leaves one node dead.
    etcd, nodes = cluster
    admin = await connect(nodes["node1"])
    await admin.create_stream("failover")
    await admin.create_topic(stream="failover", name="t", partitions_count=3)
    await admin.create_consumer_group("failover", "t", "g")
    sid = (await admin.get_stream("failover")).id

    def placed():
        ps = {p["partition"]: p for p in status(etcd, NAME)["partitions"]
              if p["stream"] == sid}
        return ps if len(ps) == 3 and all(p.get("leader") for p in ps.values()) else None
    assert wait_for(placed, 10)
    victim = placed()[0]["leader"]
    survivors = sorted(n for n in nodes if n != victim)
    sent = {pid: [f"{pid}-{k}" for k in range(20)] for pid in range(3)}
    for pid in range(3):
        await admin.send_messages("failover", "t", pid, [Message(p.encode()) for p in sent[pid]])

    # One member on each node: the victim's dies with it.
    members = {name: await connect(nodes[name]) for name in sorted(nodes)}
    for m in members.values():
        await m.join_consumer_group("failover", "t", "g")
    views = await settled(list(members.values()), "failover", "t", "g", 3)
    assert sorted(p for v in views for p in v) == [0, 1, 2] and all(views)
    delivered: list[str] = []

    async def consume(m, rounds: int) -> None:
        """Poll, then commit what was polled (StoreConsumerOffset), one batch at a time; the
        first survivor's member commits as it polls (auto-commit) instead."""
        auto = m is members[survivors[0]]
        for _ in range(rounds):
            try:
                msgs = await poll(m, "failover", "t", "g", count=4, auto_commit=auto)
                if msgs and not auto:
                    await commit(m, "g", "failover", "t", msgs[-1].partition_id(),
                                 msgs[-1].offset())
            except RuntimeError:        # leadership moving: try again
                await asyncio.sleep(0.2)
                continue
            delivered.extend(msg.payload().decode() for msg in msgs)

    for m in members.values():
        await consume(m, 2)             # 8 of 20 messages of each member's partition
    assert len(delivered) == 24 and len(set(delivered)) == 24
    await asyncio.sleep(1.5)    # committed offsets reach the followers with their next fetch
    nodes[victim].stop(signal.SIGKILL)

    def moved():
        ps = placed()
        return ps and ps[0]["leader"] != victim and ps
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, wait_for, moved, 15)
    # The victim's member vanished with its node's lease: the survivors share all three.
    live_members = [members[name] for name in survivors]
    views = await settled(live_members, "failover", "t", "g", 3, timeout=20)
    assert sorted(views[0] + views[1]) == [0, 1, 2]
    for pid in range(3):                # more messages, through a surviving node
        more = [f"{pid}-{k}" for k in range(20, 30)]
        await members[survivors[0]].send_messages("failover", "t", pid,
                                                  [Message(p.encode()) for p in more])
        sent[pid] += more
    expected = sorted(p for ps in sent.values() for p in ps)
    deadline = time.monotonic() + 30
    while len(delivered) < len(expected) and time.monotonic() < deadline:
        for m in live_members:
            await consume(m, 1)
    assert sorted(delivered) == expected        # every message once: none again, none lost
