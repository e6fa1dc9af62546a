"""Typed results that are not model objects: what a service function answers besides streams,
topics, users, clients and groups (which the codecs read by attribute, see binary.py).

Named tuples, like the requests: a codec encodes them for its transport.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Stats(NamedTuple):
    """GetStats (§5.1.2): the process, the machine and the data, as Iggy reports them."""
    process_id: int
    cpu_usage: float            # % of one core since the start
    total_cpu_usage: float      # % of the machine (load average per core)
    memory_usage: int
    total_memory: int
    available_memory: int
    run_time: int               # µs
    start_time: int             # µs epoch
    read_bytes: int
    written_bytes: int
    messages_size_bytes: int
    streams_count: int
    topics_count: int
    partitions_count: int
    segments_count: int
    messages_count: int
    clients_count: int
    consumer_groups_count: int
    hostname: str
    os_name: str
    os_version: str
    kernel_version: str
    server_version: str
    server_semver: int          # major * 1_000_000 + minor * 1000 + patch
    threads_count: int
    free_disk_space: int
    total_disk_space: int


class ClusterNode(NamedTuple):
    name: str
    ip: str
    tcp_port: int
    quic_port: int
    http_port: int
    websocket_port: int
    role: int                   # 0 leader, 1 follower
    status: int                 # 0 healthy


class ClusterMetadata(NamedTuple):
    name: str
    nodes: list[ClusterNode]


class PartitionLeader(NamedTuple):
    """One partition of GetPartitionLeaders' answer (9000, an iggy-fast extension)."""
    partition_id: int
    epoch: int                  # the leader epoch: grows with every change of leader
    node: str                   # the leader's node name; "" when it has no live leader now
    address: str                # "host:port" of that node for the asked transport; "" none


class PollRoute(NamedTuple):
    """RoutePoll's answer (103): where the SDK polls, and the token it sends back there."""
    token: bytes                # 32 bytes
    node: ClusterNode


class OptionInfo(NamedTuple):
    """One DescribeOptions entry (§5.1.5)."""
    key: str
    kind: int
    default: bytes              # in the kind's encoding
    description: str


class Session(NamedTuple):
    """A successful login."""
    user_id: int
    session: int


class Sent(NamedTuple):
    """Where a SendMessages batch went."""
    stream_id: int
    topic_id: int
    partition_id: int
    base_offset: int


class Polled(NamedTuple):
    """A poll's answer. `chunks` are stored batches as storage gives them (bytes-likes, or
    FileRegions to sendfile); a codec passes them through, never per message."""
    partition_id: int           # codes.FENCED_PARTITION: the member owns no partition
    current_offset: int
    count: int
    chunks: list


class StoredOffset(NamedTuple):
    partition_id: int
    current_offset: int
    stored_offset: int


class GroupAssignment(NamedTuple):
    """SyncConsumerGroup: the calling member's partitions."""
    generation: int
    partitions: list[int]


class TopicInfo(NamedTuple):
    """A topic with the option entries the server derived for it (the catalog keys the
    client did not set, with their resolved values: §5.6 derived_options)."""
    topic: Any
    derived: list[tuple[int, bytes, int, bytes]]


class StreamInfo(NamedTuple):
    """A stream with its topics, for StreamDetails."""
    stream: Any
    topics: list[TopicInfo]
