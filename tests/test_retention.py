"""Segments roll over, sealed ones are named by their offset range, and retention deletes
whole sealed segments by age and by topic size; consumers resume at the first kept message."""

from __future__ import annotations

import asyncio
import datetime
import os

import pytest
from apache_iggy import (Consumer, IggyClient, IggyExpiry, MaxTopicSize, PollingStrategy)
from apache_iggy import SendMessage as Message

from conftest import ServerProcess

SMALL = {"IGGY_SYSTEM_SEGMENT_SIZE": "8 KiB",
         "IGGY_DATA_MAINTENANCE_MESSAGES_INTERVAL": "200 ms"}


@pytest.fixture
async def small_segments(tmp_path):
    srv = ServerProcess(tmp_path / "ret", env=SMALL).start()
    c = IggyClient(srv.address)
    await c.connect()
    await c.login_user("iggy", "iggy")
    yield srv, c
    assert srv.stop() == 0
    assert "Traceback" not in srv.log()


def partition_dir(srv, stream_id=0, topic_id=0, partition_id=0):
    return os.path.join(srv.data_dir, "streams", str(stream_id), "topics", str(topic_id),
                        "partitions", str(partition_id))


async def fill(c, stream, topic, batches, per_batch=10, size=500):
    for b in range(batches):
        await c.send_messages(stream, topic, 0,
                              [Message(bytes([b % 256]) * size) for _ in range(per_batch)])


async def read_all(c, stream, topic, **kw):
    return await c.poll_messages(stream=stream, topic=topic, consumer=Consumer.Single(1),
                                 partition_id=0, polling_strategy=PollingStrategy.First(),
                                 count=100_000, auto_commit=False, **kw)


async def test_rollover_names_show_offset_ranges(small_segments):
    srv, c = small_segments
    await c.create_stream("s")
    await c.create_topic(stream="s", name="t", partitions_count=1)
    await fill(c, "s", "t", 12)           # ~5.6 KB per batch: one batch per 8 KiB segment
    for _ in range(200):                  # the sync worker names sealed segments, not the send
        logs = sorted(n for n in os.listdir(partition_dir(srv)) if n.endswith(".log"))
        if sum("-" in n for n in logs) == 11:
            break
        await asyncio.sleep(0.01)
    assert len(logs) == 12
    assert logs[0] == f"{0:020d}-{9:020d}.log" and logs[1] == f"{10:020d}-{19:020d}.log"
    assert logs[-1] == f"{110:020d}.log"  # the active one
    topic = await c.get_topic("s", "t")
    assert topic.partitions[0].segments_count == 12
    assert [m.offset() for m in await read_all(c, "s", "t")] == list(range(120))


async def test_time_retention_deletes_expired_segments_and_next_resumes(small_segments):
    srv, c = small_segments
    await c.create_stream("s")
    await c.create_topic(stream="s", name="t", partitions_count=1,
                         message_expiry=IggyExpiry.ExpireDuration(datetime.timedelta(seconds=1)))
    await fill(c, "s", "t", 6)
    await c.poll_messages(stream="s", topic="t", consumer=Consumer.Single(9), partition_id=0,
                          polling_strategy=PollingStrategy.Next(), count=5, auto_commit=True)
    await asyncio.sleep(1.6)
    await fill(c, "s", "t", 1)            # fresh messages, not expired
    for _ in range(50):
        msgs = await read_all(c, "s", "t")
        if msgs and msgs[0].offset() >= 60:
            break
        await asyncio.sleep(0.1)
    assert [m.offset() for m in msgs] == list(range(60, 70))
    assert "retention" in srv.log() and "expired" in srv.log()
    got = await c.poll_messages(stream="s", topic="t", consumer=Consumer.Single(9),
                                partition_id=0, polling_strategy=PollingStrategy.Next(),
                                count=3, auto_commit=True)
    assert [m.offset() for m in got] == [60, 61, 62]
    logs = [n for n in os.listdir(partition_dir(srv)) if n.endswith(".log")]
    assert len(logs) == 1


async def test_size_retention_keeps_the_topic_under_its_cap(small_segments):
    srv, c = small_segments
    await c.create_stream("s")
    await c.create_topic(stream="s", name="t", partitions_count=1,
                         max_topic_size=MaxTopicSize.Custom(24 * 1024))
    await fill(c, "s", "t", 10)
    for _ in range(50):
        topic = await c.get_topic("s", "t")
        if topic.size <= 24 * 1024:
            break
        await asyncio.sleep(0.1)
    assert topic.size <= 24 * 1024
    msgs = await read_all(c, "s", "t")
    assert msgs[-1].offset() == 99 and msgs[0].offset() > 0
    assert [m.offset() for m in msgs] == list(range(msgs[0].offset(), 100))


async def test_delete_segments_and_delete_topic_remove_files(small_segments):
    srv, c = small_segments
    from iggy_fast._wire import Writer
    await c.create_stream("s")
    await c.create_topic(stream="s", name="t", partitions_count=1)
    await fill(c, "s", "t", 5)
    body = Writer().identifier("s").identifier("t").u32(0).u32(2).getvalue()
    assert await c.send_binary_request(503, body) == b""
    logs = sorted(n for n in os.listdir(partition_dir(srv)) if n.endswith(".log"))
    assert len(logs) == 3 and logs[0].startswith(f"{20:020d}")
    assert (await read_all(c, "s", "t"))[0].offset() == 20
    await c.purge_topic("s", "t")
    assert [n for n in os.listdir(partition_dir(srv)) if n.endswith(".log")] == [
        f"{0:020d}.log"]
    await c.delete_topic("s", "t")
    assert not os.path.exists(os.path.join(srv.data_dir, "streams", "0", "topics", "0"))
    await c.delete_stream("s")
    assert not os.path.exists(os.path.join(srv.data_dir, "streams", "0"))
