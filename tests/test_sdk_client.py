"""Our SDK's IggyClient against the real server over TCP: every command's typed method, the
typed results, the server's errors as IggyError subclasses, the PolledMessages view, and the
blocking SyncIggyClient with the same methods. (Connection handling, TLS, failover, timeouts
and the client-side errors: test_sdk_connection.py. Request bytes: test_sdk_golden.py.)"""

from __future__ import annotations

import asyncio
import datetime
import inspect
import time

import pytest

from iggy_fast import (Consumer, IggyClient, Partitioning, PollingStrategy, SendMessage,
                       SyncIggyClient, _wire)
from iggy_fast.client.blocking import BlockingClient
from iggy_fast.protocol import errors
from iggy_fast.protocol.models import (U64_MAX, ConsumerGroupRef, GlobalPermissions,
                                       Permissions, StreamPermissions, TopicPermissions)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def client(server):
    async with IggyClient(f"iggy://iggy:iggy@{server.address}") as c:
        yield c


async def test_login_from_connection_string(client):
    assert client.identity.user_id == 0
    assert client.identity.session > 0
    assert client.connected
    me = await client.get_me()
    assert me.user_id == 0 and me.transport == "TCP"


async def test_streams(client, unique):
    name = unique("s")
    created = await client.create_stream(name)
    assert created.name == name and created.topics == [] and created.topics_count == 0
    got = await client.get_stream(name)
    assert got.id == created.id
    assert (await client.get_stream(created.id)).name == name
    assert (await client.get_stream(str(created.id))).name == name     # digits = numeric id
    assert name in [s.name for s in await client.get_streams()]
    await client.update_stream(name, name + "-x")
    assert await client.get_stream(name) is None
    await client.purge_stream(name + "-x")
    with pytest.raises(errors.StreamNameAlreadyExists) as info:
        await client.create_stream(name + "-x")
    assert info.value.code == 1012 and info.value.name == "stream_name_already_exists"
    await client.delete_stream(name + "-x")
    assert await client.get_stream(name + "-x") is None
    with pytest.raises(errors.StreamIdNotFound):
        await client.delete_stream(name + "-x")


async def test_topics_partitions_segments(client, unique):
    stream = unique("s")
    await client.create_stream(stream)
    topic = await client.create_topic(stream, "t", partitions_count=3,
                                      compression_algorithm="gzip",
                                      message_expiry=datetime.timedelta(days=7),
                                      max_topic_size=200 * 1024 * 1024,
                                      segment_size=100 * 1024 * 1024)
    assert topic.partitions_count == 3 and [p.id for p in topic.partitions] == [0, 1, 2]
    assert topic.message_expiry == 7 * 86400 * 10 ** 6
    assert topic.compression_algorithm == 2
    assert topic.max_topic_size == 200 * 1024 * 1024
    assert int.from_bytes(topic.option("segment_size"), "little") == 100 * 1024 * 1024
    assert topic.option("durability") == b"replicated"          # derived by the server
    (listed,) = await client.get_topics(stream)
    assert listed.name == "t" and listed.partitions_count == 3
    await client.update_topic(stream, "t", "t2", message_expiry=U64_MAX)
    details = await client.get_topic(stream, "t2")
    assert details.message_expiry == U64_MAX and details.compression_algorithm == 2
    assert await client.get_topic(stream, "t") is None
    await client.create_partitions(stream, "t2", 2)
    assert (await client.get_topic(stream, "t2")).partitions_count == 5
    await client.delete_partitions(stream, "t2", 4)
    assert [p.id for p in (await client.get_topic(stream, "t2")).partitions] == [0]
    await client.send_messages(stream, "t2", 0, [b"a", b"b"])
    await client.delete_segments(stream, "t2", 0, 1)
    await client.purge_topic(stream, "t2")
    assert (await client.get_topic(stream, "t2")).messages_count == 0
    await client.delete_topic(stream, "t2")
    assert await client.get_topics(stream) == []
    with pytest.raises(errors.TopicIdNotFound):
        await client.delete_topic(stream, "t2")


async def test_send_partitioning(client, unique):
    stream = unique("s")
    await client.create_stream(stream)
    await client.create_topic(stream, "t", partitions_count=4)
    explicit = await client.send_messages(stream, "t", Partitioning.partition_id(2), [b"x"])
    assert explicit.partition_id == 2 and explicit.base_offset == 0 and explicit.count == 1
    assert (await client.send_messages(stream, "t", 2, [b"y", b"z"])).offsets == range(1, 3)
    balanced = {(await client.send_messages(stream, "t", None, [b"b"])).partition_id
                for _ in range(4)}
    assert balanced == {0, 1, 2, 3}
    for key in ("user-1", b"user-2", 12345):
        sent = await client.send_messages(stream, "t", Partitioning.messages_key(key), [b"k"])
        raw = key.encode() if isinstance(key, str) else key if isinstance(key, bytes) \
            else key.to_bytes(8, "little")
        assert sent.partition_id == _wire.partition_for_key(raw, 4)


async def test_poll_strategies_and_view(client, unique):
    stream = unique("s")
    await client.create_stream(stream)
    await client.create_topic(stream, "t", partitions_count=1)
    before = time.time_ns() // 1000
    await client.send_messages(stream, "t", 0, [f"m{i}" for i in range(5)])
    await asyncio.sleep(0.01)
    middle = time.time_ns() // 1000
    await client.send_messages(stream, "t", 0, [
        SendMessage(b"with-headers", {"k": "v", "n": 7, "b": True}, id=42),
        memoryview(b"view"), bytearray(b"array")])

    async def poll(strategy, count=100, **kw):
        return await client.poll_messages(stream, "t", partition_id=0,
                                          polling_strategy=strategy, count=count, **kw)

    everything = await poll(PollingStrategy.First())
    assert everything.count == len(everything) == 8 and everything.current_offset == 7
    assert list(everything.offsets) == list(range(8))
    assert [m.payload for m in everything] == [b"m0", b"m1", b"m2", b"m3", b"m4",
                                                b"with-headers", b"view", b"array"]
    tagged = everything[5]
    assert tagged.id == 42 and tagged.offset == 5
    assert tagged.headers == {b"b": b"\x01", b"k": b"v", b"n": (7).to_bytes(8, "little")}
    assert everything[-1].payload == b"array" and bytes(everything.payload(0)) == b"m0"
    assert everything[0].origin_timestamp >= before and everything[0].id != 0
    assert everything.first_offset == 0 and everything.last_offset == 7
    with pytest.raises(IndexError):
        everything[8]
    assert [t[4] for t in everything.tuples()] == [m.payload for m in everything]
    assert list((await poll(PollingStrategy.Offset(6))).offsets) == [6, 7]
    assert list((await poll(PollingStrategy.Last(), count=2)).offsets) == [6, 7]
    assert list((await poll(PollingStrategy.Timestamp(middle))).offsets) == [5, 6, 7]
    # Next with auto-commit walks forward for this consumer only.
    me = Consumer.single(unique("c"))
    first = await poll(PollingStrategy.Next(), count=3, auto_commit=True, consumer=me)
    second = await poll(PollingStrategy.Next(), count=3, auto_commit=True, consumer=me)
    assert list(first.offsets) == [0, 1, 2] and list(second.offsets) == [3, 4, 5]
    assert (await client.get_consumer_offset(stream, "t", 0, consumer=me)).stored_offset == 5
    empty = await poll(PollingStrategy.Offset(100))
    assert not empty and empty.count == 0 and list(empty.offsets) == [] and not empty.fenced


async def test_consumer_offsets(client, unique):
    stream = unique("s")
    await client.create_stream(stream)
    await client.create_topic(stream, "t", partitions_count=2)
    await client.send_messages(stream, "t", 1, [b"a", b"b", b"c"])
    assert await client.get_consumer_offset(stream, "t", 1, consumer=7) is None
    await client.store_consumer_offset(stream, "t", 1, partition_id=1, consumer=7)
    offset = await client.get_consumer_offset(stream, "t", 1, consumer=7)
    assert (offset.partition_id, offset.current_offset, offset.stored_offset) == (1, 2, 1)
    with pytest.raises(errors.IggyError) as info:
        await client.store_consumer_offset(stream, "t", 9, partition_id=1, consumer=7)
    assert info.value.code == 4100                      # beyond the partition's last offset
    await client.delete_consumer_offset(stream, "t", 1, consumer=7)
    assert await client.get_consumer_offset(stream, "t", 1, consumer=7) is None
    with pytest.raises(errors.ConsumerOffsetNotFound):
        await client.delete_consumer_offset(stream, "t", 1, consumer=7)


async def test_consumer_groups(client, server, unique):
    stream = unique("s")
    await client.create_stream(stream)
    await client.create_topic(stream, "t", partitions_count=2)
    await client.send_messages(stream, "t", 1, [b"g0", b"g1"])
    group = await client.create_consumer_group(stream, "t", "g")
    assert group.name == "g" and group.partitions_count == 2 and group.members == []
    assert [g.name for g in await client.get_consumer_groups(stream, "t")] == ["g"]
    assert await client.sync_consumer_group(stream, "t", "g") is None      # not a member
    await client.join_consumer_group(stream, "t", "g")
    assignment = await client.sync_consumer_group(stream, "t", "g")
    assert sorted(assignment.partitions) == [0, 1]
    details = await client.get_consumer_group(stream, "t", group.id)
    assert details.members_count == 1 and details.members[0].partitions_count == 2
    topic = await client.get_topic(stream, "t")
    me = await client.get_me()
    stream_id = (await client.get_stream(stream)).id
    assert ConsumerGroupRef(stream_id, topic.id, group.id) in me.consumer_groups
    polled = await client.poll_messages(stream, "t", partition_id=1,
                                        consumer=Consumer.Group("g"), count=10,
                                        polling_strategy=PollingStrategy.Next(),
                                        auto_commit=True)
    assert [m.payload for m in polled] == [b"g0", b"g1"]
    await client.leave_consumer_group(stream, "t", "g")
    with pytest.raises(errors.ConsumerGroupMemberNotFound):
        await client.leave_consumer_group(stream, "t", "g")
    await client.delete_consumer_group(stream, "t", "g")
    assert await client.get_consumer_group(stream, "t", "g") is None


async def test_users_and_permissions(client, server, unique):
    name = unique("u")[:20]
    perms = Permissions(GlobalPermissions(read_streams=True),
                        {0: StreamPermissions(read_stream=True,
                                              topics={1: TopicPermissions(poll_messages=True)})})
    user = await client.create_user(name, "secret123", permissions=perms)
    assert user.username == name and user.status == 1 and user.permissions == perms
    assert (await client.get_user(name)).permissions == perms
    assert name in [u.username for u in await client.get_users()]
    await client.update_permissions(name, None)
    assert (await client.get_user(user.id)).permissions is None
    await client.update_user(name, status=2)
    assert (await client.get_user(name)).status == 2
    await client.update_user(name, username=name + "x", status=1)
    await client.change_password(name + "x", "secret123", "secret456")
    with pytest.raises(errors.InvalidCredentials):
        await client.change_password(name + "x", "wrong-one", "secret789")
    async with IggyClient(f"iggy://{name}x:secret456@{server.address}") as other:
        assert other.identity.user_id == user.id
        with pytest.raises(errors.Unauthorized):
            await other.create_stream(unique("s"))
        await other.logout_user()
        assert other.identity is None
        with pytest.raises(errors.Unauthenticated):
            await other.get_streams()
    await client.delete_user(name + "x")
    assert await client.get_user(name + "x") is None


async def test_personal_access_tokens(client, server, unique):
    name = unique("pat")[:20]
    raw = await client.create_personal_access_token(name, datetime.timedelta(hours=1))
    listed = {t.name: t for t in await client.get_personal_access_tokens()}
    assert listed[name].expiry_at > time.time_ns() // 1000
    async with IggyClient(f"iggy://{raw.token}@{server.address}") as by_token:
        assert by_token.identity.user_id == 0
        await by_token.get_streams()
    other = IggyClient(server.address)                  # no credentials: log in by hand
    await other.connect()
    try:
        assert (await other.login_with_personal_access_token(raw.token)).user_id == 0
    finally:
        await other.close()
    await client.delete_personal_access_token(name)
    with pytest.raises(errors.InvalidPersonalAccessToken) as info:
        async with IggyClient(f"iggy://{raw.token}@{server.address}"):
            pass
    assert "access token" in str(info.value) and "expired" in str(info.value)


async def test_system_commands(client, unique):
    await client.ping()
    stats = await client.get_stats()
    assert stats.server_version == "0.11.0" and stats.clients_count >= 1
    cluster = await client.get_cluster_metadata()
    assert cluster.nodes[0].role == 0 and cluster.nodes[0].tcp_port > 0
    options = {o.key: o for o in await client.describe_options("topic")}
    assert options["compression_algorithm"].default == b"none"
    assert await client.describe_options("user") == []
    with pytest.raises(ValueError):
        await client.describe_options("galaxy")
    me = await client.get_me()
    assert (await client.get_client(me.client_id)).address == me.address
    assert await client.get_client(2 ** 32 - 1) is None
    assert me.client_id in [c.client_id for c in await client.get_clients()]
    with pytest.raises(errors.FeatureUnavailable):
        await client.get_snapshot()
    stream = unique("s")
    await client.create_stream(stream)
    await client.create_topic(stream, "t")
    await client.flush_unsaved_buffer(stream, "t", 0, fsync=True)
    assert await client.send_binary_request(1) == b""


async def test_concurrent_requests_share_one_connection(client, unique):
    stream = unique("s")
    await client.create_stream(stream)
    await client.create_topic(stream, "t", partitions_count=1)
    sent = await asyncio.gather(*(client.send_messages(stream, "t", 0, [b"%d" % i])
                                  for i in range(50)))
    assert sorted(s.base_offset for s in sent) == list(range(50))
    assert (await client.get_topic(stream, "t")).messages_count == 50


async def test_identifier_validation(client):
    with pytest.raises(ValueError):
        await client.get_stream("")
    with pytest.raises(ValueError):
        await client.get_stream(2 ** 32)
    with pytest.raises(TypeError):
        await client.get_stream(1.5)


def test_sync_client_has_every_method():
    public = {n for n, f in vars(IggyClient).items()
              if not n.startswith("_") and inspect.iscoroutinefunction(f)}
    assert public <= set(dir(SyncIggyClient))
    assert inspect.signature(SyncIggyClient.poll_messages) == \
        inspect.signature(IggyClient.poll_messages)


def test_sync_client_round_trip(server, unique):
    stream = unique("s")
    with SyncIggyClient(f"iggy://iggy:iggy@{server.address}") as c:
        assert c.connected and c.identity.user_id == 0
        c.create_stream(stream)
        c.create_topic(stream, "t", partitions_count=2)
        sent = c.send_messages(stream, "t", 1, [b"a", b"b"])
        assert sent.partition_id == 1 and sent.offsets == range(0, 2)
        polled = c.poll_messages(stream, "t", partition_id=1,
                                 polling_strategy=PollingStrategy.First(), count=10)
        assert [m.payload for m in polled] == [b"a", b"b"]
        with pytest.raises(errors.StreamIdNotFound):
            c.delete_stream(stream + "-missing")
        c.delete_stream(stream)
    assert not c.connected
    c.close()                                           # closing twice is harmless


def test_raw_blocking_client_still_works(server):
    """The bench tool's BlockingClient API is unchanged."""
    with BlockingClient(server.address) as b:
        assert b.login() == 0
        b.ping()
        assert b.call(201).body is not None


def test_readme_example_runs(server, unique):
    """The README's client example, run as written against a live server (its address and
    stream name swapped for this test's)."""
    import pathlib
    import re
    import subprocess
    import sys
    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Our Python client", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    stream = unique("orders")
    code = code.replace("127.0.0.1:8090", server.address).replace('"orders"', repr(stream))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["0 b'hello'", "1 b'hi'"]


async def test_send_batch_as_pieces(client, unique):
    """A batch given as several buffers goes out as they are and lands as one batch."""
    from iggy_fast.client.types import build_batch
    stream = unique("s")
    await client.create_stream(stream)
    await client.create_topic(stream, "t")
    payloads = [bytes([i]) * 30_000 for i in range(3)]          # pieces above the join size
    batch, count = build_batch(payloads)
    view = memoryview(batch)
    pieces = [view[:256], view[256:300], view[300:40_000], view[40_000:]]
    sent = await client.send_batch(stream, "t", 0, pieces, count)
    assert sent.offsets == range(0, 3)
    polled = await client.poll_messages(stream, "t", partition_id=0,
                                        polling_strategy=PollingStrategy.First())
    assert [m.payload for m in polled] == payloads
