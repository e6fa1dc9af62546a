"""The permission matrix: each global, stream and topic flag allows exactly what Iggy's
permissioner allows (core/metadata/src/permissioner; PROTOCOL.md §8.2) and nothing else.

One user per flag (and one with no permissions) runs every command family through the official
SDK against a world of its own (a stream with two topics, groups, messages, a user to manage),
so that destructive commands can succeed where allowed. Every command must either succeed or
be refused with exactly Unauthorized (41). Stream flags are also probed against another
stream, topic flags against another topic: there they allow nothing. The expected sets
(permission_cases.py, shared with the in-process test of the service layer) are written out
from Iggy's rules, not computed by the code under test. All users run at once
against the module's one server.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from apache_iggy import (Consumer, GlobalPermissions, IggyClient, Permissions, PollingStrategy,
                         StreamPermissions, TopicPermissions)
from apache_iggy import SendMessage as Message

from iggy_fast._wire import Writer
from permission_cases import ALWAYS, CASES
from sdk_errors import SDK_TEXT

PASSWORD = "secret-pw"

def _u(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _offset(stream, topic) -> Writer:
    return Writer().u8(1).identifier(7).identifier(stream).identifier(topic).u8(1).u32(0)


def _topic_ids(stream, topic) -> Writer:
    return Writer().identifier(stream).identifier(topic)


class World:
    """What one user is probed against: stream s (topics t and t2) and a user to manage."""

    def __init__(self, s, t, victim):
        self.s, self.t, self.victim = s, t, victim


async def build_world(root) -> tuple[World, int, int]:
    s, victim = _u("pm"), _u("victim")
    await root.create_stream(s)
    await root.create_topic(stream=s, name="t", partitions_count=2)
    await root.create_topic(stream=s, name="t2", partitions_count=1)
    for topic in ("t", "t2"):
        await root.send_messages(s, topic, 0, [Message("m0"), Message("m1")])
        for group in ("g", "g2"):
            await root.create_consumer_group(s, topic, group)
    await root.create_user(victim, PASSWORD)
    sid = (await root.get_stream(s)).id
    tid = (await root.get_topic(s, "t")).id
    return World(s, "t", victim), sid, tid


def operations(c, w: World, me: str):
    """(name, call) in an order where each destructive command comes after what needs the
    thing it destroys."""
    s, t = w.s, w.t
    token = _u("tok")[:20]
    return [
        ("ping", lambda: c.ping()),
        ("me", lambda: c.send_binary_request(20, b"")),
        ("own_user", lambda: c.get_user(me)),
        ("own_password", lambda: c.change_password(me, PASSWORD, PASSWORD)),
        ("tokens", lambda: c.send_binary_request(42, Writer().name(token).u64(0).getvalue())),
        ("stats", lambda: c.get_stats()),
        ("clients", lambda: c.send_binary_request(22, b"")),
        ("client", lambda: c.send_binary_request(21, (1).to_bytes(4, "little"))),
        ("users", lambda: c.get_users()),
        ("user", lambda: c.get_user(w.victim)),
        ("create_user", lambda: c.create_user(_u("made"), PASSWORD)),
        ("update_user", lambda: c.update_user(w.victim, username=w.victim)),
        ("update_permissions", lambda: c.update_permissions(w.victim, None)),
        ("change_password", lambda: c.change_password(w.victim, PASSWORD, PASSWORD)),
        ("streams", lambda: c.get_streams()),
        ("create_stream", lambda: c.create_stream(_u("made"))),
        ("stream", lambda: c.get_stream(s)),
        ("topics", lambda: c.get_topics(s)),
        ("topic", lambda: c.get_topic(s, t)),
        ("groups", lambda: c.get_consumer_groups(s, t)),
        ("group", lambda: c.get_consumer_group(s, t, "g")),
        ("create_group", lambda: c.create_consumer_group(s, t, _u("made"))),
        ("join", lambda: c.join_consumer_group(s, t, "g")),
        ("sync", lambda: c.send_binary_request(606, _topic_ids(s, t).identifier("g")
                                              .getvalue())),
        ("leave", lambda: c.leave_consumer_group(s, t, "g")),
        ("send", lambda: c.send_messages(s, t, 0, [Message("x")])),
        ("poll", lambda: c.poll_messages(s, t, consumer=Consumer.Single(7), partition_id=0,
                                         polling_strategy=PollingStrategy.First(), count=1,
                                         auto_commit=False)),
        ("store_offset", lambda: c.send_binary_request(121, _offset(s, t).u64(0).u8(1)
                                                      .getvalue())),
        ("get_offset", lambda: c.send_binary_request(120, _offset(s, t).getvalue())),
        ("delete_offset", lambda: c.send_binary_request(122, _offset(s, t).u8(1).getvalue())),
        ("create_topic", lambda: c.create_topic(stream=s, name=_u("made"), partitions_count=1)),
        ("update_topic", lambda: c.update_topic(s, t, name=t)),
        ("update_stream", lambda: c.update_stream(s, s)),
        ("create_partitions", lambda: c.create_partitions(s, t, 1)),
        ("delete_partitions", lambda: c.delete_partitions(s, t, 1)),
        ("delete_segments", lambda: c.send_binary_request(503, _topic_ids(s, t).u32(0).u32(1)
                                                         .getvalue())),
        ("purge_topic", lambda: c.purge_topic(s, t)),
        ("purge_stream", lambda: c.purge_stream(s)),
        ("delete_group", lambda: c.delete_consumer_group(s, t, "g2")),
        ("delete_topic", lambda: c.delete_topic(s, t)),
        ("delete_stream", lambda: c.delete_stream(s)),
        ("delete_user", lambda: c.delete_user(w.victim)),
    ]


async def probe(server, username: str, world: World) -> set[str]:
    """The commands this user may run against `world`; anything but success or exactly
    Unauthorized fails the test."""
    c = IggyClient(server.address)
    await c.connect()
    await c.login_user(username, PASSWORD)
    allowed = set()
    for name, call in operations(c, world, username):
        try:
            await asyncio.wait_for(call(), 10)
            allowed.add(name)
        except RuntimeError as e:
            assert str(e) == SDK_TEXT[41], (username, name, str(e))
    return allowed


def sdk_permissions(case, sid: int, tid: int) -> Permissions | None:
    """The case's one flag as the SDK's permissions (on stream sid, or its topic tid)."""
    if case.level is None:
        return None
    if case.level == "global":
        return Permissions(GlobalPermissions(**{case.flag: True}))
    if case.level == "stream":
        return Permissions(GlobalPermissions(), {sid: StreamPermissions(**{case.flag: True})})
    return Permissions(GlobalPermissions(), {
        sid: StreamPermissions(topics={tid: TopicPermissions(**{case.flag: True})})})


async def run_case(server, limit, case):
    async with limit:
        root = IggyClient(server.address)
        await root.connect()
        await root.login_user("iggy", "iggy")
        world, sid, tid = await build_world(root)
        user = _u("u")
        await root.create_user(user, PASSWORD, permissions=sdk_permissions(case, sid, tid))
        elsewhere = None
        if case.level == "stream":        # the same commands on another stream
            other, _, _ = await build_world(root)
            elsewhere = await probe(server, user, other)
        elif case.level == "topic":       # ... on the other topic of the same stream
            elsewhere = await probe(server, user, World(world.s, "t2", world.victim))
        return await probe(server, user, world), elsewhere


@pytest.fixture(scope="module")
def matrix(server):
    async def run_all():
        limit = asyncio.Semaphore(6)
        results = await asyncio.gather(*(run_case(server, limit, case) for case in CASES))
        return {case.id: result for case, result in zip(CASES, results)}
    return asyncio.run(run_all())


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_flag_allows_exactly_what_iggy_allows(matrix, case):
    expected = case.expected
    allowed, elsewhere = matrix[case.id]
    assert allowed - ALWAYS == expected, (
        f"extra: {sorted(allowed - ALWAYS - expected)}, missing: {sorted(expected - allowed)}")
    assert ALWAYS <= allowed, sorted(ALWAYS - allowed)
    if case.level in ("stream", "topic"):
        assert elsewhere - ALWAYS == set(), sorted(elsewhere - ALWAYS)


async def test_own_record_and_password_need_no_permission(server, client, unique):
    """Oneself is readable and one's password changeable without permissions; for anyone
    else, known or not, the answer is Unauthorized (no probing for names)."""
    user = unique("self")
    await client.create_user(user, PASSWORD)
    c = IggyClient(server.address)
    await c.connect()
    await c.login_user(user, PASSWORD)
    assert (await c.get_user(user)).username == user
    for target in ("iggy", unique("nobody")):
        with pytest.raises(RuntimeError) as e:
            await c.get_user(target)
        assert str(e.value) == SDK_TEXT[41]
        with pytest.raises(RuntimeError) as e:
            await c.change_password(target, "iggy", "hijacked")
        assert str(e.value) == SDK_TEXT[41]
    await c.change_password(user, PASSWORD, "new-secret")
    await c.logout_user()
    await c.login_user(user, "new-secret")
    root = IggyClient(server.address)
    await root.connect()
    await root.login_user("iggy", "iggy")          # root's password did not change
