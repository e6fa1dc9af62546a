"""The permission matrix's cases, shared by the TCP test (test_permissions.py, through the
official SDK) and the in-process test of the service layer (test_service_permissions.py).

Each case gives a user one flag, global, on a stream or on one of its topics (or nothing at
all), and the command families that flag must allow: exactly what Iggy's permissioner
(core/metadata/src/permissioner; PROTOCOL.md §8.2) allows, written out from its rules rather
than computed by the code under test. Both tests run the same named commands, so the names
below are theirs.
"""

from __future__ import annotations

from typing import NamedTuple

# Command families, by the rule that guards them.
SERVERS = {"stats", "clients", "client"}
READ_USERS = {"users", "user"}
MANAGE_USERS = {"create_user", "update_user", "update_permissions", "change_password",
                "delete_user"}
READ_STREAMS = {"streams"}
CREATE_STREAM = {"create_stream"}
READ_STREAM = {"stream"}
MANAGE_STREAM = {"update_stream", "purge_stream", "delete_stream"}
READ_TOPICS = {"topics"}
CREATE_TOPIC = {"create_topic"}
READ_TOPIC = {"topic", "groups", "group", "create_group", "join", "leave", "delete_group"}
MANAGE_TOPIC = {"update_topic", "purge_topic", "delete_topic", "create_partitions",
                "delete_partitions", "delete_segments"}
POLL = {"poll", "get_offset", "store_offset", "delete_offset"}
SEND = {"send"}
# Self-scoped: a login is all they need.
ALWAYS = {"ping", "me", "own_user", "own_password", "tokens", "sync"}

MANAGING_TOPIC = READ_TOPIC | MANAGE_TOPIC | POLL | SEND
READING_TOPIC = READ_TOPIC | POLL

GLOBAL_EXPECTED = {
    "manage_servers": SERVERS,
    "read_servers": SERVERS,
    "manage_users": READ_USERS | MANAGE_USERS,
    "read_users": READ_USERS,
    "manage_streams": (READ_STREAMS | CREATE_STREAM | READ_STREAM | MANAGE_STREAM | READ_TOPICS
                       | CREATE_TOPIC | MANAGING_TOPIC),
    "read_streams": READ_STREAMS | READ_STREAM | READ_TOPICS | READING_TOPIC,
    "manage_topics": READ_TOPICS | CREATE_TOPIC | MANAGING_TOPIC,
    "read_topics": READ_TOPICS | READING_TOPIC,
    "poll_messages": POLL,
    "send_messages": SEND,
}
STREAM_EXPECTED = {
    "manage_stream": READ_STREAM | MANAGE_STREAM | READ_TOPICS | CREATE_TOPIC | MANAGING_TOPIC,
    "read_stream": READ_STREAM | READ_TOPICS | READING_TOPIC,
    "manage_topics": READ_TOPICS | CREATE_TOPIC | MANAGING_TOPIC,
    "read_topics": READ_TOPICS | READING_TOPIC,
    "poll_messages": POLL,
    "send_messages": SEND,
}
TOPIC_EXPECTED = {
    "manage_topic": MANAGING_TOPIC,
    "read_topic": READING_TOPIC,
    "poll_messages": POLL,
    "send_messages": SEND,
}


class Case(NamedTuple):
    id: str
    level: str | None           # None (no permissions), "global", "stream" or "topic"
    flag: str | None
    expected: set[str]          # what the user may run beyond ALWAYS


CASES = ([Case("none", None, None, set())]
         + [Case(f"global-{f}", "global", f, e) for f, e in GLOBAL_EXPECTED.items()]
         + [Case(f"stream-{f}", "stream", f, e) for f, e in STREAM_EXPECTED.items()]
         + [Case(f"topic-{f}", "topic", f, e) for f, e in TOPIC_EXPECTED.items()])
