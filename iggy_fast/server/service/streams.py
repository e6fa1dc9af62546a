"""Streams, topics, partitions and segments (PROTOCOL.md §5.5-§5.7).

Permission comes before existence (lookup.py): a caller who could not see the stream or
topic had it existed gets 41 whether it exists or not, so names cannot be probed. Permitted
callers get what Iggy answers: None (an empty reply) for a missing stream or topic on a
read, 1009 / 2010 on a write. A topic is answered as a TopicInfo: the topic with the option
entries the server derived for it. A refused topic option is logged with the key and value.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

from iggy_fast.protocol import requests as rq
from iggy_fast.protocol.errors import InvalidOptionValue, InvalidTopicSize, UnsupportedOptionKey
from iggy_fast.protocol.results import StreamInfo, TopicInfo
from iggy_fast.server import options as topic_options
from iggy_fast.server.service import Context, lookup

log = logging.getLogger("iggy_fast.streams")


def topic_info(topic) -> TopicInfo:
    explicit = {entry[1].decode("utf-8", "replace") for entry in topic.explicit}
    return TopicInfo(topic, topic_options.derived_entries(topic.settings, explicit))


def stream_info(stream) -> StreamInfo:
    topics = sorted(stream.topics.values(), key=lambda t: t.id)
    return StreamInfo(stream, [topic_info(t) for t in topics])


# -- streams ---------------------------------------------------------------------------------

def get_stream(ctx: Context, req: rq.GetStream) -> StreamInfo | None:
    s = lookup.stream(ctx, req.stream, "read_stream")
    return stream_info(s) if s is not None else None


def get_streams(ctx: Context, req: rq.GetStreams) -> list:
    ctx.server.authz.require_global(ctx.client, "read_streams")
    return sorted(ctx.server.state.streams.values(), key=lambda s: s.id)


async def create_stream(ctx: Context, req: rq.CreateStream) -> StreamInfo:
    ctx.server.authz.require_global(ctx.client, "manage_streams")
    return stream_info(await ctx.server.state.create_stream(req.name, ctx.now))


def _managed_stream(ctx: Context, ident):
    return lookup.existing_stream(ctx, ident, "manage_stream")


async def update_stream(ctx: Context, req: rq.UpdateStream) -> None:
    _managed_stream(ctx, req.stream)
    await ctx.server.state.update_stream(req.stream, req.name)


async def delete_stream(ctx: Context, req: rq.DeleteStream) -> None:
    _managed_stream(ctx, req.stream)
    await ctx.server.state.delete_stream(req.stream)


async def purge_stream(ctx: Context, req: rq.PurgeStream) -> None:
    _managed_stream(ctx, req.stream)
    await ctx.server.state.purge_stream(req.stream)


# -- topics ----------------------------------------------------------------------------------

@contextmanager
def _options_logged(ctx: Context):
    """Log a refused topic option (its message names the key and the value): the reply can
    carry only the code."""
    try:
        yield
    except (InvalidOptionValue, UnsupportedOptionKey, InvalidTopicSize) as e:
        log.warning("client %s (%s): topic options refused: %s", ctx.client.id,
                    ctx.client.address, e)
        raise


def get_topic(ctx: Context, req: rq.GetTopic) -> TopicInfo | None:
    t = lookup.topic(ctx, req.stream, req.topic, "read_topic")
    return topic_info(t) if t is not None else None


def get_topics(ctx: Context, req: rq.GetTopics) -> list[TopicInfo]:
    s = lookup.stream(ctx, req.stream, "read_topics")
    if s is None:
        return []
    return [topic_info(t) for t in sorted(s.topics.values(), key=lambda t: t.id)]


async def create_topic(ctx: Context, req: rq.CreateTopic) -> TopicInfo:
    stream = lookup.existing_stream(ctx, req.stream, "manage_topics")
    with _options_logged(ctx):
        topic = await ctx.server.state.create_topic(stream.id, req.name, req.partitions_count,
                                                    req.options, ctx.now)
    return topic_info(topic)


def _managed_topic(ctx: Context, stream_ident, topic_ident):
    return lookup.existing_topic(ctx, stream_ident, topic_ident, "manage_topic")


async def update_topic(ctx: Context, req: rq.UpdateTopic) -> None:
    topic = _managed_topic(ctx, req.stream, req.topic)
    with _options_logged(ctx):
        await ctx.server.state.update_topic(topic.stream.id, topic.id, req.name, req.options)


async def delete_topic(ctx: Context, req: rq.DeleteTopic) -> None:
    topic = _managed_topic(ctx, req.stream, req.topic)
    await ctx.server.state.delete_topic(topic.stream.id, topic.id)


async def purge_topic(ctx: Context, req: rq.PurgeTopic) -> None:
    topic = _managed_topic(ctx, req.stream, req.topic)
    await ctx.server.state.purge_topic(topic.stream.id, topic.id)


# -- partitions and segments -----------------------------------------------------------------

async def create_partitions(ctx: Context, req: rq.CreatePartitions) -> None:
    topic = _managed_topic(ctx, req.stream, req.topic)
    await ctx.server.state.create_partitions(topic.stream.id, topic.id, req.count, ctx.now)


async def delete_partitions(ctx: Context, req: rq.DeletePartitions) -> None:
    topic = _managed_topic(ctx, req.stream, req.topic)
    await ctx.server.state.delete_partitions(topic.stream.id, topic.id, req.count)


def delete_segments(ctx: Context, req: rq.DeleteSegments) -> None:
    topic = _managed_topic(ctx, req.stream, req.topic)
    partition = ctx.server.state.partition(topic, req.partition_id)
    partition.log.delete_oldest_segments(req.count)
