"""The protocol's tables, defined once for the server and the client (PROTOCOL.md §1-§2).

Every command has a numeric code (§2). On the wire a replicated command (a write) carries no
code: its operation byte names it (§1.4); everything else travels as operation 2
(NonReplicated) with the code in the request header. Some replies start with a result section
(§1.6). A login failure, or a replicated request sent before login, is answered by an Eviction
frame with a reason (§1.7) that the client turns into an error code.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

SERVER_VERSION = "0.11.0"
# Packed as the SDK packs it: major << 20 | minor << 10 | patch.
PROTOCOL_VERSION = (0 << 20) | (11 << 10) | 0
# The oldest client version accepted: the same major.minor, any patch.
PROTOCOL_VERSION_MIN = PROTOCOL_VERSION & ~0x3FF

HEADER_SIZE = 256
MAX_FRAME_SIZE = 64 * 1024 * 1024      # a larger announced frame closes the connection


class Operation(IntEnum):
    """The operation byte of a request header; a reply echoes it."""
    REGISTER = 1
    NON_REPLICATED = 2
    LOGOUT = 3


# GetPartitionLeaders (an iggy-fast extension): each partition's leader node and its address
# for the asking client's transport, so our client sends straight to the leader.
GET_PARTITION_LEADERS = 9000


class Command(NamedTuple):
    code: int
    name: str
    operation: int        # the operation byte that carries it (2: NonReplicated)
    auth: bool            # needs a logged-in session


# code, name, operation byte (2 = NonReplicated), needs login.
COMMANDS: dict[int, Command] = {c.code: c for c in (
    Command(1, "ping", 2, False),
    Command(10, "get_stats", 2, True),
    Command(11, "get_snapshot_file", 2, True),
    Command(12, "get_cluster_metadata", 2, True),
    Command(13, "describe_options", 2, True),
    Command(20, "get_me", 2, True),
    Command(21, "get_client", 2, True),
    Command(22, "get_clients", 2, True),
    Command(31, "get_user", 2, True),
    Command(32, "get_users", 2, True),
    Command(33, "create_user", 141, True),
    Command(34, "delete_user", 143, True),
    Command(35, "update_user", 142, True),
    Command(36, "update_permissions", 145, True),
    Command(37, "change_password", 144, True),
    Command(39, "logout", 3, False),
    Command(40, "login", 1, False),
    Command(41, "get_personal_access_tokens", 2, True),
    Command(42, "create_personal_access_token", 146, True),
    Command(43, "delete_personal_access_token", 147, True),
    Command(100, "poll_messages", 2, True),
    # The official SDK (0.9.0), once GetClusterMetadata lists several nodes, routes its
    # auto-committing polls (its `poll_routing`): RoutePoll (103, PollMessages' body) asks
    # where to poll and is answered [32-byte route token][a node, as in §5.1.4]; the SDK
    # opens a second connection to that node, logs in, sends the token back (BindPollRoute,
    # 14) and polls there with RoutedPoll (104, PollMessages' body and answer).
    Command(14, "bind_poll_route", 2, True),
    Command(103, "route_poll", 2, True),
    Command(104, "routed_poll", 2, True),
    Command(101, "send_messages", 160, True),
    Command(102, "flush_unsaved_buffer", 2, True),
    Command(120, "get_consumer_offset", 2, True),
    Command(121, "store_consumer_offset", 161, True),
    Command(122, "delete_consumer_offset", 162, True),
    Command(200, "get_stream", 2, True),
    Command(201, "get_streams", 2, True),
    Command(202, "create_stream", 128, True),
    Command(203, "delete_stream", 130, True),
    Command(204, "update_stream", 129, True),
    Command(205, "purge_stream", 131, True),
    Command(300, "get_topic", 2, True),
    Command(301, "get_topics", 2, True),
    Command(302, "create_topic", 132, True),
    Command(303, "delete_topic", 134, True),
    Command(304, "update_topic", 133, True),
    Command(305, "purge_topic", 135, True),
    Command(402, "create_partitions", 136, True),
    Command(403, "delete_partitions", 137, True),
    Command(503, "delete_segments", 138, True),
    Command(600, "get_consumer_group", 2, True),
    Command(601, "get_consumer_groups", 2, True),
    Command(602, "create_consumer_group", 139, True),
    Command(603, "delete_consumer_group", 140, True),
    Command(604, "join_consumer_group", 148, True),
    Command(605, "leave_consumer_group", 149, True),
    Command(606, "sync_consumer_group", 2, True),
    # iggy-fast's own commands, at 9000 and up (codes Iggy does not use); an Iggy server
    # answers them as any unknown code (InvalidCommand, 3). docs/protocol.md §5.8.
    Command(GET_PARTITION_LEADERS, "get_partition_leaders", 2, True),
)}

# The legacy login codes: never sent by a 0.11 client; answered with Eviction 15.
LEGACY_LOGIN_CODES = frozenset({38, 44})

# Replicated operations name their command (§1.4); the client sends a code by its operation.
OPERATION_COMMANDS: dict[int, int] = {c.operation: c.code for c in COMMANDS.values()
                                      if c.operation not in (Operation.REGISTER,
                                                             Operation.NON_REPLICATED)}
COMMAND_OPERATIONS: dict[int, int] = {c.code: c.operation for c in COMMANDS.values()}

# Replies to these operations start with a result section (§1.6); Register only when its
# body is not empty.
RESULT_FRAMED = frozenset(set(range(128, 138)) | set(range(139, 150)) | {161, 162})

# Requests whose body must be empty (§5).
EMPTY_BODY = frozenset({1, 10, 12, 20, 22, 32, 39, 41, 201})


def carries_body_checksum(operation: int) -> bool:
    """Register, Logout and metadata writes carry xxh3-64 of their body (§1.2)."""
    return operation in (Operation.REGISTER, Operation.LOGOUT) or 128 <= operation <= 149


def valid_reply_operation(operation: int) -> bool:
    """What the client accepts in a reply's operation byte (§1.4)."""
    return operation in (0, 1, 2, 3) or 64 <= operation <= 68 or 128 <= operation <= 149 \
        or 160 <= operation <= 162


class EvictionReason(IntEnum):
    """Why an Eviction frame ends a session (§1.7)."""
    NO_SESSION = 1
    CLIENT_RELEASE_TOO_LOW = 2
    CLIENT_RELEASE_TOO_HIGH = 3
    INVALID_REQUEST_OPERATION = 4
    INVALID_REQUEST_BODY = 5
    INVALID_REQUEST_BODY_SIZE = 6
    SESSION_TOO_LOW = 7
    SESSION_RELEASE_MISMATCH = 8
    INVALID_CREDENTIALS = 9
    INVALID_TOKEN = 10
    USER_INACTIVE = 11
    SESSION_ERROR = 12
    STALE_CLIENT = 13
    INCOMPATIBLE_PROTOCOL = 14
    MALFORMED_LOGIN = 15


# The error code a client raises for each eviction reason, as the official SDK does.
EVICTION_ERROR_CODES: dict[int, int] = {
    1: 40, 2: 3, 3: 3, 4: 3, 5: 3, 6: 3, 7: 40, 8: 40, 9: 42, 10: 53, 11: 40, 12: 40,
    13: 30, 14: 14003, 15: 4,
}

# Transport numbers in client records (GetClients, §5.1.6).
TRANSPORTS = {"TCP": 1, "QUIC": 2, "HTTP": 3, "WebSocket": 4}

# How a send picks its partition (§7.6): the partitioning kind byte.
BALANCED, PARTITION_ID, MESSAGES_KEY = 1, 2, 3
# Where a poll starts (§7.5): the polling strategy kind byte.
OFFSET, TIMESTAMP, FIRST, LAST, NEXT = 1, 2, 3, 4, 5
# The partition id of an empty poll reply whose group member owns no partition (fenced, §5.8).
FENCED_PARTITION = 0xFFFFFFFF
# DescribeOptions scopes (§5.1.5).
TOPIC_SCOPE, STREAM_SCOPE, USER_SCOPE = 1, 2, 3

# The flags of a permissions block, in wire order (§3.1): the global flags, then per stream
# its flags and per topic of it the topic's.
GLOBAL_PERMISSION_FLAGS = ("manage_servers", "read_servers", "manage_users", "read_users",
                           "manage_streams", "read_streams", "manage_topics", "read_topics",
                           "poll_messages", "send_messages")
STREAM_PERMISSION_FLAGS = ("manage_stream", "read_stream", "manage_topics", "read_topics",
                           "poll_messages", "send_messages")
TOPIC_PERMISSION_FLAGS = ("manage_topic", "read_topic", "poll_messages", "send_messages")
