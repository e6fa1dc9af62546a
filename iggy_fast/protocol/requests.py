"""Typed requests: what each command asks for, whatever transport carried it.

A codec (binary.py for the TCP framing; a JSON one for HTTP) turns a request body into one of
these, and the server's service layer takes it from there. Named tuples: immutable, built in
one call, no per-instance dict. Stream, topic, group and user references are identifiers,
`int | str` (a numeric id or a name) as the wire carries them; a consumer is its kind
(1 consumer, 2 group) and identifier.
"""

from __future__ import annotations

from typing import NamedTuple

Ident = int | str
TlvEntry = tuple[int, bytes, int, bytes]        # (key kind, key, value kind, value)


# -- system -------------------------------------------------------------------------------

class Ping(NamedTuple):
    pass


class GetStats(NamedTuple):
    pass


class GetClusterMetadata(NamedTuple):
    pass


class DescribeOptions(NamedTuple):
    scope: int                  # codes.TOPIC_SCOPE, STREAM_SCOPE or USER_SCOPE


class GetPartitionLeaders(NamedTuple):
    """An iggy-fast extension (9000): where each partition of a topic is led."""
    stream: Ident
    topic: Ident
    transport: int              # codes.TRANSPORTS: 1 TCP, 2 QUIC, 3 HTTP, 4 WebSocket


class GetMe(NamedTuple):
    pass


class GetClient(NamedTuple):
    client_id: int


class GetClients(NamedTuple):
    pass


# -- session ------------------------------------------------------------------------------

class Login(NamedTuple):
    """A login whose body fits a password login, a token login, or both shapes (§5.2)."""
    credentials: tuple[str, str] | None     # (username, password)
    token: str | None


class Logout(NamedTuple):
    pass


# -- users and tokens ---------------------------------------------------------------------

class GetUser(NamedTuple):
    user: Ident


class GetUsers(NamedTuple):
    pass


class CreateUser(NamedTuple):
    username: str
    password: str
    status: int
    permissions: bytes | None   # the permissions block of §3.1, as stored


class DeleteUser(NamedTuple):
    user: Ident


class UpdateUser(NamedTuple):
    user: Ident
    username: str | None        # None: unchanged
    status: int | None


class UpdatePermissions(NamedTuple):
    user: Ident
    permissions: bytes | None


class ChangePassword(NamedTuple):
    user: Ident
    current: str
    new: str


class GetPersonalAccessTokens(NamedTuple):
    pass


class CreatePersonalAccessToken(NamedTuple):
    name: str
    expiry: int                 # µs duration; 0 = server default, u64::MAX = never


class DeletePersonalAccessToken(NamedTuple):
    name: str


# -- messages and offsets -----------------------------------------------------------------

class SendMessages(NamedTuple):
    stream: Ident
    topic: Ident
    partitioning: int           # codes.BALANCED, PARTITION_ID or MESSAGES_KEY
    partitioning_value: bytes   # the partition id (4 bytes LE) or the message key
    count: int
    batch: memoryview           # the batch where it was received (validated by the service)


class PollMessages(NamedTuple):
    consumer_kind: int
    consumer: Ident
    stream: Ident
    topic: Ident
    partition_id: int | None
    strategy: int               # codes.OFFSET, TIMESTAMP, FIRST, LAST or NEXT
    value: int
    count: int
    auto_commit: bool


class FlushUnsavedBuffer(NamedTuple):
    stream: Ident
    topic: Ident
    partition_id: int
    fsync: bool


class GetConsumerOffset(NamedTuple):
    consumer_kind: int
    consumer: Ident
    stream: Ident
    topic: Ident
    partition_id: int | None    # None: partition 0


class StoreConsumerOffset(NamedTuple):
    consumer_kind: int
    consumer: Ident
    stream: Ident
    topic: Ident
    partition_id: int | None
    offset: int


class DeleteConsumerOffset(NamedTuple):
    consumer_kind: int
    consumer: Ident
    stream: Ident
    topic: Ident
    partition_id: int | None


# -- streams, topics, partitions, segments ------------------------------------------------

class GetStream(NamedTuple):
    stream: Ident


class GetStreams(NamedTuple):
    pass


class CreateStream(NamedTuple):
    name: str


class DeleteStream(NamedTuple):
    stream: Ident


class UpdateStream(NamedTuple):
    stream: Ident
    name: str


class PurgeStream(NamedTuple):
    stream: Ident


class GetTopic(NamedTuple):
    stream: Ident
    topic: Ident


class GetTopics(NamedTuple):
    stream: Ident


class CreateTopic(NamedTuple):
    stream: Ident
    partitions_count: int
    name: str
    options: list[TlvEntry]


class DeleteTopic(NamedTuple):
    stream: Ident
    topic: Ident


class UpdateTopic(NamedTuple):
    stream: Ident
    topic: Ident
    name: str
    options: list[TlvEntry]


class PurgeTopic(NamedTuple):
    stream: Ident
    topic: Ident


class CreatePartitions(NamedTuple):
    stream: Ident
    topic: Ident
    count: int


class DeletePartitions(NamedTuple):
    stream: Ident
    topic: Ident
    count: int


class DeleteSegments(NamedTuple):
    stream: Ident
    topic: Ident
    partition_id: int
    count: int


# -- consumer groups ----------------------------------------------------------------------

class GetConsumerGroup(NamedTuple):
    stream: Ident
    topic: Ident
    group: Ident


class GetConsumerGroups(NamedTuple):
    stream: Ident
    topic: Ident


class CreateConsumerGroup(NamedTuple):
    stream: Ident
    topic: Ident
    name: str


class DeleteConsumerGroup(NamedTuple):
    stream: Ident
    topic: Ident
    group: Ident


class JoinConsumerGroup(NamedTuple):
    stream: Ident
    topic: Ident
    group: Ident


class LeaveConsumerGroup(NamedTuple):
    stream: Ident
    topic: Ident
    group: Ident


class SyncConsumerGroup(NamedTuple):
    stream: Ident
    topic: Ident
    group: Ident
