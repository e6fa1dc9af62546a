"""One codec, two directions: what the client's encoders write, the server's decoders
(protocol/binary.py) read back as the same request; what the server's encoders write, the
client's decoders read back as the same values. Property tests over generated arguments."""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from iggy_fast import _wire
from iggy_fast.protocol import binary
from iggy_fast.protocol import client_codec as codec
from iggy_fast.protocol.models import (GlobalPermissions, Permissions, StreamPermissions,
                                       TopicPermissions)

names = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=1,
                max_size=40).filter(lambda s: not s.isdigit() and len(s.encode()) < 256)
idents = st.one_of(st.integers(0, 2 ** 32 - 1), names)
u32 = st.integers(0, 2 ** 32 - 1)
u64 = st.integers(0, 2 ** 64 - 1)
flags = st.booleans()
permissions = st.builds(
    Permissions,
    st.builds(GlobalPermissions, *[flags] * 10),
    st.dictionaries(u32, st.builds(
        StreamPermissions, *[flags] * 6,
        topics=st.dictionaries(u32, st.builds(TopicPermissions, *[flags] * 4), max_size=3)),
        max_size=3))


@settings(max_examples=200, deadline=None)
@given(permissions)
def test_permissions_round_trip(p):
    assert Permissions.decode(p.encode()) == p


@settings(max_examples=100, deadline=None)
@given(names, st.text(min_size=3, max_size=40).filter(lambda s: len(s.encode()) < 256),
       st.sampled_from([1, 2]), st.one_of(st.none(), permissions))
def test_create_user(username, password, status, perms):
    req = binary.decode_create_user(codec.create_user(username, password, status, perms))
    assert (req.username, req.password, req.status) == (username, password, status)
    assert req.permissions == (None if perms is None else perms.encode())


@settings(max_examples=100, deadline=None)
@given(idents, st.one_of(st.none(), names), st.one_of(st.none(), st.sampled_from([1, 2])))
def test_update_user(user, username, status):
    req = binary.decode_update_user(codec.update_user(user, username, status))
    assert (req.user, req.username, req.status) == (user, username, status)


@settings(max_examples=100, deadline=None)
@given(idents, names, st.integers(1, 1000), st.one_of(st.none(), u64),
       st.one_of(st.none(), u64), st.one_of(st.none(), st.sampled_from(["none", "gzip"])),
       st.dictionaries(names, names, max_size=3))
def test_create_topic(stream, name, count, expiry, max_size, compression, extra):
    entries = codec.topic_options(compression, expiry, max_size, options=extra)
    req = binary.decode_create_topic(codec.create_topic(stream, name, count, entries))
    assert (req.stream, req.name, req.partitions_count) == (stream, name, count)
    assert req.options == entries


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([1, 2]), idents, idents, idents, st.one_of(st.none(), u32),
       st.integers(1, 5), u64, u32, st.booleans())
def test_poll_messages(kind, consumer, stream, topic, partition, strategy, value, count,
                       auto_commit):
    body = codec.poll_messages(kind, consumer, stream, topic, partition, strategy, value, count,
                               auto_commit)
    assert tuple(binary.decode_poll_messages(body)) == (
        kind, consumer, stream, topic, partition, strategy, value, count, auto_commit)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([1, 2]), idents, idents, idents, st.one_of(st.none(), u32), u64)
def test_offsets(kind, consumer, stream, topic, partition, offset):
    target = (kind, consumer, stream, topic, partition)
    assert tuple(binary.decode_store_consumer_offset(
        codec.store_consumer_offset(*target, offset))) == (*target, offset)
    assert tuple(binary.decode_get_consumer_offset(
        codec.get_consumer_offset(*target))) == target
    assert tuple(binary.decode_delete_consumer_offset(
        codec.delete_consumer_offset(*target))) == target


@settings(max_examples=100, deadline=None)
@given(idents, idents, st.sampled_from([1, 2, 3]), st.binary(min_size=1, max_size=255),
       st.lists(st.binary(max_size=50), min_size=1, max_size=20))
def test_send_messages(stream, topic, kind, key, payloads):
    value = {1: b"", 2: key[:4].ljust(4, b"\0"), 3: key}[kind]
    batch = _wire.build_batch([(i + 1, p, b"", 0) for i, p in enumerate(payloads)], 1)
    body = codec.send_messages(stream, topic, kind, value, len(payloads)) + bytes(batch)
    req = binary.decode_send_messages(body)
    assert (req.stream, req.topic, req.partitioning, req.partitioning_value, req.count) == \
        (stream, topic, kind, value, len(payloads))
    assert bytes(req.batch) == bytes(batch)


# -- results: the server's encoders, the client's decoders --------------------------------

@settings(max_examples=100, deadline=None)
@given(u32, u64, st.sampled_from([1, 2]), names, st.one_of(st.none(), permissions))
def test_user_details(uid, created, status, name, perms):
    user = SimpleNamespace(id=uid, created_at=created, status=status, username=name,
                           permissions=None if perms is None else perms.encode())
    details = codec.read_user(binary.encode_user_details(user))
    assert (details.id, details.created_at, details.status, details.username,
            details.permissions) == (uid, created, status, name, perms)
    (listed,) = codec.read_users(binary.encode_users([user]))
    assert (listed.id, listed.username) == (uid, name)


@settings(max_examples=100, deadline=None)
@given(u32, u64, names, u64, u64, st.integers(0, 5), st.integers(0, 4))
def test_stream_and_topic_details(sid, created, name, size, messages, topics_n, parts_n):
    def topic(i):
        log = SimpleNamespace(segments=[1], current_offset=i, size_bytes=size,
                              messages_count=messages)
        partitions = {p: SimpleNamespace(id=p, created_at=created, log=log)
                      for p in range(parts_n)}
        t = SimpleNamespace(id=i, created_at=created, name=f"{name[:30]}-{i}",
                            partitions=partitions, size_bytes=size, messages_count=messages,
                            explicit=[(2, b"k", 2, b"v")],
                            settings={"message_expiry": 7, "compression": 1,
                                      "max_topic_size": 2 ** 64 - 1})
        return SimpleNamespace(topic=t, derived=[(2, b"segment_size", 12, bytes(8))])
    infos = [topic(i) for i in range(topics_n)]
    stream = SimpleNamespace(id=sid, created_at=created, name=name, topics=infos,
                             size_bytes=size, messages_count=messages)
    details = codec.read_stream(binary.encode_stream_details(
        SimpleNamespace(stream=stream, topics=infos)))
    assert (details.id, details.name, details.topics_count) == (sid, name, topics_n)
    assert [t.name for t in details.topics] == [i.topic.name for i in infos]
    if infos:
        t = codec.read_topic(binary.encode_topic_details(infos[-1]))
        assert t.option("k") == b"v" and t.option("segment_size") == bytes(8)
        assert [p.id for p in t.partitions] == list(range(parts_n))
        assert [x.name for x in codec.read_topics(binary.encode_topics(infos))] == \
            [i.topic.name for i in infos]


@settings(max_examples=100, deadline=None)
@given(u32, names, st.dictionaries(u32, st.lists(u32, max_size=4), max_size=4))
def test_group_details(gid, name, assignment):
    topic = SimpleNamespace(partitions={0: None, 1: None})
    group = SimpleNamespace(id=gid, name=name, topic=topic, members=set(assignment),
                            assignment=assignment)
    details = codec.read_consumer_group(binary.encode_group_details(group))
    assert (details.id, details.name, details.members_count) == (gid, name, len(assignment))
    assert {m.id: m.partitions for m in details.members} == assignment
