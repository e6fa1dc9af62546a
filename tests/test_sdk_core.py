"""The official SDK (apache-iggy 0.9.0) against the real server: streams, topics, partitions,
send and poll with every strategy, headers, the producer, offsets, stats, options, raw calls."""

from __future__ import annotations

import asyncio
import time

import pytest
from apache_iggy import (Consumer, HeaderKey, HeaderValue, IggyClient, IggyExpiry,
                         MaxTopicSize, Partitioning, PollingStrategy)
from apache_iggy import SendMessage as Message

NEVER = 2**64 - 1


async def make_topic(client, unique, partitions=1, **kwargs):
    stream, topic = unique("s"), unique("t")
    await client.create_stream(stream)
    await client.create_topic(stream=stream, name=topic, partitions_count=partitions, **kwargs)
    return stream, topic


async def poll(client, stream, topic, strategy, count=100, partition_id=0, consumer=1,
               auto_commit=False):
    return await client.poll_messages(stream=stream, topic=topic,
                                      consumer=Consumer.Single(consumer),
                                      partition_id=partition_id, polling_strategy=strategy,
                                      count=count, auto_commit=auto_commit)


async def test_ping_and_login(server):
    c = IggyClient(server.address)
    await c.connect()
    await c.ping()
    await c.login_user("iggy", "iggy")
    await c.ping()
    await c.logout_user()
    await c.login_user("iggy", "iggy")
    assert await c.get_streams() is not None


async def test_wrong_password_is_rejected(server):
    c = IggyClient(server.address)
    await c.connect()
    with pytest.raises(RuntimeError, match="(?i)invalid credentials"):
        await c.login_user("iggy", "wrong-password")
    await c.login_user("iggy", "iggy")   # the same connection still works


async def test_streams_crud(client, unique):
    name = unique("s")
    await client.create_stream(name)
    s = await client.get_stream(name)
    assert s.name == name and s.topics_count == 0 and s.messages_count == 0
    by_id = await client.get_stream(s.id)
    assert by_id.name == name
    assert name in [x.name for x in await client.get_streams()]
    renamed = unique("r")
    await client.update_stream(name, renamed)
    assert await client.get_stream(name) is None
    assert (await client.get_stream(renamed)).id == s.id
    with pytest.raises(RuntimeError, match="already exists"):
        await client.create_stream(renamed)
    await client.purge_stream(renamed)
    await client.delete_stream(renamed)
    assert await client.get_stream(renamed) is None
    with pytest.raises(RuntimeError):
        await client.delete_stream(renamed)


async def test_stream_ids_are_zero_based_and_reused(fresh_server):
    fresh_server.start()
    c = IggyClient(fresh_server.address)
    await c.connect()
    await c.login_user("iggy", "iggy")
    for name in ("a0", "a1", "a2"):
        await c.create_stream(name)
    assert [s.id for s in await c.get_streams()] == [0, 1, 2]
    await c.delete_stream("a1")
    await c.create_stream("a3")
    assert (await c.get_stream("a3")).id == 1


async def test_topics_crud_and_options(client, unique):
    stream = unique("s")
    await client.create_stream(stream)
    topic = unique("t")
    await client.create_topic(stream=stream, name=topic, partitions_count=3,
                              compression_algorithm="gzip",
                              message_expiry=IggyExpiry.ExpireDuration(
                                  __import__("datetime").timedelta(seconds=10)),
                              max_topic_size=MaxTopicSize.Custom(2 * 1024**3))
    t = await client.get_topic(stream, topic)
    assert t.name == topic and t.partitions_count == 3 and t.id == 0
    assert t.compression_algorithm.lower() == "gzip"
    assert [p.id for p in t.partitions] == [0, 1, 2]
    assert all(p.current_offset == 0 and p.messages_count == 0 for p in t.partitions)
    topics = await client.get_topics(stream)
    assert [x.name for x in topics] == [topic]
    assert (await client.get_stream(stream)).topics_count == 1
    await client.update_topic(stream, topic, name=topic + "x")
    assert await client.get_topic(stream, topic) is None
    assert (await client.get_topic(stream, topic + "x")).partitions_count == 3
    with pytest.raises(RuntimeError):
        await client.create_topic(stream=stream, name=topic + "x", partitions_count=1)
    await client.delete_topic(stream, topic + "x")
    assert await client.get_topic(stream, topic + "x") is None
    assert await client.get_topics(stream) == []
    assert await client.get_topic(unique("missing"), topic) is None


async def test_topic_with_typed_and_string_options(client, unique):
    stream, topic = await make_topic(client, unique, segment_size=8 * 1024 * 1024,
                                     messages_required_to_save=10,
                                     options={"size_of_messages_required_to_save": "2 MiB",
                                              "x_custom": "kept"})
    t = await client.get_topic(stream, topic)
    explicit = t.options.to_scalar_dict()
    assert explicit["segment_size"] == 8 * 1024 * 1024
    # Sent as a String, shown as the catalog's kind (a Uint64 of bytes), as Iggy does.
    assert explicit["size_of_messages_required_to_save"] == 2 * 1024 * 1024
    assert explicit["x_custom"] == "kept"
    assert explicit["durability"] == "replicated"       # the SDK always sends it
    derived = t.derived_options.to_scalar_dict()
    assert derived["max_topic_size"] == NEVER and "segment_size" not in derived
    with pytest.raises(RuntimeError):
        await client.create_topic(stream=stream, name=unique("bad"), partitions_count=1,
                                  options={"segment_size": "not a size"})


async def test_partitions_create_delete(client, unique):
    stream, topic = await make_topic(client, unique, partitions=2)
    await client.create_partitions(stream, topic, 3)
    assert [p.id for p in (await client.get_topic(stream, topic)).partitions] == [0, 1, 2, 3, 4]
    await client.delete_partitions(stream, topic, 2)
    assert [p.id for p in (await client.get_topic(stream, topic)).partitions] == [0, 1, 2]


async def test_send_and_poll_every_strategy(client, unique):
    stream, topic = await make_topic(client, unique)
    before = time.time_ns() // 1000
    r1 = await client.send_messages(stream, topic, 0, [Message(f"m{i}") for i in range(5)])
    await asyncio.sleep(0.01)
    middle = time.time_ns() // 1000
    r2 = await client.send_messages(stream, topic, 0, [Message(f"m{i}") for i in range(5, 10)])
    assert r1.confirmations[0].base_offset == 0 and r2.confirmations[0].base_offset == 5
    assert r1.confirmations[0].partition_id == 0

    def payloads(msgs):
        return [m.payload().decode() for m in msgs]

    every = [f"m{i}" for i in range(10)]
    assert payloads(await poll(client, stream, topic, PollingStrategy.First())) == every
    assert payloads(await poll(client, stream, topic, PollingStrategy.Offset(3), 4)) == every[3:7]
    assert payloads(await poll(client, stream, topic, PollingStrategy.Last(), 3)) == every[7:]
    ts = await poll(client, stream, topic, PollingStrategy.Timestamp(middle))
    assert payloads(ts) == every[5:]
    assert payloads(await poll(client, stream, topic, PollingStrategy.Timestamp(before))) == every
    msgs = await poll(client, stream, topic, PollingStrategy.First())
    assert [m.offset() for m in msgs] == list(range(10))
    assert all(m.timestamp() >= before for m in msgs)
    assert msgs[0].timestamp() == msgs[4].timestamp() != msgs[5].timestamp()
    # Next: starts at 0, auto-commit moves it, offsets continue.
    got = await poll(client, stream, topic, PollingStrategy.Next(), 4, consumer=7,
                     auto_commit=True)
    assert payloads(got) == every[:4]
    got = await poll(client, stream, topic, PollingStrategy.Next(), 4, consumer=7,
                     auto_commit=True)
    assert payloads(got) == every[4:8]
    got = await poll(client, stream, topic, PollingStrategy.Next(), 40, consumer=7,
                     auto_commit=True)
    assert payloads(got) == every[8:]
    assert await poll(client, stream, topic, PollingStrategy.Next(), 4, consumer=7) == []
    assert await poll(client, stream, topic, PollingStrategy.Offset(100)) == []


async def test_poll_empty_partition_and_missing_things(client, unique):
    stream, topic = await make_topic(client, unique)
    assert await poll(client, stream, topic, PollingStrategy.First()) == []
    assert await poll(client, stream, topic, PollingStrategy.Last()) == []
    assert await poll(client, stream, topic, PollingStrategy.Next()) == []
    with pytest.raises(RuntimeError):
        await poll(client, stream, topic, PollingStrategy.First(), partition_id=5)
    with pytest.raises(RuntimeError):
        await poll(client, stream, unique("nope"), PollingStrategy.First())


async def test_user_headers_ids_and_binary_payloads(client, unique):
    stream, topic = await make_topic(client, unique)
    headers = {"k": "v", "n": HeaderValue.UnsignedInt64(7), "b": True}
    blob = bytes(range(256)) * 4
    await client.send_messages(stream, topic, 0, [Message("with-headers", headers, id=42),
                                                  Message(blob)])
    got = await poll(client, stream, topic, PollingStrategy.First())
    assert got[0].id() == 42 and got[0].payload() == b"with-headers"
    h = got[0].user_headers()
    assert h[HeaderKey.String("k")] == HeaderValue.String("v")
    assert h[HeaderKey.String("n")] == HeaderValue.UnsignedInt64(7)
    assert got[1].payload() == blob and got[1].user_headers() is None
    assert got[1].id() != 0   # the SDK mints a random id for id 0
    assert got[0].length() == len(b"with-headers")


async def test_balanced_and_key_partitioning(client, unique):
    stream, topic = await make_topic(client, unique, partitions=3)
    for i in range(6):
        await client.send_messages(stream, topic, Partitioning.balanced(), [Message(f"b{i}")])
    counts = [(await client.get_topic(stream, topic)).partitions[p].messages_count
              for p in range(3)]
    assert counts == [2, 2, 2]
    await client.send_messages(stream, topic, Partitioning.messages_key("user-123"),
                               [Message("keyed")])
    # xxh32("user-123") % 3 == 1 (PROTOCOL.md §7.6)
    got = await poll(client, stream, topic, PollingStrategy.Last(), 1, partition_id=1)
    assert got[0].payload() == b"keyed"


async def test_large_batch_roundtrip_and_partial_polls(client, unique):
    stream, topic = await make_topic(client, unique)
    payloads = [bytes([i % 251]) * (1000 + i) for i in range(1000)]
    await client.send_messages(stream, topic, 0, [Message(p) for p in payloads])
    got = await poll(client, stream, topic, PollingStrategy.Offset(123), 500)
    assert [m.payload() for m in got] == payloads[123:623]
    assert [m.offset() for m in got] == list(range(123, 623))
    got = await poll(client, stream, topic, PollingStrategy.First(), 1000)
    assert [m.payload() for m in got] == payloads


async def test_producer(client, unique):
    stream, topic = unique("s"), unique("t")
    producer = await client.producer(stream, topic, topic_partitions_count=2)
    await producer.send([Message(f"p{i}") for i in range(10)])
    await producer.send_one(Message("last"))
    t = await client.get_topic(stream, topic)
    assert t.partitions_count == 2 and t.messages_count == 11


async def test_consumer_offsets_roundtrip(client, unique):
    stream, topic = await make_topic(client, unique)
    await client.send_messages(stream, topic, 0, [Message(f"o{i}") for i in range(5)])
    await poll(client, stream, topic, PollingStrategy.First(), 3, consumer=9, auto_commit=True)
    got = await poll(client, stream, topic, PollingStrategy.Next(), 10, consumer=9)
    assert [m.offset() for m in got] == [3, 4]


async def test_stats_and_describe_options(client, unique):
    stream, topic = await make_topic(client, unique)
    await client.send_messages(stream, topic, 0, [Message("x")])
    stats = await client.get_stats()
    assert stats.streams_count >= 1 and stats.topics_count >= 1
    assert stats.messages_count >= 1
    specs = await client.describe_options("topic")
    keys = {s.key for s in specs}
    assert {"message_expiry", "max_topic_size", "segment_size", "durability"} <= keys
    assert await client.describe_options("stream") == []


async def test_raw_binary_request(client, unique):
    # Ping (1) and GetStreams (201) through send_binary_request.
    assert await client.send_binary_request(1, b"") == b""
    name = unique("raw")
    await client.create_stream(name)
    raw = await client.send_binary_request(201, b"")
    assert name.encode() in raw
    with pytest.raises(RuntimeError):
        await client.send_binary_request(9999, b"")


async def test_purge_topic_and_stream(client, unique):
    stream, topic = await make_topic(client, unique)
    await client.send_messages(stream, topic, 0, [Message("x")] * 3)
    await client.purge_topic(stream, topic)
    assert (await client.get_topic(stream, topic)).messages_count == 0
    await client.send_messages(stream, topic, 0, [Message("y")])
    await client.purge_stream(stream)
    assert (await client.get_stream(stream)).messages_count == 0


async def test_captured_user_header_block_is_served_verbatim(server, client, unique):
    # PROTOCOL.md §3: the captured block for {'k': 'v', 'n': UnsignedInt64(7), 'b': True},
    # sent by our raw client and read back by the official SDK.
    from iggy_fast import _wire
    from iggy_fast.client import BlockingClient

    block = bytes.fromhex("02010000006203010000000102010000006b02010000007602010000006e0c08"
                          "000000" "0700000000000000")
    stream, topic = await make_topic(client, unique)
    with BlockingClient(server.address) as raw:
        raw.login()
        raw.send_batch(stream, topic, 0, _wire.build_batch([(5, b"hdr", block, 0)], 1), 1)
        assert raw.poll_messages(stream, topic, 0, 3, 0, 1)[0][5] == block
    got = (await poll(client, stream, topic, PollingStrategy.First()))[0]
    assert got.user_headers().to_scalar_dict() == {"k": "v", "n": 7, "b": True}


async def test_consumer_offset_commands_through_the_sdk(client, unique):
    # GetConsumerOffset (120), StoreConsumerOffset (121) and DeleteConsumerOffset (122) for a
    # single consumer, through the SDK's raw request path (it frames 121/122 as op 161/162).
    from iggy_fast._wire import Writer

    stream, topic = await make_topic(client, unique)

    def target():
        return Writer().u8(1).identifier("reader").identifier(stream).identifier(topic) \
            .u8(1).u32(0)

    assert await client.send_binary_request(120, target().getvalue()) == b""
    with pytest.raises(RuntimeError):          # 4100: nothing to point at yet
        await client.send_binary_request(121, target().u64(0).u8(1).getvalue())
    await client.send_messages(stream, topic, 0, [Message(f"o{i}") for i in range(5)])
    assert await client.send_binary_request(121, target().u64(2).u8(1).getvalue()) == b""
    reply = await client.send_binary_request(120, target().getvalue())
    assert (int.from_bytes(reply[0:4], "little"), int.from_bytes(reply[4:12], "little"),
            int.from_bytes(reply[12:20], "little")) == (0, 4, 2)
    got = await client.poll_messages(stream=stream, topic=topic, consumer=Consumer.Single("reader"),
                                     partition_id=0, polling_strategy=PollingStrategy.Next(),
                                     count=10, auto_commit=False)
    assert [m.offset() for m in got] == [3, 4]
    with pytest.raises(RuntimeError):          # beyond the last offset
        await client.send_binary_request(121, target().u64(5).u8(1).getvalue())
    assert await client.send_binary_request(122, target().u8(1).getvalue()) == b""
    assert await client.send_binary_request(120, target().getvalue()) == b""
    with pytest.raises(RuntimeError):          # 3021: nothing stored any more
        await client.send_binary_request(122, target().u8(1).getvalue())


async def test_flush_unsaved_buffer_syncs_the_partition(server, client, unique):
    # FlushUnsavedBuffer (102): [stream][topic][partition u32][fsync u8]. The Iggy server this
    # protocol comes from answers 5 because it has no on-demand flush; iggy-fast writes every
    # batch through to the file already and can fsync a partition when asked, so it does.
    from iggy_fast._wire import Writer
    from iggy_fast.client import BlockingClient
    from iggy_fast.protocol.errors import IggyError

    stream, topic = await make_topic(client, unique)
    await client.send_messages(stream, topic, 0, [Message(f"f{i}") for i in range(3)])

    def body(partition: int, fsync: int) -> bytes:
        return Writer().identifier(stream).identifier(topic).u32(partition).u8(fsync).getvalue()

    assert await client.send_binary_request(102, body(0, 1)) == b""
    assert await client.send_binary_request(102, body(0, 0)) == b""
    with BlockingClient(server.address) as raw:
        raw.login()
        for bad, code in ((body(7, 1), 3007), (body(0, 1) + b"\x00", 3), (body(0, 1)[:-1], 3)):
            with pytest.raises(IggyError) as e:
                raw.call(102, bad)
            assert e.value.code == code
    got = await poll(client, stream, topic, PollingStrategy.First())
    assert [m.payload() for m in got] == [b"f0", b"f1", b"f2"]
