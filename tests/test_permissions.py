"""The permission matrix: each global, stream and topic flag allows exactly what it names
(with Iggy's implications: managing implies reading, reading topics implies polling) and
nothing else; denials answer Unauthorized (41)."""

from __future__ import annotations

import uuid

import pytest
from apache_iggy import (Consumer, GlobalPermissions, IggyClient, Permissions, PollingStrategy,
                         StreamPermissions, TopicPermissions)
from apache_iggy import SendMessage as Message

OPS = ("stats", "users", "create_stream", "streams", "stream", "create_topic", "topic",
       "send", "poll")


async def probe(server, username, s, t):
    """The set of operations this user may perform on stream s / topic t."""
    c = IggyClient(server.address)
    await c.connect()
    await c.login_user(username, "secret-pw")
    calls = {
        "stats": lambda: c.get_stats(),
        "users": lambda: c.get_users(),
        "create_stream": lambda: c.create_stream(f"p-{uuid.uuid4().hex[:8]}"),
        "streams": lambda: c.get_streams(),
        "stream": lambda: c.get_stream(s),
        "create_topic": lambda: c.create_topic(stream=s, name=f"p-{uuid.uuid4().hex[:8]}",
                                               partitions_count=1),
        "topic": lambda: c.get_topic(s, t),
        "send": lambda: c.send_messages(s, t, 0, [Message("x")]),
        "poll": lambda: c.poll_messages(stream=s, topic=t, consumer=Consumer.Single(1),
                                        partition_id=0, polling_strategy=PollingStrategy.First(),
                                        count=1, auto_commit=False),
    }
    allowed = set()
    for name in OPS:
        try:
            await calls[name]()
            allowed.add(name)
        except RuntimeError as e:
            assert "nauthorized" in str(e) or "ermission" in str(e), (name, str(e))
    return allowed


@pytest.fixture
async def world(client, unique):
    s, t, other_t = unique("ps"), "t", "other"
    other_s = unique("po")
    for stream in (s, other_s):
        await client.create_stream(stream)
        await client.create_topic(stream=stream, name=t, partitions_count=1)
    await client.create_topic(stream=s, name=other_t, partitions_count=1)
    sid = (await client.get_stream(s)).id
    tid = (await client.get_topic(s, t)).id
    return s, t, other_s, other_t, sid, tid


async def make_user(client, permissions):
    name = f"u{uuid.uuid4().hex[:10]}"
    await client.create_user(name, "secret-pw", permissions=permissions)
    return name


GLOBAL_EXPECTED = {
    "manage_servers": {"stats"},
    "read_servers": {"stats"},
    "manage_users": {"users"},
    "read_users": {"users"},
    "manage_streams": {"create_stream", "streams", "stream", "create_topic", "topic", "send",
                       "poll"},
    "read_streams": {"streams", "stream", "topic", "poll"},
    "manage_topics": {"create_topic", "topic", "send", "poll"},
    "read_topics": {"topic", "poll"},
    "poll_messages": {"poll"},
    "send_messages": {"send"},
}


@pytest.mark.parametrize("flag", sorted(GLOBAL_EXPECTED))
async def test_each_global_flag(server, client, world, flag):
    s, t, *_ = world
    user = await make_user(client, Permissions(GlobalPermissions(**{flag: True})))
    assert await probe(server, user, s, t) == GLOBAL_EXPECTED[flag]


STREAM_EXPECTED = {
    "manage_stream": {"stream", "create_topic", "topic", "send", "poll"},
    "read_stream": {"stream", "topic", "poll"},
    "manage_topics": {"create_topic", "topic", "send", "poll"},
    "read_topics": {"topic", "poll"},
    "poll_messages": {"poll"},
    "send_messages": {"send"},
}


@pytest.mark.parametrize("flag", sorted(STREAM_EXPECTED))
async def test_each_stream_flag_applies_to_that_stream_only(server, client, world, flag):
    s, t, other_s, _, sid, _ = world
    perms = Permissions(GlobalPermissions(), {sid: StreamPermissions(**{flag: True})})
    user = await make_user(client, perms)
    assert await probe(server, user, s, t) == STREAM_EXPECTED[flag]
    assert await probe(server, user, other_s, t) == set()


TOPIC_EXPECTED = {
    "manage_topic": {"topic", "send", "poll"},
    "read_topic": {"topic", "poll"},
    "poll_messages": {"poll"},
    "send_messages": {"send"},
}


@pytest.mark.parametrize("flag", sorted(TOPIC_EXPECTED))
async def test_each_topic_flag_applies_to_that_topic_only(server, client, world, flag):
    s, t, _, other_t, sid, tid = world
    perms = Permissions(GlobalPermissions(), {
        sid: StreamPermissions(topics={tid: TopicPermissions(**{flag: True})})})
    user = await make_user(client, perms)
    assert await probe(server, user, s, t) == TOPIC_EXPECTED[flag]
    assert await probe(server, user, s, other_t) == set()


async def test_no_permissions_allows_only_oneself(server, client):
    user = await make_user(client, None)
    c = IggyClient(server.address)
    await c.connect()
    await c.login_user(user, "secret-pw")
    me = await c.get_user(user)
    assert me.username == user
    with pytest.raises(RuntimeError, match="nauthorized"):
        await c.get_user("iggy")
    await c.change_password(user, "secret-pw", "new-secret")
    await c.logout_user()
    await c.login_user(user, "new-secret")
    with pytest.raises(RuntimeError, match="nauthorized"):
        await c.change_password("iggy", "iggy", "hijacked")
