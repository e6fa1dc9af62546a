"""A restart restores everything: streams, topics, messages byte for byte, consumer offsets,
and new sends continue the offsets densely."""

from __future__ import annotations

from apache_iggy import Consumer, IggyClient, PollingStrategy
from apache_iggy import SendMessage as Message


async def connect(srv):
    c = IggyClient(srv.address)
    await c.connect()
    await c.login_user("iggy", "iggy")
    return c


async def read_all(c, stream, topic, partition):
    return await c.poll_messages(stream=stream, topic=topic, consumer=Consumer.Single(1),
                                 partition_id=partition,
                                 polling_strategy=PollingStrategy.First(), count=100_000,
                                 auto_commit=False)


def snapshot(msgs):
    return [(m.offset(), m.id(), m.timestamp(), m.origin_timestamp(), m.checksum(),
             m.payload(), m.user_headers()) for m in msgs]


async def test_sigterm_restart_keeps_everything(fresh_server):
    fresh_server.start()
    c = await connect(fresh_server)
    await c.create_stream("orders")
    await c.create_topic(stream="orders", name="created", partitions_count=2)
    await c.create_stream("other")
    for i in range(20):
        await c.send_messages("orders", "created", i % 2,
                              [Message(f"order-{i}-{j}".encode() * (j + 1),
                                       {"n": i} if j == 0 else None) for j in range(50)])
    await c.poll_messages(stream="orders", topic="created", consumer=Consumer.Single(5),
                          partition_id=1, polling_strategy=PollingStrategy.Next(), count=120,
                          auto_commit=True)
    before = {p: snapshot(await read_all(c, "orders", "created", p)) for p in (0, 1)}
    assert len(before[0]) == len(before[1]) == 500

    assert fresh_server.stop() == 0
    fresh_server.start()
    c = await connect(fresh_server)
    assert [s.name for s in await c.get_streams()] == ["orders", "other"]
    topic = await c.get_topic("orders", "created")
    assert topic.partitions_count == 2 and topic.messages_count == 1000
    after = {p: snapshot(await read_all(c, "orders", "created", p)) for p in (0, 1)}
    assert after == before
    # The stored consumer offset survived: Next continues at 120.
    got = await c.poll_messages(stream="orders", topic="created", consumer=Consumer.Single(5),
                                partition_id=1, polling_strategy=PollingStrategy.Next(),
                                count=5, auto_commit=True)
    assert [m.offset() for m in got] == [120, 121, 122, 123, 124]
    # New sends continue densely.
    r = await c.send_messages("orders", "created", 0, [Message("after-restart")] * 3)
    assert r.confirmations[0].base_offset == 500
    msgs = await read_all(c, "orders", "created", 0)
    assert [m.offset() for m in msgs] == list(range(503))


async def test_root_password_from_environment(tmp_path):
    from conftest import ServerProcess
    import pytest

    srv = ServerProcess(tmp_path / "env", env={"IGGY_ROOT_PASSWORD": "s3cret-pass"})
    srv.start()
    try:
        c = IggyClient(srv.address)
        await c.connect()
        with pytest.raises(RuntimeError):
            await c.login_user("iggy", "iggy")
        await c.login_user("iggy", "s3cret-pass")
    finally:
        assert srv.stop() == 0
