"""Messages and consumer offsets: SendMessages, PollMessages, Flush, offsets (§5.9, §5.10, §7).

The hot path. A send body is [metadata_length u32][stream][topic][partitioning]
[messages_count u32][batch]; the batch stays where it was received: it is validated in place,
stamped in place by the partition and written to the log from that memory. A poll reply is
[partition_id u32][current_offset u64][count u32] followed by stored batches as read from the
segment files (sliced only at the edges, and sent with sendfile where the transport allows); no
message becomes a Python object.
"""

from __future__ import annotations

from iggy_fast import _wire
from iggy_fast._wire import Reader, Writer
from iggy_fast.protocol.errors import (ConsumerGroupIdNotFound, IggyError, InvalidCommand,
                                       PartitionNotFound)
from iggy_fast.server.dispatch import command
from iggy_fast.server.state import CONSUMER, GROUP, consumer_key

BALANCED, PARTITION_ID, MESSAGES_KEY = 1, 2, 3
OFFSET, TIMESTAMP, FIRST, LAST, NEXT = 1, 2, 3, 4, 5
FENCED = 0xFFFFFFFF


def _route(topic, kind: int, value: bytes) -> int:
    """The partition id a send goes to (PROTOCOL.md §7.6)."""
    if kind == PARTITION_ID:
        if len(value) != 4:
            raise InvalidCommand("partition id must be 4 bytes")
        return int.from_bytes(value, "little")
    ids = sorted(topic.partitions)
    if not ids:
        raise PartitionNotFound()
    if kind == BALANCED:
        pid = ids[topic.round_robin % len(ids)]
        topic.round_robin += 1
        return pid
    if kind == MESSAGES_KEY:
        if not 1 <= len(value) <= 255:
            raise InvalidCommand("message key must be 1..255 bytes")
        return ids[_wire.partition_for_key(value, len(ids))]
    raise InvalidCommand(f"partitioning kind {kind}")


@command(101, "send_messages")
def send_messages(server, client, r: Reader, now: int):
    metadata_length = r.u32()
    stream_ident = r.identifier()
    topic_ident = r.identifier()
    kind = r.u8()
    value = r.raw(r.u8())
    count = r.u32()
    if r.pos != 4 + metadata_length:
        raise InvalidCommand("metadata_length does not match the metadata")
    topic = server.state.topic(stream_ident, topic_ident)
    server.authz.require(client, "send", topic.stream.id, topic.id)
    partition = server.state.partition(topic, _route(topic, kind, value))
    batch = r.view(r.remaining)
    rc = _wire.validate_batch(batch, count, server.state.verify_on_open)
    if rc:
        raise IggyError.from_code(rc)
    base = server.durability.append(partition, batch, count, now)
    reply = (Writer().u32(1).u32(topic.stream.id).u32(topic.id).u32(partition.id)
             .u64(base).buf)
    return server.durability.acknowledge(partition, reply)


def _consumer_partition(server, client, topic, kind: int, ident, partition_id):
    """(partition, offsets key) for a consumer, or (None, None) when a group poll is fenced."""
    if kind == CONSUMER:
        pid = 0 if partition_id is None else partition_id
        return server.state.partition(topic, pid), consumer_key(CONSUMER, ident)
    groups = getattr(server, "groups", None)
    if groups is None:
        raise ConsumerGroupIdNotFound()
    pid, gid = groups.member_partition(client, topic, ident, partition_id)
    if pid is None:
        return None, None
    return server.state.partition(topic, pid), consumer_key(GROUP, gid)


def _start_offset(state, log, partition, ckey, strategy: int, value: int, count: int):
    if strategy == OFFSET:
        return value
    if strategy == TIMESTAMP:
        return log.offset_for_timestamp(value)
    if strategy == FIRST:
        return log.first_offset
    if strategy == LAST:
        return max(log.first_offset, log.next_offset - count)
    if strategy == NEXT:
        stored = state.stored_offset(partition, ckey)
        return log.first_offset if stored is None else max(stored + 1, log.first_offset)
    raise InvalidCommand(f"polling strategy {strategy}")


@command(100, "poll_messages")
def poll_messages(server, client, r: Reader, now: int):
    kind, ident = r.consumer()
    stream_ident = r.identifier()
    topic_ident = r.identifier()
    partition_id = r.optional_partition()
    strategy = r.u8()
    value = r.u64()
    count = r.u32()
    auto_commit = r.u8()
    r.expect_end()
    topic = server.state.topic(stream_ident, topic_ident)
    server.authz.require(client, "poll", topic.stream.id, topic.id)
    partition, ckey = _consumer_partition(server, client, topic, kind, ident, partition_id)
    if partition is None:
        return Writer().u32(FENCED).u64(0).u32(0).buf
    log = partition.log
    start = _start_offset(server.state, log, partition, ckey, strategy, value, count)
    # Whole stored batches travel as file regions: the transport sendfile()s them.
    chunks, got, after = ([], 0, 0) if start is None else log.read(start, count, regions=True)
    head = Writer().u32(partition.id).u64(log.current_offset).u32(got).buf
    if auto_commit and got:
        return server.state.store_offset(partition, ckey, after - 1, [head, *chunks])
    return [head, *chunks]


@command(102, "flush_unsaved_buffer")
def flush_unsaved_buffer(server, client, r: Reader, now: int):
    topic = server.state.topic(r.identifier(), r.identifier())
    server.authz.require(client, "send", topic.stream.id, topic.id)
    partition = server.state.partition(topic, r.u32())
    fsync = r.u8()
    r.expect_end()
    # Appends are already in the kernel; "flush" can only mean making them durable.
    if fsync:
        return server.durability.sync_now(partition)
    partition.log.flush_index()
    return None


def _offset_target(server, client, r: Reader, write: bool):
    """(partition, offsets key) an offset command addresses. Anyone allowed to poll the topic
    may read a group's offsets; storing or deleting one is fenced to the member that owns the
    partition (Groups.offset_owner). An absent partition means partition 0 (PROTOCOL.md §5.9)."""
    kind, ident = r.consumer()
    topic = server.state.topic(r.identifier(), r.identifier())
    server.authz.require(client, "poll", topic.stream.id, topic.id)
    partition_id = r.optional_partition()
    pid = 0 if partition_id is None else partition_id
    if kind == CONSUMER:
        return server.state.partition(topic, pid), consumer_key(CONSUMER, ident)
    groups = getattr(server, "groups", None)
    if groups is None:
        raise ConsumerGroupIdNotFound()
    if write:
        gid = groups.offset_owner(client, topic, ident, pid)
    else:
        gid = groups.group_id(topic, ident)
    return server.state.partition(topic, pid), consumer_key(GROUP, gid)


@command(120, "get_consumer_offset")
def get_consumer_offset(server, client, r: Reader, now: int):
    part, ckey = _offset_target(server, client, r, write=False)
    r.expect_end()
    stored = server.state.stored_offset(part, ckey)
    if stored is None:
        return None
    return Writer().u32(part.id).u64(part.log.current_offset).u64(stored).buf


@command(121, "store_consumer_offset")
def store_consumer_offset(server, client, r: Reader, now: int):
    part, ckey = _offset_target(server, client, r, write=True)
    offset = r.u64()
    if r.remaining:
        r.u8()   # ack level: every store is committed before the reply
    r.expect_end()
    return server.state.store_offset(part, ckey, offset)


@command(122, "delete_consumer_offset")
def delete_consumer_offset(server, client, r: Reader, now: int):
    part, ckey = _offset_target(server, client, r, write=True)
    if r.remaining:
        r.u8()
    r.expect_end()
    return server.state.delete_offset(part, ckey)
