"""Consumer groups through the official SDK: the group commands, assignment and rebalancing,
fencing, group offsets, restarts, and the high-level consumer reading every message exactly
once while members join and leave under a running producer."""

from __future__ import annotations

import asyncio
import datetime

import pytest
from apache_iggy import (AutoCommit, AutoCommitAfter, IggyClient, Partitioning,
                         PollingStrategy)
from apache_iggy import SendMessage as Message

from conftest import ServerProcess
from iggy_fast._wire import Writer
from iggy_fast.client import BlockingClient
from iggy_fast.protocol.errors import IggyError
from sdk_errors import expect_code


async def connect(address):
    c = IggyClient(address)
    await c.connect()
    await c.login_user("iggy", "iggy")
    return c


def sync_body(stream, topic, group):
    return Writer().identifier(stream).identifier(topic).identifier(group).getvalue()


def sync(reply) -> tuple[int, list[int]]:
    """A SyncConsumerGroup reply: (generation, owned partitions)."""
    count = int.from_bytes(reply[8:12], "little")
    return (int.from_bytes(reply[:8], "little"),
            [int.from_bytes(reply[12 + 4 * i:16 + 4 * i], "little") for i in range(count)])


async def test_group_commands_and_rebalancing(server, client, unique):
    s, t = unique("gs"), "t"
    await client.create_stream(s)
    await client.create_topic(stream=s, name=t, partitions_count=3)
    await client.create_consumer_group(s, t, "g1")
    await client.create_consumer_group(s, t, "g2")
    groups = await client.get_consumer_groups(s, t)
    assert [(g.id, g.name, g.partitions_count, g.members_count) for g in groups] == [
        (0, "g1", 3, 0), (1, "g2", 3, 0)]
    with pytest.raises(RuntimeError, match="already exists"):
        await client.create_consumer_group(s, t, "g1")
    members = [BlockingClient(server.address) for _ in range(2)]
    for m in members:
        m.login()
        m.call(604, sync_body(s, t, "g1"))
        m.call(604, sync_body(s, t, "g1"))               # a second join keeps membership
    g = await client.get_consumer_group(s, t, "g1")
    assert g.members_count == 2
    assert sorted(p for m in g.members for p in m.partitions) == [0, 1, 2]
    assert [m.partitions for m in g.members] == [[0, 2], [1]]
    gen0 = int.from_bytes(members[0].call(606, sync_body(s, t, "g1")).body[:8], "little")
    # A group poll on a partition the member does not own is fenced.
    reply = members[1].poll(s, t, 0, 3, 0, 10, consumer_id="g1", consumer_kind=2)
    assert reply.body[:4] == b"\xff\xff\xff\xff"
    members[1].call(605, sync_body(s, t, "g1"))
    with pytest.raises(IggyError) as e:
        members[1].call(605, sync_body(s, t, "g1"))      # not a member any more
    assert e.value.code == 5006
    assert members[1].call(606, sync_body(s, t, "g1")).body == b""
    body = members[0].call(606, sync_body(s, t, "g1")).body
    assert int.from_bytes(body[:8], "little") > gen0
    assert int.from_bytes(body[8:12], "little") == 3      # the survivor owns everything
    await client.create_partitions(s, t, 1)
    assert int.from_bytes(members[0].call(606, sync_body(s, t, "g1")).body[8:12], "little") == 4
    members[0].close()                                   # disconnect: membership ends
    for _ in range(50):
        if (await client.get_consumer_group(s, t, "g1")).members_count == 0:
            break
        await asyncio.sleep(0.05)
    assert (await client.get_consumer_group(s, t, "g1")).members_count == 0
    await client.delete_consumer_group(s, t, "g1")
    assert await client.get_consumer_group(s, t, "g1") is None
    await client.create_consumer_group(s, t, "g3")
    assert (await client.get_consumer_group(s, t, "g3")).id == 2   # ids are never reused
    members[1].close()


async def test_bad_group_requests_answer_their_codes(server, client, unique):
    s, t = unique("gb"), "t"
    await client.create_stream(s)
    await client.create_topic(stream=s, name=t, partitions_count=1)
    await client.create_consumer_group(s, t, "g")
    other = await connect(server.address)
    for call, code in ((lambda: client.join_consumer_group(s, t, "nope"), 5000),
                       (lambda: client.join_consumer_group(unique("no-stream"), t, "g"), 1009),
                       (lambda: client.join_consumer_group(s, "no-topic", "g"), 2010),
                       (lambda: client.get_consumer_groups(s, "no-topic"), 2010),
                       (lambda: client.get_consumer_groups(unique("no-stream"), t), 1009),
                       (lambda: client.create_consumer_group(s, t, "g"), 5004),
                       (lambda: client.delete_consumer_group(s, t, 99), 5000),
                       (lambda: client.leave_consumer_group(s, t, "g"), 5006)):
        await expect_code(call(), code)
        await other.ping()                               # everyone else is still served
    assert [g.name for g in await client.get_consumer_groups(s, t)] == ["g"]
    assert (await client.get_consumer_group(s, t, "g")).members_count == 0


async def test_join_and_sync_through_the_sdk_and_logout_leaves(server, client, unique):
    """The SDK's own join_consumer_group makes its connection a member (Sync answers it);
    logging out ends the membership: the member drops and the generation goes up."""
    s, t = unique("gj"), "t"
    await client.create_stream(s)
    await client.create_topic(stream=s, name=t, partitions_count=2)
    await client.create_consumer_group(s, t, "g")
    a, b = await connect(server.address), await connect(server.address)
    await a.join_consumer_group(s, t, "g")
    gen_a, parts_a = sync(await a.send_binary_request(606, sync_body(s, t, "g")))
    assert parts_a == [0, 1]
    await b.join_consumer_group(s, t, "g")
    gen_b, parts_b = sync(await b.send_binary_request(606, sync_body(s, t, "g")))
    assert gen_b > gen_a and parts_b == [1]
    assert sync(await a.send_binary_request(606, sync_body(s, t, "g"))) == (gen_b, [0])
    await b.logout_user()
    group = await client.get_consumer_group(s, t, "g")
    assert group.members_count == 1
    gen, parts = sync(await a.send_binary_request(606, sync_body(s, t, "g")))
    assert gen > gen_b and parts == [0, 1]


async def test_group_offsets_are_stored_only_by_the_owning_member(server, client, unique):
    """As Iggy's commit fence: a group offset is stored or deleted only by the member that owns
    that partition; anyone else, member or not, is refused with 20 (what Iggy answers) and the
    offset does not move. Reading it needs no membership. No partition means partition 0."""
    s, t = unique("gf"), "t"
    await client.create_stream(s)
    await client.create_topic(stream=s, name=t, partitions_count=2)
    await client.create_consumer_group(s, t, "g")
    for pid in (0, 1):
        await client.send_messages(s, t, pid, [Message(f"m{i}") for i in range(5)])
    owner0, owner1, outsider = (BlockingClient(server.address) for _ in range(3))
    for c in (owner0, owner1, outsider):
        c.login()
    owner0.call(604, sync_body(s, t, "g"))
    owner1.call(604, sync_body(s, t, "g"))
    assert owner0.call(606, sync_body(s, t, "g")).body[8:] == b"\x01\x00\x00\x00" + bytes(4)

    def target(pid, group="g"):
        w = Writer().u8(2).identifier(group).identifier(s).identifier(t)
        return w.u8(0).u32(0) if pid is None else w.u8(1).u32(pid)

    def stored(pid):
        body = outsider.call(120, target(pid).getvalue()).body
        return int.from_bytes(body[12:20], "little") if body else None

    owner0.call(121, target(0).u64(2).u8(1).getvalue())
    owner1.call(121, target(1).u64(3).u8(1).getvalue())
    for c, pid in ((owner0, 1), (owner1, 0), (owner1, None), (outsider, 0), (outsider, 1),
                   (owner0, 7)):
        with pytest.raises(IggyError) as e:
            c.call(121, target(pid).u64(4).u8(1).getvalue())
        assert e.value.code == 20, (pid,)
        with pytest.raises(IggyError) as e:
            c.call(122, target(pid).u8(1).getvalue())
        assert e.value.code == 20, (pid,)
    assert (stored(0), stored(1)) == (2, 3)                  # nothing moved
    with pytest.raises(IggyError) as e:
        owner0.call(121, target(0, group="nope").u64(1).u8(1).getvalue())
    assert e.value.code == 5000
    owner0.call(121, target(None).u64(4).u8(1).getvalue())  # no partition: partition 0
    assert stored(None) == 4
    owner0.call(122, target(0).u8(1).getvalue())
    assert stored(0) is None and stored(1) == 3
    for c in (owner0, owner1, outsider):
        c.close()
    await client.ping()


async def test_group_offsets_and_heartbeat_timeout(tmp_path):
    srv = ServerProcess(tmp_path / "hb", env={"IGGY_HEARTBEAT_INTERVAL": "1 s"}).start()
    try:
        c = await connect(srv.address)
        await c.create_stream("s")
        await c.create_topic(stream="s", name="t", partitions_count=1)
        await c.create_consumer_group("s", "t", "g")
        await c.send_messages("s", "t", 0, [Message(f"m{i}") for i in range(10)])
        m = BlockingClient(srv.address)
        m.login()
        m.call(604, sync_body("s", "t", "g"))
        got = m.poll_messages("s", "t", 0, 5, 0, 4, auto_commit=True, consumer_id="g",
                              consumer_kind=2)
        assert [x[0] for x in got] == [0, 1, 2, 3]
        alive = BlockingClient(srv.address)              # a member that keeps talking
        alive.login()
        alive.call(604, sync_body("s", "t", "g"))
        before, owned = sync(alive.call(606, sync_body("s", "t", "g")).body)
        assert owned == []                               # m owns the only partition
        for _ in range(10):                              # m sends nothing: it is dropped
            await asyncio.sleep(0.25)
            alive.ping()
        assert (await c.get_consumer_group("s", "t", "g")).members_count == 1
        after, owned = sync(alive.call(606, sync_body("s", "t", "g")).body)
        assert after > before and owned == [0]           # rebalanced to the survivor
        alive.close()
        m.close()
        assert srv.stop() == 0
        srv.start()
        c = await connect(srv.address)
        assert (await c.get_consumer_group("s", "t", "g")).name == "g"
        m = BlockingClient(srv.address)
        m.login()
        m.call(604, sync_body("s", "t", "g"))
        got = m.poll_messages("s", "t", 0, 5, 0, 100, auto_commit=True, consumer_id="g",
                              consumer_kind=2)
        assert [x[0] for x in got] == list(range(4, 10))  # the group offset survived
    finally:
        assert srv.stop() == 0


async def test_high_level_consumers_lose_nothing_while_members_change(server, unique):
    s, t = unique("cg"), "t"
    admin = await connect(server.address)
    await admin.create_stream(s)
    await admin.create_topic(stream=s, name=t, partitions_count=3)
    total = 300
    received: list = []

    async def produce():
        p = await connect(server.address)
        for i in range(0, total, 10):
            await p.send_messages(s, t, Partitioning.balanced(),
                                  [Message(f"msg-{j}") for j in range(i, i + 10)])
            await asyncio.sleep(0.03)

    async def member(stop: asyncio.Event):
        c = await connect(server.address)
        consumer = await c.consumer_group(
            "workers", s, t, polling_strategy=PollingStrategy.Next(), batch_length=10,
            auto_commit=AutoCommit.After(AutoCommitAfter.ConsumingEachMessage()),
            poll_interval=datetime.timedelta(milliseconds=10))

        async def handle(message):
            received.append(message.payload().decode())

        await consumer.consume_messages(handle, stop)
        await c.leave_consumer_group(s, t, "workers")

    stops = [asyncio.Event() for _ in range(3)]
    producer = asyncio.ensure_future(produce())
    tasks = [asyncio.ensure_future(member(stops[0]))]
    await asyncio.sleep(0.4)
    tasks.append(asyncio.ensure_future(member(stops[1])))
    await asyncio.sleep(0.4)
    tasks.append(asyncio.ensure_future(member(stops[2])))
    await asyncio.sleep(0.4)
    stops[0].set()                                       # members leave while sending goes on
    await asyncio.sleep(0.4)
    stops[1].set()
    await producer
    for _ in range(200):                                 # the last member takes over all
        if len(set(received)) == total:
            break
        await asyncio.sleep(0.1)
    stops[2].set()
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert sorted(set(received)) == sorted(f"msg-{j}" for j in range(total)), "lost messages"
    # The official consumer commits each message after handing it over, on its own schedule;
    # a member that leaves (or loses the partition to a newcomer) between handling a message
    # and its commit reaching the server leaves that offset to the next owner, which reads it
    # again: at least once, as with any consumer that commits after processing. Under load
    # this showed as 3-4 repeats of 300; more than the polls in flight at the two leaves and
    # the two joins (batch_length each) would be a server that hands out committed messages.
    assert len(received) - total <= 4 * 10, f"{len(received) - total} messages repeated"


async def test_high_level_consumer_store_and_delete_offset(server, unique):
    s, t = unique("co"), "t"
    c = await connect(server.address)
    await c.create_stream(s)
    await c.create_topic(stream=s, name=t, partitions_count=1)
    await c.send_messages(s, t, 0, [Message(f"m{i}") for i in range(5)])
    consumer = await c.consumer_group("offsets", s, t, polling_strategy=PollingStrategy.Next(),
                                      auto_commit=AutoCommit.Disabled())
    await consumer.store_offset(2, 0)
    raw = BlockingClient(server.address)
    raw.login()
    target = (Writer().u8(2).identifier("offsets").identifier(s).identifier(t).u8(1).u32(0)
              .getvalue())
    reply = raw.call(120, target).body
    assert int.from_bytes(reply[12:20], "little") == 2          # stored for the group
    await consumer.delete_offset(0)
    assert raw.call(120, target).body == b""
    with pytest.raises(RuntimeError):
        await consumer.delete_offset(0)                           # 3021: nothing stored
    raw.close()
