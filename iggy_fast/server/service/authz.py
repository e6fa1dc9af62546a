"""Authorization: may this client do that, on that stream or topic? (PROTOCOL.md §8.2)

A user's permissions arrive as the wire block of §3.1 and are parsed once per change into a
`Grants` object; every check is then a few set lookups. Root (id 0) may do everything; a user
without permissions may do nothing but the self-scoped commands. A denial raises Unauthorized
(41). The rules are those of Iggy's permissioner (core/metadata/src/permissioner), flag for
flag; PROTOCOL.md §8.2 only adds that one's own user record is readable without read_users,
which Iggy does too. A global flag covers every stream; a stream entry covers its topics:

  action          commands                                   allowed by
  read_servers    10 stats, 21 client, 22 clients            g.read_servers, g.manage_servers
  read_users      31 user (not oneself), 32 users            g.read_users, g.manage_users
  manage_users    33-36, 37 (another user's password)        g.manage_users
  read_streams    201 streams                                g.read_streams, g.manage_streams
  manage_streams  202 create stream                          g.manage_streams
  read_stream     200 stream                                 read_streams; s.read_stream,
                                                             s.manage_stream
  manage_stream   203-205 delete/update/purge stream         g.manage_streams; s.manage_stream
  read_topics     301 topics                                 g.read_streams, g.manage_streams,
                                                             g.read_topics, g.manage_topics;
                                                             s.read_stream, s.manage_stream,
                                                             s.read_topics, s.manage_topics
  manage_topics   302 create topic                           g.manage_streams, g.manage_topics;
                                                             s.manage_stream, s.manage_topics
  read_topic      300 topic, 600-605 consumer groups         read_topics; t.read_topic,
                                                             t.manage_topic
  manage_topic    303-305 topic, 402/403 partitions,         manage_topics; t.manage_topic
                  503 segments
  poll            100 poll, 120-122 consumer offsets         read_topics; g/s/t.poll_messages;
                                                             t.read_topic, t.manage_topic
  send            101 send (and 102 flush)                   manage_topics; g/s/t.send_messages;
                                                             t.manage_topic

Reading streams does not imply sending; managing servers or users implies nothing about
streams. Self-scoped commands need only a login: 20 me, 31 oneself, 37 one's own password,
39 logout, 41-43 one's own tokens, 606 sync (one's own assignment), 12 and 13.
"""

from __future__ import annotations

from iggy_fast.protocol.codes import (GLOBAL_PERMISSION_FLAGS, STREAM_PERMISSION_FLAGS,
                                      TOPIC_PERMISSION_FLAGS)
from iggy_fast.protocol.errors import InvalidCommand, Unauthorized

ROOT_ID = 0



KNOWN_FLAGS = frozenset(GLOBAL_PERMISSION_FLAGS + STREAM_PERMISSION_FLAGS
                        + TOPIC_PERMISSION_FLAGS)


class Flags:
    __slots__ = ("names",)

    def __init__(self, names=()):
        self.names = frozenset(names)

    def __getattr__(self, name):
        # A misspelt flag in a rule must fail loudly, not quietly read as "not granted".
        if name not in KNOWN_FLAGS:
            raise AttributeError(name)
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
                raise InvalidCommand("permissions block too short")
            chosen = [n for n, b in zip(names, block[pos:pos + len(names)]) if b]
            pos += len(names)
            return chosen

        def byte():
            nonlocal pos
            if pos >= len(block):
                raise InvalidCommand("permissions block too short")
            pos += 1
            return block[pos - 1]

        def u32():
            nonlocal pos
            if pos + 4 > len(block):
                raise InvalidCommand("permissions block too short")
            pos += 4
            return int.from_bytes(block[pos - 4:pos], "little")

        glob = Flags(flags(GLOBAL_PERMISSION_FLAGS))
        streams = {}
        more = byte()
        while more:
            sid = u32()
            names = flags(STREAM_PERMISSION_FLAGS)
            topics = {}
            more_topics = byte()
            while more_topics:
                tid = u32()
                topics[tid] = Flags(flags(TOPIC_PERMISSION_FLAGS))
                more_topics = byte()
            streams[sid] = StreamGrants(names, topics)
            more = byte()
        if pos != len(block):
            raise InvalidCommand("bytes after the permissions block")
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
            raise Unauthorized()

    def require(self, client, action: str, stream_id=None, topic_id=None) -> None:
        if not self.allowed(client, action, stream_id, topic_id):
            raise Unauthorized()
