"""Identities are never reused: a stream or topic deleted and a namesake created under the same
id (as Iggy gives ids: the lowest free) share no key and no directory, so neither a late
directory removal nor a replayed delete can touch the newcomer's messages; and directories
that belong to no live identity are removed at start."""

from __future__ import annotations

import os

from apache_iggy import Consumer, IggyClient, PollingStrategy
from apache_iggy import SendMessage as Message

from iggy_fast import _wire
from test_metadata_store import open_server


async def connect(srv) -> IggyClient:
    c = IggyClient(srv.address)
    await c.connect()
    await c.login_user("iggy", "iggy")
    return c


async def payloads(c, stream, topic) -> list[bytes]:
    msgs = await c.poll_messages(stream=stream, topic=topic, consumer=Consumer.Single(1),
                                 partition_id=0, polling_strategy=PollingStrategy.First(),
                                 count=1000, auto_commit=False)
    return [m.payload() for m in msgs]


async def test_a_reused_stream_id_never_shares_data(fresh_server):
    srv = fresh_server.start()
    c = await connect(srv)
    await c.create_stream("a")
    await c.create_topic(stream="a", name="t", partitions_count=1)
    await c.send_messages("a", "t", 0, [Message(f"a-{i}") for i in range(10)])
    a_dir = srv.data_path(0)
    await c.delete_stream("a")
    assert not os.path.exists(a_dir)          # removed before the delete was answered
    await c.create_stream("b")
    assert (await c.get_stream("b")).id == 0
    await c.create_topic(stream="b", name="t", partitions_count=1)
    await c.send_messages("b", "t", 0, [Message(f"b-{i}") for i in range(5)])
    assert srv.data_path(0) != a_dir
    assert srv.stop() == 0
    srv.start()
    c = await connect(srv)
    assert [s.name for s in await c.get_streams()] == ["b"]
    assert await payloads(c, "b", "t") == [f"b-{i}".encode() for i in range(5)]
    assert not os.path.exists(a_dir)


async def test_a_reused_topic_id_never_shares_data(fresh_server):
    srv = fresh_server.start()
    c = await connect(srv)
    await c.create_stream("s")
    await c.create_topic(stream="s", name="x", partitions_count=1)
    await c.send_messages("s", "x", 0, [Message(f"x-{i}") for i in range(10)])
    x_dir = srv.data_path(0, 0)
    await c.delete_topic("s", "x")
    await c.create_topic(stream="s", name="y", partitions_count=1)
    assert (await c.get_topic("s", "y")).id == 0
    await c.send_messages("s", "y", 0, [Message(f"y-{i}") for i in range(5)])
    assert srv.data_path(0, 0) != x_dir and not os.path.exists(x_dir)
    assert srv.stop() == 0
    srv.start()
    c = await connect(srv)
    assert [t.name for t in await c.get_topics("s")] == ["y"]
    assert await payloads(c, "s", "y") == [f"y-{i}".encode() for i in range(5)]


def append(partition, texts) -> None:
    msgs = [(i + 1, t.encode(), b"", 0) for i, t in enumerate(texts)]
    batch = bytearray(_wire.build_batch(msgs, 1))
    partition.log.append(batch, len(msgs), 1)


def stored(partition) -> list[bytes]:
    chunks, _, _ = partition.log.read(0, 1000)
    return [m[4] for chunk in chunks for m in _wire.iter_messages(chunk)]


async def test_a_replayed_delete_leaves_the_namesake_alone(tmp_path):
    """The delete change of stream "a" applied again, and committed again, after "b" took its
    id: "b" keeps its memory, records and messages, before and after a restart."""
    server = await open_server(tmp_path)
    state = server.state
    changes = []
    server.store.watch(changes.append)
    a = await state.create_stream("a", 1)
    await state.create_topic("a", "t", 1, [], 1)
    append(state.partition(state.topic("a", "t"), 0), ["a-0", "a-1"])
    await state.delete_stream("a")
    delete_a = changes[-1]
    b = await state.create_stream("b", 2)
    await state.create_topic("b", "t", 1, [], 2)
    b_part = state.partition(state.topic("b", "t"), 0)
    append(b_part, ["b-0"])
    assert (a.id, state.topic("b", "t").id) == (b.id, 0) and a.identity != b.identity
    state.apply(delete_a)                                   # replayed by the watch
    await server.store.commit(deletes=delete_a.deletes,     # committed again by a retry
                              delete_prefixes=delete_a.delete_prefixes)
    assert state.find_stream("b") is b and state.partition(state.topic("b", "t"), 0) is b_part
    assert stored(b_part) == [b"b-0"]
    assert not os.path.exists(os.path.join(server.data_dir, a.path))
    server.close()
    server = await open_server(tmp_path)
    assert [s.name for s in server.state.streams.values()] == ["b"]
    assert stored(server.state.partition(server.state.topic("b", "t"), 0)) == [b"b-0"]
    server.close()


async def test_directories_of_no_live_identity_are_removed_at_start(fresh_server):
    """What a crash can leave: a removal that never ran (a deleted topic's directory) or a
    creation whose commit was lost (an identity past the counter)."""
    srv = fresh_server.start()
    c = await connect(srv)
    await c.create_stream("s")
    await c.create_topic(stream="s", name="t", partitions_count=1)
    await c.send_messages("s", "t", 0, [Message("kept")])
    assert srv.stop() == 0
    stream_dir = srv.data_path(0)
    strays = [os.path.join(stream_dir, "topics", "990", "partitions", "991"),
              os.path.join(srv.data_dir, "streams", "995", "topics", "996")]
    for stray in strays:
        os.makedirs(stray)
        with open(os.path.join(stray, f"{0:020d}.log"), "wb") as f:
            f.write(b"old messages")
    srv.start()
    c = await connect(srv)
    assert await payloads(c, "s", "t") == [b"kept"]
    assert not os.path.exists(os.path.dirname(os.path.dirname(strays[0])))
    assert not os.path.exists(os.path.join(srv.data_dir, "streams", "995"))
    assert srv.log().count("belongs to no stream, topic or partition") == 2
