"""Messages and consumer offsets: send, poll, flush, offsets (PROTOCOL.md §5.9, §5.10, §7).

The hot path. A sent batch is validated where it was received, stamped in place by the
partition and written to the log from that memory; a poll answers the stored batches as
storage reads them (file regions, sent with sendfile where the transport allows). No message
becomes a Python object. A send on an fsync'd topic answers once its bytes are on disk (an
awaitable, from the durability worker).
"""

from __future__ import annotations

import inspect

from iggy_fast import _wire
from iggy_fast.protocol import requests as rq
from iggy_fast.protocol.codes import (BALANCED, FENCED_PARTITION, FIRST, LAST, MESSAGES_KEY,
                                      NEXT, OFFSET, PARTITION_ID, TIMESTAMP)
from iggy_fast.protocol.errors import IggyError, InvalidCommand, PartitionNotFound
from iggy_fast.protocol.results import Polled, Sent, StoredOffset
from iggy_fast.server.service import Context, lookup
from iggy_fast.server.state import CONSUMER, GROUP, consumer_key


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


def send_messages(ctx: Context, req: rq.SendMessages):
    """A Sent, or an awaitable of it when the topic acknowledges only durable appends."""
    server = ctx.server
    topic = lookup.existing_topic(ctx, req.stream, req.topic, "send")
    partition = server.state.partition(topic, _route(topic, req.partitioning,
                                                     req.partitioning_value))
    rc = _wire.validate_batch(req.batch, req.count, server.state.verify_on_open)
    if rc:
        raise IggyError.from_code(rc)
    base = server.durability.append(partition, req.batch, req.count, ctx.now)
    return server.durability.acknowledge(
        partition, Sent(topic.stream.id, topic.id, partition.id, base))


def _consumer_partition(ctx: Context, topic, req: rq.PollMessages):
    """(partition, offsets key) for a consumer, or (None, None) when a group poll is fenced."""
    if req.consumer_kind == CONSUMER:
        pid = 0 if req.partition_id is None else req.partition_id
        return ctx.server.state.partition(topic, pid), consumer_key(CONSUMER, req.consumer)
    pid, gid = ctx.server.groups.member_partition(ctx.client, topic, req.consumer,
                                                  req.partition_id)
    if pid is None:
        return None, None
    return ctx.server.state.partition(topic, pid), consumer_key(GROUP, gid)


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


def poll_messages(ctx: Context, req: rq.PollMessages) -> Polled:
    state = ctx.server.state
    topic = lookup.existing_topic(ctx, req.stream, req.topic, "poll")
    partition, ckey = _consumer_partition(ctx, topic, req)
    if partition is None:
        return Polled(FENCED_PARTITION, 0, 0, [])
    start = _start_offset(state, partition.log, partition, ckey, req.strategy, req.value,
                          req.count)
    if start is not None and partition.log.needs_verification(start, req.count):
        return _poll_verified(state, partition, ckey, start, req)
    return _poll_reply(state, partition, ckey, start, req)


async def _poll_verified(state, partition, ckey, start: int, req: rq.PollMessages) -> Polled:
    """A first read of stored batches verifies them, on a worker thread (it can be slow)."""
    await partition.log.verify_for_read(start, req.count)
    polled = _poll_reply(state, partition, ckey, start, req)
    # With auto-commit on a topic with durable offsets, the reply waits for the offset's sync.
    return await polled if inspect.isawaitable(polled) else polled


def _poll_reply(state, partition, ckey, start, req: rq.PollMessages) -> Polled:
    log = partition.log
    # Whole stored batches travel as file regions: the transport sendfile()s them. The reply
    # is capped in bytes (the count is cut to fit), so no poll builds an unbounded reply.
    chunks, got, after = ([], 0, 0) if start is None else log.read(
        start, req.count, regions=True, max_bytes=state.max_poll_size)
    polled = Polled(partition.id, log.current_offset, got, chunks)
    partition.polled_messages += got
    partition.polled_bytes += sum(map(len, chunks))
    if req.auto_commit and got:
        # The reply, or an awaitable of it once the offset is on disk (durable offsets).
        return state.store_offset(partition, ckey, after - 1, polled)
    return polled


def flush_unsaved_buffer(ctx: Context, req: rq.FlushUnsavedBuffer):
    """None, or an awaitable of None once everything appended is on disk."""
    server = ctx.server
    topic = lookup.existing_topic(ctx, req.stream, req.topic, "send")
    partition = server.state.partition(topic, req.partition_id)
    # Appends are already in the kernel; "flush" can only mean making them durable.
    if req.fsync:
        return server.durability.sync_now(partition)
    partition.log.flush_index()
    return None


def _offset_target(ctx: Context, req, write: bool):
    """(partition, offsets key) an offset command addresses. Anyone allowed to poll the topic
    may read a group's offsets; storing or deleting one is fenced to the member that owns the
    partition (Groups.offset_owner). An absent partition means partition 0 (PROTOCOL.md §5.9)."""
    server = ctx.server
    topic = lookup.existing_topic(ctx, req.stream, req.topic, "poll")
    pid = 0 if req.partition_id is None else req.partition_id
    if req.consumer_kind == CONSUMER:
        return server.state.partition(topic, pid), consumer_key(CONSUMER, req.consumer)
    if write:
        gid = server.groups.offset_owner(ctx.client, topic, req.consumer, pid)
    else:
        gid = server.groups.group_id(topic, req.consumer)
    return server.state.partition(topic, pid), consumer_key(GROUP, gid)


def get_consumer_offset(ctx: Context, req: rq.GetConsumerOffset) -> StoredOffset | None:
    part, ckey = _offset_target(ctx, req, write=False)
    stored = ctx.server.state.stored_offset(part, ckey)
    if stored is None:
        return None
    return StoredOffset(part.id, part.log.current_offset, stored)


def store_consumer_offset(ctx: Context, req: rq.StoreConsumerOffset):
    """None, or an awaitable of None once the offset is on disk (durable offsets)."""
    part, ckey = _offset_target(ctx, req, write=True)
    return ctx.server.state.store_offset(part, ckey, req.offset)


def delete_consumer_offset(ctx: Context, req: rq.DeleteConsumerOffset):
    """None, or an awaitable of None once the deletion is on disk (durable offsets)."""
    part, ckey = _offset_target(ctx, req, write=True)
    return ctx.server.state.delete_offset(part, ckey)
