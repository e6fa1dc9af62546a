"""Streams, topics, partitions and segments (PROTOCOL.md §5.5-§5.7).

Reads answer None (an empty reply) for a stream or topic that does not exist, before any
permission check, as Iggy does; writes look the target up first (1009/2010) and then check
manage rights on it. A topic is answered as a TopicInfo: the topic with the option entries
the server derived for it.
"""

from __future__ import annotations

from iggy_fast.protocol import requests as rq
from iggy_fast.protocol.results import StreamInfo, TopicInfo
from iggy_fast.server import options as topic_options
from iggy_fast.server.service import Context


def topic_info(topic) -> TopicInfo:
    explicit = {entry[1].decode("utf-8", "replace") for entry in topic.explicit}
    return TopicInfo(topic, topic_options.derived_entries(topic.settings, explicit))


def stream_info(stream) -> StreamInfo:
    topics = sorted(stream.topics.values(), key=lambda t: t.id)
    return StreamInfo(stream, [topic_info(t) for t in topics])


# -- streams ---------------------------------------------------------------------------------

def get_stream(ctx: Context, req: rq.GetStream) -> StreamInfo | None:
    s = ctx.server.state.find_stream(req.stream)
    if s is None:
        return None
    ctx.server.authz.require(ctx.client, "read_stream", s.id)
    return stream_info(s)


def get_streams(ctx: Context, req: rq.GetStreams) -> list:
    ctx.server.authz.require_global(ctx.client, "read_streams")
    return sorted(ctx.server.state.streams.values(), key=lambda s: s.id)


def create_stream(ctx: Context, req: rq.CreateStream) -> StreamInfo:
    ctx.server.authz.require_global(ctx.client, "manage_streams")
    return stream_info(ctx.server.state.create_stream(req.name, ctx.now))


def _managed_stream(ctx: Context, ident):
    stream = ctx.server.state.stream(ident)
    ctx.server.authz.require(ctx.client, "manage_stream", stream.id)
    return stream


def update_stream(ctx: Context, req: rq.UpdateStream) -> None:
    _managed_stream(ctx, req.stream)
    ctx.server.state.update_stream(req.stream, req.name)


def delete_stream(ctx: Context, req: rq.DeleteStream) -> None:
    _managed_stream(ctx, req.stream)
    ctx.server.state.delete_stream(req.stream)


def purge_stream(ctx: Context, req: rq.PurgeStream) -> None:
    _managed_stream(ctx, req.stream)
    ctx.server.state.purge_stream(req.stream)


# -- topics ----------------------------------------------------------------------------------

def get_topic(ctx: Context, req: rq.GetTopic) -> TopicInfo | None:
    state = ctx.server.state
    s = state.find_stream(req.stream)
    t = state.find_topic(s, req.topic) if s is not None else None
    if t is None:
        return None
    ctx.server.authz.require(ctx.client, "read_topic", s.id, t.id)
    return topic_info(t)


def get_topics(ctx: Context, req: rq.GetTopics) -> list[TopicInfo]:
    s = ctx.server.state.find_stream(req.stream)
    if s is None:
        return []
    ctx.server.authz.require(ctx.client, "read_topics", s.id)
    return [topic_info(t) for t in sorted(s.topics.values(), key=lambda t: t.id)]


def create_topic(ctx: Context, req: rq.CreateTopic) -> TopicInfo:
    state = ctx.server.state
    ctx.server.authz.require(ctx.client, "manage_topics", state.stream(req.stream).id)
    return topic_info(state.create_topic(req.stream, req.name, req.partitions_count,
                                         req.options, ctx.now))


def _managed_topic(ctx: Context, stream_ident, topic_ident):
    topic = ctx.server.state.topic(stream_ident, topic_ident)
    ctx.server.authz.require(ctx.client, "manage_topic", topic.stream.id, topic.id)
    return topic


def update_topic(ctx: Context, req: rq.UpdateTopic) -> None:
    topic = _managed_topic(ctx, req.stream, req.topic)
    ctx.server.state.update_topic(topic.stream.id, topic.id, req.name, req.options)


def delete_topic(ctx: Context, req: rq.DeleteTopic) -> None:
    topic = _managed_topic(ctx, req.stream, req.topic)
    ctx.server.state.delete_topic(topic.stream.id, topic.id)


def purge_topic(ctx: Context, req: rq.PurgeTopic) -> None:
    topic = _managed_topic(ctx, req.stream, req.topic)
    ctx.server.state.purge_topic(topic.stream.id, topic.id)


# -- partitions and segments -----------------------------------------------------------------

def create_partitions(ctx: Context, req: rq.CreatePartitions) -> None:
    topic = _managed_topic(ctx, req.stream, req.topic)
    ctx.server.state.create_partitions(topic.stream.id, topic.id, req.count, ctx.now)


def delete_partitions(ctx: Context, req: rq.DeletePartitions) -> None:
    topic = _managed_topic(ctx, req.stream, req.topic)
    ctx.server.state.delete_partitions(topic.stream.id, topic.id, req.count)


def delete_segments(ctx: Context, req: rq.DeleteSegments) -> None:
    topic = _managed_topic(ctx, req.stream, req.topic)
    partition = ctx.server.state.partition(topic, req.partition_id)
    partition.log.delete_oldest_segments(req.count)
