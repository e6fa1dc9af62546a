"""Streams, topics, partitions and segments: PROTOCOL.md §5.5-§5.7.

Records: a Stream record is [id u32][created_at u64][topics_count u32][size u64][messages u64]
[name Name][options_len u32][options]; StreamDetails appends its Topic records. A Topic record
is [id u32][created_at u64][partitions_count u32][message_expiry u64][compression u8]
[max_topic_size u64][size u64][messages u64][name Name][options u32+TLV][derived u32+TLV];
TopicDetails appends 40-byte Partition records.
"""

from __future__ import annotations

from iggy_fast._wire import Reader, Writer
from iggy_fast.protocol.errors import UnsupportedOptionKey
from iggy_fast.server import options as topic_options
from iggy_fast.server.dispatch import command


def _no_options(r: Reader) -> None:
    # Streams accept no option keys (PROTOCOL.md §9.3).
    if r.remaining:
        if topic_options.parse_tlv(r.rest()):
            raise UnsupportedOptionKey()


def stream_record(w: Writer, s) -> Writer:
    w.u32(s.id).u64(s.created_at).u32(len(s.topics)).u64(s.size_bytes).u64(s.messages_count)
    return w.name(s.name).u32(0)


def topic_record(w: Writer, t) -> Writer:
    st = t.settings
    w.u32(t.id).u64(t.created_at).u32(len(t.partitions)).u64(st["message_expiry"])
    w.u8(st["compression"]).u64(st["max_topic_size"]).u64(t.size_bytes).u64(t.messages_count)
    w.name(t.name)
    explicit = topic_options.encode_tlv(t.explicit)
    derived = topic_options.derived_block(st, {e[1].decode("utf-8", "replace")
                                               for e in t.explicit})
    return w.u32(len(explicit)).raw(explicit).u32(len(derived)).raw(derived)


def stream_details(s) -> bytearray:
    w = stream_record(Writer(), s)
    for t in sorted(s.topics.values(), key=lambda t: t.id):
        topic_record(w, t)
    return w.buf


def topic_details(t) -> bytearray:
    w = topic_record(Writer(), t)
    for p in sorted(t.partitions.values(), key=lambda p: p.id):
        log = p.log
        w.u32(p.id).u64(p.created_at).u32(len(log.segments)).u64(log.current_offset)
        w.u64(log.size_bytes).u64(log.messages_count)
    return w.buf


# -- streams ---------------------------------------------------------------------------

@command(200, "get_stream")
def get_stream(server, client, r: Reader, now: int):
    s = server.state.find_stream(r.identifier())
    if s is None:
        return None
    server.authz.require(client, "read_stream", s.id)
    return stream_details(s)


@command(201, "get_streams")
def get_streams(server, client, r: Reader, now: int):
    server.authz.require_global(client, "read_streams")
    w = Writer()
    for s in sorted(server.state.streams.values(), key=lambda s: s.id):
        stream_record(w, s)
    return w.buf


@command(202, "create_stream")
async def create_stream(server, client, r: Reader, now: int):
    server.authz.require_global(client, "manage_streams")
    name = r.name()
    _no_options(r)
    return stream_details(await server.state.create_stream(name, now))


@command(204, "update_stream")
async def update_stream(server, client, r: Reader, now: int):
    ident = r.identifier()
    name = r.name()
    _no_options(r)
    server.authz.require(client, "manage_stream", server.state.stream(ident).id)
    await server.state.update_stream(ident, name)


@command(203, "delete_stream")
async def delete_stream(server, client, r: Reader, now: int):
    ident = r.identifier()
    r.expect_end()
    server.authz.require(client, "manage_stream", server.state.stream(ident).id)
    await server.state.delete_stream(ident)


@command(205, "purge_stream")
async def purge_stream(server, client, r: Reader, now: int):
    ident = r.identifier()
    r.expect_end()
    server.authz.require(client, "manage_stream", server.state.stream(ident).id)
    await server.state.purge_stream(ident)


# -- topics ----------------------------------------------------------------------------

@command(300, "get_topic")
def get_topic(server, client, r: Reader, now: int):
    stream_ident, topic_ident = r.identifier(), r.identifier()    # the whole body, first
    s = server.state.find_stream(stream_ident)
    t = server.state.find_topic(s, topic_ident) if s is not None else None
    if t is None:
        return None
    server.authz.require(client, "read_topic", s.id, t.id)
    return topic_details(t)


@command(301, "get_topics")
def get_topics(server, client, r: Reader, now: int):
    s = server.state.find_stream(r.identifier())
    if s is None:
        return b"\x00\x00\x00\x00"
    server.authz.require(client, "read_topics", s.id)
    topics = sorted(s.topics.values(), key=lambda t: t.id)
    w = Writer().u32(len(topics))
    for t in topics:
        topic_record(w, t)
    return w.buf


@command(302, "create_topic")
async def create_topic(server, client, r: Reader, now: int):
    stream_ident = r.identifier()
    partitions = r.u32()
    name = r.name()
    entries = topic_options.parse_tlv(r.rest())
    server.authz.require(client, "manage_topics", server.state.stream(stream_ident).id)
    return topic_details(await server.state.create_topic(stream_ident, name, partitions,
                                                         entries, now))


def _topic_for_management(server, client, r: Reader):
    stream_ident, topic_ident = r.identifier(), r.identifier()
    topic = server.state.topic(stream_ident, topic_ident)
    server.authz.require(client, "manage_topic", topic.stream.id, topic.id)
    return topic


@command(304, "update_topic")
async def update_topic(server, client, r: Reader, now: int):
    topic = _topic_for_management(server, client, r)
    name = r.name()
    entries = topic_options.parse_tlv(r.rest())
    await server.state.update_topic(topic.stream.id, topic.id, name, entries)


@command(303, "delete_topic")
async def delete_topic(server, client, r: Reader, now: int):
    topic = _topic_for_management(server, client, r)
    r.expect_end()
    await server.state.delete_topic(topic.stream.id, topic.id)


@command(305, "purge_topic")
async def purge_topic(server, client, r: Reader, now: int):
    topic = _topic_for_management(server, client, r)
    r.expect_end()
    await server.state.purge_topic(topic.stream.id, topic.id)


# -- partitions and segments -----------------------------------------------------------

@command(402, "create_partitions")
async def create_partitions(server, client, r: Reader, now: int):
    topic = _topic_for_management(server, client, r)
    count = r.u32()
    r.expect_end()
    await server.state.create_partitions(topic.stream.id, topic.id, count, now)


@command(403, "delete_partitions")
async def delete_partitions(server, client, r: Reader, now: int):
    topic = _topic_for_management(server, client, r)
    count = r.u32()
    r.expect_end()
    await server.state.delete_partitions(topic.stream.id, topic.id, count)


@command(503, "delete_segments")
def delete_segments(server, client, r: Reader, now: int):
    topic = _topic_for_management(server, client, r)
    partition = server.state.partition(topic, r.u32())
    count = r.u32()
    r.expect_end()
    partition.log.delete_oldest_segments(count)
