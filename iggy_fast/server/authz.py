"""Authorization: may this client do that, on that stream or topic? (PROTOCOL.md §8.2)

A user's permissions arrive as the wire block of §3.1 and are parsed once per change into a
`Grants` object; every check is then a few dictionary and attribute lookups. The rules are
Iggy's: a global flag covers every stream, a stream's flags cover its topics, and the
broader management flags imply the reading and messaging ones beneath them (a user who may
manage topics may also read them, poll and send). Root (id 0) may do everything. A denial
raises Unauthorized (41).

Actions for `require(client, action, stream_id, topic_id)`:
  read_stream, manage_stream, read_topics, manage_topics (create a topic in a stream),
  read_topic, manage_topic, poll, send.
Global checks `require_global(client, flag)`: read_servers, manage_servers, read_users,
manage_users, read_streams (list streams), manage_streams (create a stream).
"""

from __future__ import annotations

from iggy_fast.errors import IggyError

ROOT_ID = 0

GLOBAL_FLAGS = ("manage_servers", "read_servers", "manage_users", "read_users",
                "manage_streams", "read_streams", "manage_topics", "read_topics",
                "poll_messages", "send_messages")
STREAM_FLAGS = ("manage_stream", "read_stream", "manage_topics", "read_topics",
                "poll_messages", "send_messages")
TOPIC_FLAGS = ("manage_topic", "read_topic", "poll_messages", "send_messages")


class Flags:
    __slots__ = ("names",)

    def __init__(self, names=()):
        self.names = frozenset(names)

    def __getattr__(self, name):
        return name in object.__getattribute__(self, "names")


class StreamGrants(Flags):
    __slots__ = ("topics",)

    def __init__(self, names=(), topics=None):
        super().__init__(names)
        self.topics = topics or {}


class Grants:
    """A user's parsed permissions: global flags and per-stream / per-topic overrides."""

    def __init__(self, glob: Flags, streams: dict):
        self.glob = glob
        self.streams = streams

    @classmethod
    def parse(cls, block: bytes | None) -> "Grants":
        if block is None:
            return cls(Flags(), {})
        pos = 0

        def flags(names):
            nonlocal pos
            if pos + len(names) > len(block):
                raise IggyError.from_code(3, "permissions block too short")
            chosen = [n for n, b in zip(names, block[pos:pos + len(names)]) if b]
            pos += len(names)
            return chosen

        def byte():
            nonlocal pos
            if pos >= len(block):
                raise IggyError.from_code(3, "permissions block too short")
            pos += 1
            return block[pos - 1]

        def u32():
            nonlocal pos
            if pos + 4 > len(block):
                raise IggyError.from_code(3, "permissions block too short")
            pos += 4
            return int.from_bytes(block[pos - 4:pos], "little")

        glob = Flags(flags(GLOBAL_FLAGS))
        streams = {}
        more = byte()
        while more:
            sid = u32()
            names = flags(STREAM_FLAGS)
            topics = {}
            more_topics = byte()
            while more_topics:
                tid = u32()
                topics[tid] = Flags(flags(TOPIC_FLAGS))
                more_topics = byte()
            streams[sid] = StreamGrants(names, topics)
            more = byte()
        if pos != len(block):
            raise IggyError.from_code(3, "bytes after the permissions block")
        return cls(glob, streams)

    # -- the rules ---------------------------------------------------------------------

    def allows_global(self, flag: str) -> bool:
        g = self.glob
        return {
            "read_servers": g.read_servers or g.manage_servers,
            "manage_servers": g.manage_servers,
            "read_users": g.read_users or g.manage_users,
            "manage_users": g.manage_users,
            "read_streams": g.read_streams or g.manage_streams,
            "manage_streams": g.manage_streams,
        }[flag]

    def allows(self, action: str, sid, tid) -> bool:
        g = self.glob
        s = self.streams.get(sid)
        t = s.topics.get(tid) if s is not None else None
        if action == "read_stream":
            return g.read_streams or g.manage_streams or bool(
                s and (s.read_stream or s.manage_stream))
        if action == "manage_stream":
            return g.manage_streams or bool(s and s.manage_stream)
        if action == "read_topics":
            return (g.read_streams or g.manage_streams or g.read_topics or g.manage_topics
                    or bool(s and (s.manage_stream or s.read_stream or s.manage_topics
                                   or s.read_topics)))
        if action == "manage_topics":
            return g.manage_streams or g.manage_topics or bool(
                s and (s.manage_stream or s.manage_topics))
        if action == "read_topic":
            return self.allows("read_topics", sid, tid) or bool(
                t and (t.manage_topic or t.read_topic))
        if action == "manage_topic":
            return self.allows("manage_topics", sid, tid) or bool(t and t.manage_topic)
        if action == "poll":
            return (g.poll_messages or self.allows("read_topics", sid, tid)
                    or bool(s and s.poll_messages)
                    or bool(t and (t.manage_topic or t.read_topic or t.poll_messages)))
        if action == "send":
            return (g.send_messages or g.manage_streams or g.manage_topics
                    or bool(s and (s.manage_stream or s.manage_topics or s.send_messages))
                    or bool(t and (t.manage_topic or t.send_messages)))
        raise ValueError(f"unknown action {action}")


class Authorizer:
    def __init__(self, users):
        self.users = users
        self._grants: dict[int, Grants] = {}

    def forget(self, user_id: int) -> None:
        """Drop the cached grants of a user whose permissions changed or who was deleted."""
        self._grants.pop(user_id, None)

    def grants(self, user_id: int) -> Grants:
        g = self._grants.get(user_id)
        if g is None:
            user = self.users.by_id.get(user_id)
            g = Grants.parse(user.permissions if user is not None else None)
            self._grants[user_id] = g
        return g

    def allowed_global(self, client, flag: str) -> bool:
        if client.user_id == ROOT_ID:
            return True
        return client.user_id is not None and self.grants(client.user_id).allows_global(flag)

    def allowed(self, client, action: str, stream_id=None, topic_id=None) -> bool:
        if client.user_id == ROOT_ID:
            return True
        return (client.user_id is not None
                and self.grants(client.user_id).allows(action, stream_id, topic_id))

    def require_global(self, client, flag: str) -> None:
        if not self.allowed_global(client, flag):
            raise IggyError.from_code(41)

    def require(self, client, action: str, stream_id=None, topic_id=None) -> None:
        if not self.allowed(client, action, stream_id, topic_id):
            raise IggyError.from_code(41)
