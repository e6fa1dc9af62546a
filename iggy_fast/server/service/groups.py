"""Consumer groups (PROTOCOL.md §5.8).

Permissions follow Iggy: everything here needs read access to the topic (its get_topic rule),
checked before the topic is looked up (lookup.py), except Sync, which only answers the caller
about itself: to a caller who may not read the topic it answers None (not a member) whether
the stream, topic and group exist or not.
"""

from __future__ import annotations

from iggy_fast.protocol import requests as rq
from iggy_fast.protocol.errors import (ConsumerGroupIdNotFound, StreamIdNotFound,
                                       TopicIdNotFound)
from iggy_fast.protocol.results import GroupAssignment
from iggy_fast.server.service import Context, lookup


def _topic(ctx: Context, req):
    return lookup.existing_topic(ctx, req.stream, req.topic, "read_topic")


def get_consumer_group(ctx: Context, req: rq.GetConsumerGroup):
    return ctx.server.groups.find(_topic(ctx, req), req.group)


def get_consumer_groups(ctx: Context, req: rq.GetConsumerGroups) -> list:
    return ctx.server.groups.list(_topic(ctx, req))


async def create_consumer_group(ctx: Context, req: rq.CreateConsumerGroup):
    return await ctx.server.groups.create(_topic(ctx, req), req.name)


async def delete_consumer_group(ctx: Context, req: rq.DeleteConsumerGroup) -> None:
    await ctx.server.groups.delete(_topic(ctx, req), req.group)


def join_consumer_group(ctx: Context, req: rq.JoinConsumerGroup):
    """None, or in a cluster an awaitable of None (the membership is written to etcd)."""
    return ctx.server.groups.join(ctx.client, _topic(ctx, req), req.group)


def leave_consumer_group(ctx: Context, req: rq.LeaveConsumerGroup):
    """None, or in a cluster an awaitable of None."""
    return ctx.server.groups.leave(ctx.client, _topic(ctx, req), req.group)


def sync_consumer_group(ctx: Context, req: rq.SyncConsumerGroup) -> GroupAssignment | None:
    # Self-scoped, so no permission rule (as Iggy): it only tells the caller its own
    # assignment, and only a member (who needed read access to join) has one. A caller who
    # may not read the topic learns nothing of what exists: None, as for a non-member.
    stream, topic, sid, tid = lookup.resolve(ctx, req.stream, req.topic)
    visible = ctx.server.authz.allowed(ctx.client, "read_topic", sid, tid)
    if topic is None:
        if not visible:
            return None
        raise StreamIdNotFound() if stream is None else TopicIdNotFound()
    group = ctx.server.groups.find(topic, req.group)
    if group is None:
        if not visible:
            return None
        raise ConsumerGroupIdNotFound()
    synced = ctx.server.groups.sync(ctx.client, topic, req.group)
    if synced is None:
        return None
    generation, partitions = synced
    return GroupAssignment(generation, partitions)
