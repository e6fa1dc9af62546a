"""The permission matrix against the service layer directly, in process, with no transport.

The same cases as the TCP matrix (permission_cases.py): a real `Server` on a temporary data
dir (real State, Users, Tokens, Groups), users created with a permissions block of one flag,
logged in through the login service, then every command's service function called with its
typed request. Each must succeed or raise exactly Unauthorized; any other error fails the
test. Stream flags are also probed against another stream, topic flags against the other
topic of the stream: there they allow nothing. This is what lets another transport (HTTP)
trust the service functions: the rules are enforced there, not in the binary decoding.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid

import pytest

from iggy_fast import _wire
from iggy_fast.config import load_config
from iggy_fast.protocol import requests as rq
from iggy_fast.protocol.codes import (FIRST, GLOBAL_PERMISSION_FLAGS, PARTITION_ID,
                                      STREAM_PERMISSION_FLAGS, TOPIC_PERMISSION_FLAGS)
from iggy_fast.protocol.errors import Unauthorized
from iggy_fast.server.core import Server
from iggy_fast.server.service import (Context, groups, messages, session, streams, system,
                                      users)
from permission_cases import ALWAYS, CASES

PASSWORD = "secret-pw"
ROOT_PASSWORD = "root-secret"
CONSUMER = 1
ACTIVE = 1



def _u(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _now() -> int:
    return time.time_ns() // 1000


def _flags(names, flag: str | None) -> bytes:
    return bytes(name == flag for name in names)


def permissions_block(case, sid: int, tid: int) -> bytes | None:
    """The case's one flag as a §3.1 block: global, on stream sid, or on its topic tid."""
    if case.level is None:
        return None
    glob = _flags(GLOBAL_PERMISSION_FLAGS, case.flag if case.level == "global" else None)
    if case.level == "global":
        return glob + b"\x00"
    stream = sid.to_bytes(4, "little") + _flags(STREAM_PERMISSION_FLAGS,
                                                case.flag if case.level == "stream" else None)
    if case.level == "stream":
        topics = b"\x00"
    else:
        topics = b"\x01" + tid.to_bytes(4, "little") + _flags(TOPIC_PERMISSION_FLAGS, case.flag) + b"\x00"
    return glob + b"\x01" + stream + topics + b"\x00"


def _batch(count: int) -> memoryview:
    messages = [(0, f"m{i}".encode(), b"", 0) for i in range(count)]
    return memoryview(_wire.build_batch(messages, _now()))


def _send(s, t, count: int) -> rq.SendMessages:
    return rq.SendMessages(s, t, PARTITION_ID, (0).to_bytes(4, "little"), count, _batch(count))


async def call(server, client, fn, req):
    """A service call as the dispatcher makes it: the result, awaited if it is awaitable."""
    result = fn(Context(server, client, _now()), req)
    if inspect.isawaitable(result):
        result = await result
    return result


async def login(server, username: str, password: str):
    client = server.connect("TCP", "127.0.0.1:50000")
    await call(server, client, session.login, rq.Login((username, password), None))
    return client


class World:
    """What one user is probed against: stream s (topics t and t2) and a user to manage."""

    def __init__(self, s, t, victim):
        self.s, self.t, self.victim = s, t, victim


async def build_world(server, root) -> tuple[World, int, int]:
    s, victim = _u("pm"), _u("victim")
    sid = (await call(server, root, streams.create_stream, rq.CreateStream(s))).stream.id
    tid = (await call(server, root, streams.create_topic, rq.CreateTopic(s, 2, "t", []))).topic.id
    await call(server, root, streams.create_topic, rq.CreateTopic(s, 1, "t2", []))
    for topic in ("t", "t2"):
        await call(server, root, messages.send_messages, _send(s, topic, 2))
        for group in ("g", "g2"):
            await call(server, root, groups.create_consumer_group,
                       rq.CreateConsumerGroup(s, topic, group))
    await call(server, root, users.create_user, rq.CreateUser(victim, PASSWORD, ACTIVE, None))
    return World(s, "t", victim), sid, tid


def operations(w: World, me: str):
    """(name, service function, request), in the TCP test's order: each destructive command
    comes after what needs the thing it destroys."""
    s, t = w.s, w.t
    return [
        ("ping", system.ping, rq.Ping()),
        ("me", system.get_me, rq.GetMe()),
        ("own_user", users.get_user, rq.GetUser(me)),
        ("own_password", users.change_password, rq.ChangePassword(me, PASSWORD, PASSWORD)),
        ("tokens", users.create_personal_access_token,
         rq.CreatePersonalAccessToken(_u("tok")[:20], 0)),
        ("stats", system.get_stats, rq.GetStats()),
        ("clients", system.get_clients, rq.GetClients()),
        ("client", system.get_client, rq.GetClient(1)),
        ("users", users.get_users, rq.GetUsers()),
        ("user", users.get_user, rq.GetUser(w.victim)),
        ("create_user", users.create_user, rq.CreateUser(_u("made"), PASSWORD, ACTIVE, None)),
        ("update_user", users.update_user, rq.UpdateUser(w.victim, w.victim, None)),
        ("update_permissions", users.update_permissions, rq.UpdatePermissions(w.victim, None)),
        ("change_password", users.change_password,
         rq.ChangePassword(w.victim, PASSWORD, PASSWORD)),
        ("streams", streams.get_streams, rq.GetStreams()),
        ("create_stream", streams.create_stream, rq.CreateStream(_u("made"))),
        ("stream", streams.get_stream, rq.GetStream(s)),
        ("topics", streams.get_topics, rq.GetTopics(s)),
        ("topic", streams.get_topic, rq.GetTopic(s, t)),
        ("groups", groups.get_consumer_groups, rq.GetConsumerGroups(s, t)),
        ("group", groups.get_consumer_group, rq.GetConsumerGroup(s, t, "g")),
        ("create_group", groups.create_consumer_group,
         rq.CreateConsumerGroup(s, t, _u("made"))),
        ("join", groups.join_consumer_group, rq.JoinConsumerGroup(s, t, "g")),
        ("sync", groups.sync_consumer_group, rq.SyncConsumerGroup(s, t, "g")),
        ("leave", groups.leave_consumer_group, rq.LeaveConsumerGroup(s, t, "g")),
        ("send", messages.send_messages, _send(s, t, 1)),
        ("poll", messages.poll_messages,
         rq.PollMessages(CONSUMER, 7, s, t, 0, FIRST, 0, 1, False)),
        ("store_offset", messages.store_consumer_offset,
         rq.StoreConsumerOffset(CONSUMER, 7, s, t, 0, 0)),
        ("get_offset", messages.get_consumer_offset, rq.GetConsumerOffset(CONSUMER, 7, s, t, 0)),
        ("delete_offset", messages.delete_consumer_offset,
         rq.DeleteConsumerOffset(CONSUMER, 7, s, t, 0)),
        ("create_topic", streams.create_topic, rq.CreateTopic(s, 1, _u("made"), [])),
        ("update_topic", streams.update_topic, rq.UpdateTopic(s, t, t, [])),
        ("update_stream", streams.update_stream, rq.UpdateStream(s, s)),
        ("create_partitions", streams.create_partitions, rq.CreatePartitions(s, t, 1)),
        ("delete_partitions", streams.delete_partitions, rq.DeletePartitions(s, t, 1)),
        ("delete_segments", streams.delete_segments, rq.DeleteSegments(s, t, 0, 1)),
        ("purge_topic", streams.purge_topic, rq.PurgeTopic(s, t)),
        ("purge_stream", streams.purge_stream, rq.PurgeStream(s)),
        ("delete_group", groups.delete_consumer_group, rq.DeleteConsumerGroup(s, t, "g2")),
        ("delete_topic", streams.delete_topic, rq.DeleteTopic(s, t)),
        ("delete_stream", streams.delete_stream, rq.DeleteStream(s)),
        ("delete_user", users.delete_user, rq.DeleteUser(w.victim)),
    ]


async def probe(server, username: str, world: World) -> set[str]:
    """The commands this user may run against `world`; any error but Unauthorized escapes
    and fails the test."""
    client = await login(server, username, PASSWORD)
    allowed = set()
    for name, fn, req in operations(world, username):
        try:
            await call(server, client, fn, req)
            allowed.add(name)
        except Unauthorized:
            pass
    server.disconnect(client)
    return allowed


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    cfg = load_config(environ={})
    cfg["system"]["path"] = str(tmp_path_factory.mktemp("service-data"))
    cfg["root"]["password"] = ROOT_PASSWORD
    server = Server(cfg)

    async def run_all():
        await server.start()
        root = await login(server, cfg["root"]["username"], ROOT_PASSWORD)
        results = {}
        for case in CASES:
            world, sid, tid = await build_world(server, root)
            user = _u("u")
            await call(server, root, users.create_user,
                       rq.CreateUser(user, PASSWORD, ACTIVE, permissions_block(case, sid, tid)))
            elsewhere = None
            if case.level == "stream":        # the same commands on another stream
                other, _, _ = await build_world(server, root)
                elsewhere = await probe(server, user, other)
            elif case.level == "topic":       # ... on the other topic of the same stream
                elsewhere = await probe(server, user, World(world.s, "t2", world.victim))
            results[case.id] = await probe(server, user, world), elsewhere
        return results

    try:
        yield asyncio.run(run_all())
    finally:
        server.close()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_service_allows_exactly_what_iggy_allows(matrix, case):
    allowed, elsewhere = matrix[case.id]
    assert allowed - ALWAYS == case.expected, (
        f"extra: {sorted(allowed - ALWAYS - case.expected)}, "
        f"missing: {sorted(case.expected - allowed)}")
    assert ALWAYS <= allowed, sorted(ALWAYS - allowed)
    if case.level in ("stream", "topic"):
        assert elsewhere - ALWAYS == set(), sorted(elsewhere - ALWAYS)
