"""Consumer groups (PROTOCOL.md §5.8).

Permissions follow Iggy: everything here needs read access to the topic (its get_topic rule),
except Sync, which only answers the caller about itself.
"""

from __future__ import annotations

from iggy_fast.protocol import requests as rq
from iggy_fast.protocol.results import GroupAssignment
from iggy_fast.server.service import Context


def _topic(ctx: Context, req):
    topic = ctx.server.state.topic(req.stream, req.topic)
    ctx.server.authz.require(ctx.client, "read_topic", topic.stream.id, topic.id)
    return topic


def get_consumer_group(ctx: Context, req: rq.GetConsumerGroup):
    return ctx.server.groups.find(_topic(ctx, req), req.group)


def get_consumer_groups(ctx: Context, req: rq.GetConsumerGroups) -> list:
    return ctx.server.groups.list(_topic(ctx, req))


def create_consumer_group(ctx: Context, req: rq.CreateConsumerGroup):
    return ctx.server.groups.create(_topic(ctx, req), req.name)


def delete_consumer_group(ctx: Context, req: rq.DeleteConsumerGroup) -> None:
    ctx.server.groups.delete(_topic(ctx, req), req.group)


def join_consumer_group(ctx: Context, req: rq.JoinConsumerGroup) -> None:
    ctx.server.groups.join(ctx.client, _topic(ctx, req), req.group)


def leave_consumer_group(ctx: Context, req: rq.LeaveConsumerGroup) -> None:
    ctx.server.groups.leave(ctx.client, _topic(ctx, req), req.group)


def sync_consumer_group(ctx: Context, req: rq.SyncConsumerGroup) -> GroupAssignment | None:
    # Self-scoped, so no permission rule (as Iggy): it only tells the caller its own
    # assignment, and only a member (who needed read access to join) has one.
    topic = ctx.server.state.topic(req.stream, req.topic)
    synced = ctx.server.groups.sync(ctx.client, topic, req.group)
    if synced is None:
        return None
    generation, partitions = synced
    return GroupAssignment(generation, partitions)
