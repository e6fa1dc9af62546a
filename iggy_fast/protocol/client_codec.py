"""The client's half of the binary codec: typed arguments to request bodies, reply bodies to
typed results (models.py). The server's half (body to request, result to body) is binary.py;
both use the compiled cursors of `_wire`, and the layouts are PROTOCOL.md §3, §5 and §7.

Encoders are named after the command and return the request body (bytes). A reference to a
stream, topic, group or user is an identifier, `int | str`; a string of decimal digits is sent
as the numeric id, as the official SDK does (§3). Decoders are named `read_*`, take the reply
payload (the result section already cut by ClientCore) and return a model; a payload that does
not parse raises UndecodableReply naming the command.

Reply conventions (§6): a get of one missing object answers an empty body (None here), a list
answers records back to back (GetTopics alone has a count first), a create answers the
created object.
"""

from __future__ import annotations

import datetime
import struct

from iggy_fast._wire import Reader, Writer
from iggy_fast.protocol.binary import encode_tlv, parse_tlv
from iggy_fast.protocol.codes import (BALANCED, MESSAGES_KEY, PARTITION_ID, TRANSPORTS,
                                      PROTOCOL_VERSION)
from iggy_fast.protocol.errors import IggyError, UndecodableReply
from iggy_fast.protocol.models import (ClientInfo, ClientInfoDetails,
                                       ConsumerGroup, ConsumerGroupDetails,
                                       ConsumerGroupMember, ConsumerGroupRef, ConsumerOffset,
                                       Identity, OptionSpec, Partition, Permissions,
                                       PersonalAccessToken, PolledMessages,
                                       RawPersonalAccessToken, Sent, Stream, StreamDetails,
                                       Topic, TopicDetails, User, UserDetails)
from iggy_fast.protocol.results import (ClusterMetadata, ClusterNode, GroupAssignment,
                                        PartitionLeader, Stats)

Ident = int | str

CONSUMER, CONSUMER_GROUP = 1, 2
_TRANSPORT_NAMES = {v: k for k, v in TRANSPORTS.items()}
_F32 = struct.Struct("<f")


def ident(value: Ident) -> Ident:
    """An identifier as the wire carries it: digits-only strings become numeric ids."""
    if isinstance(value, str):
        if value.isdigit() and value.isascii():
            value = int(value)
        elif not 0 < len(value.encode()) < 256:
            raise ValueError(f"identifier {value!r} must be 1..255 UTF-8 bytes")
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"identifier {value!r} must be an int or a str")
    if isinstance(value, int) and not 0 <= value < 2 ** 32:
        raise ValueError(f"numeric identifier {value} outside 0..2**32-1")
    return value


def _w(*idents: Ident) -> Writer:
    w = Writer()
    for i in idents:
        w.identifier(ident(i))
    return w


def microseconds(value) -> int:
    """A duration as µs: a timedelta, or an int already in µs."""
    if isinstance(value, datetime.timedelta):
        return value // datetime.timedelta(microseconds=1)
    return int(value)


# -- encoders: users, tokens, system --------------------------------------------------------

def login_body(username: str, password: str, sdk: str = "iggy-fast",
               version: str = "0.1.0") -> bytes:
    """§5.2.1 (ClientCore.login builds the same bytes; this one is for golden tests)."""
    secret = password.encode()
    return (Writer().u32(PROTOCOL_VERSION).name(sdk).name(version).name(username)
            .u8(len(secret)).raw(secret).u32(0).getvalue())


def describe_options(scope: int) -> bytes:
    return Writer().u8(scope).getvalue()


def get_partition_leaders(stream: Ident, topic: Ident, transport: int) -> bytes:
    """GetPartitionLeaders (9000, an iggy-fast extension); `transport` as codes.TRANSPORTS."""
    return _w(stream, topic).u8(transport).getvalue()


def get_client(client_id: int) -> bytes:
    return Writer().u32(client_id).getvalue()


def user_ref(user: Ident) -> bytes:
    """GetUser and DeleteUser."""
    return _w(user).getvalue()


def _permissions(w: Writer, permissions: Permissions | None) -> Writer:
    if permissions is None:
        return w.u8(0)
    block = permissions.encode()
    return w.u8(1).u32(len(block)).raw(block)


def create_user(username: str, password: str, status: int = 1,
                permissions: Permissions | None = None) -> bytes:
    secret = password.encode()
    if len(secret) > 255:
        raise ValueError("password longer than 255 bytes")
    w = Writer().name(username).u8(len(secret)).raw(secret).u8(status)
    return _permissions(w, permissions).getvalue()


def update_user(user: Ident, username: str | None = None, status: int | None = None) -> bytes:
    w = _w(user)
    w = w.u8(0) if username is None else w.u8(1).name(username)
    w = w.u8(0) if status is None else w.u8(1).u8(status)
    return w.getvalue()


def update_permissions(user: Ident, permissions: Permissions | None) -> bytes:
    return _permissions(_w(user), permissions).getvalue()


def change_password(user: Ident, current: str, new: str) -> bytes:
    cur, nxt = current.encode(), new.encode()
    return _w(user).u8(len(cur)).raw(cur).u8(len(nxt)).raw(nxt).getvalue()


def create_personal_access_token(name: str, expiry: int = 0) -> bytes:
    """`expiry`: µs duration (or a timedelta); 0 = the server's default, U64_MAX = never."""
    return Writer().name(name).u64(microseconds(expiry)).getvalue()


def delete_personal_access_token(name: str) -> bytes:
    return Writer().name(name).getvalue()


# -- encoders: streams, topics, partitions, segments ---------------------------------------

def create_stream(name: str) -> bytes:
    return Writer().name(name).getvalue()


def stream_ref(stream: Ident) -> bytes:
    """GetStream, DeleteStream, PurgeStream, GetTopics."""
    return _w(stream).getvalue()


def update_stream(stream: Ident, name: str) -> bytes:
    return _w(stream).name(name).getvalue()


def topic_ref(stream: Ident, topic: Ident) -> bytes:
    """GetTopic, DeleteTopic, PurgeTopic, GetConsumerGroups."""
    return _w(stream, topic).getvalue()


_U8, _BOOL, _U32, _U64, _STRING = 9, 3, 11, 12, 2


def topic_options(compression_algorithm: str | None = None, message_expiry=None,
                  max_topic_size: int | None = None, segment_size: int | None = None,
                  messages_required_to_save: int | None = None,
                  size_of_messages_required_to_save: int | None = None,
                  preallocate_segments: bool | None = None, durability: str | None = None,
                  consumer_offset_durability: str | None = None,
                  options: dict[str, str] | None = None) -> list:
    """The options TLV entries of CreateTopic/UpdateTopic (§9.3), in the kinds the official
    SDK sends them, sorted by key as it sends them; None leaves a key out (server default)."""
    entries = {}

    def put(key, kind, value: bytes):
        entries[key] = (_STRING, key.encode(), kind, value)
    if compression_algorithm is not None:
        put("compression_algorithm", _STRING, compression_algorithm.encode())
    if message_expiry is not None:
        put("message_expiry", _U64, microseconds(message_expiry).to_bytes(8, "little"))
    for key, value in (("max_topic_size", max_topic_size), ("segment_size", segment_size),
                       ("size_of_messages_required_to_save",
                        size_of_messages_required_to_save)):
        if value is not None:
            put(key, _U64, int(value).to_bytes(8, "little"))
    if messages_required_to_save is not None:
        put("messages_required_to_save", _U32,
            int(messages_required_to_save).to_bytes(4, "little"))
    if preallocate_segments is not None:
        put("preallocate_segments", _BOOL, bytes([bool(preallocate_segments)]))
    if durability is not None:
        put("durability", _STRING, durability.encode())
    if consumer_offset_durability is not None:
        put("consumer_offset_durability", _STRING, consumer_offset_durability.encode())
    for key, value in (options or {}).items():
        put(key, _STRING, str(value).encode())
    return [entries[k] for k in sorted(entries)]


def create_topic(stream: Ident, name: str, partitions_count: int, options=()) -> bytes:
    return (_w(stream).u32(partitions_count).name(name).raw(encode_tlv(options)).getvalue())


def update_topic(stream: Ident, topic: Ident, name: str, options=()) -> bytes:
    return _w(stream, topic).name(name).raw(encode_tlv(options)).getvalue()


def partitions(stream: Ident, topic: Ident, count: int) -> bytes:
    """CreatePartitions and DeletePartitions."""
    return _w(stream, topic).u32(count).getvalue()


def delete_segments(stream: Ident, topic: Ident, partition_id: int, count: int) -> bytes:
    return _w(stream, topic).u32(partition_id).u32(count).getvalue()


# -- encoders: groups, offsets, messages ---------------------------------------------------

def group_ref(stream: Ident, topic: Ident, group: Ident) -> bytes:
    """Get/Delete/Join/Leave/SyncConsumerGroup."""
    return _w(stream, topic, group).getvalue()


def create_consumer_group(stream: Ident, topic: Ident, name: str) -> bytes:
    return _w(stream, topic).name(name).getvalue()


def _offset_target(kind: int, consumer: Ident, stream: Ident, topic: Ident,
                   partition_id: int | None) -> Writer:
    w = Writer().u8(kind).identifier(ident(consumer))
    w.identifier(ident(stream)).identifier(ident(topic))
    return w.u8(0 if partition_id is None else 1).u32(partition_id or 0)


def get_consumer_offset(kind: int, consumer: Ident, stream: Ident, topic: Ident,
                        partition_id: int | None) -> bytes:
    return _offset_target(kind, consumer, stream, topic, partition_id).getvalue()


def store_consumer_offset(kind: int, consumer: Ident, stream: Ident, topic: Ident,
                          partition_id: int | None, offset: int) -> bytes:
    """Ends with the ack level the SDK always sends (1, quorum), as captured in §5.9."""
    return _offset_target(kind, consumer, stream, topic, partition_id).u64(offset).u8(1).getvalue()


def delete_consumer_offset(kind: int, consumer: Ident, stream: Ident, topic: Ident,
                           partition_id: int | None) -> bytes:
    return _offset_target(kind, consumer, stream, topic, partition_id).u8(1).getvalue()


def poll_messages(kind: int, consumer: Ident, stream: Ident, topic: Ident,
                  partition_id: int | None, strategy: int, value: int, count: int,
                  auto_commit: bool) -> bytes:
    """[Consumer][stream][topic][OptPart][strategy u8][value u64][count u32][auto_commit u8]."""
    w = _offset_target(kind, consumer, stream, topic, partition_id)
    return w.u8(strategy).u64(value).u32(count).u8(1 if auto_commit else 0).getvalue()


def send_messages(stream: Ident, topic: Ident, partitioning: int, value: bytes,
                  count: int) -> bytes:
    """The metadata part of SendMessages (§7.2); the batch follows as its own buffer.
    `partitioning` is BALANCED (value b""), PARTITION_ID (value u32 LE) or MESSAGES_KEY."""
    if partitioning not in (BALANCED, PARTITION_ID, MESSAGES_KEY):
        raise ValueError(f"partitioning kind {partitioning}")
    if len(value) > 255 or (partitioning == MESSAGES_KEY and not value):
        raise ValueError("a message key is 1..255 bytes")
    meta = _w(stream, topic).u8(partitioning).u8(len(value)).raw(value).u32(count).getvalue()
    return len(meta).to_bytes(4, "little") + meta


def flush_unsaved_buffer(stream: Ident, topic: Ident, partition_id: int, fsync: bool) -> bytes:
    return _w(stream, topic).u32(partition_id).u8(1 if fsync else 0).getvalue()


# -- decoders ------------------------------------------------------------------------------

def _decoder(what: str):
    """Turn a Reader overrun or a bad field in reply `what` into UndecodableReply."""
    def wrap(fn):
        def read(body):
            try:
                return fn(body)
            except UndecodableReply:
                raise
            except (IggyError, ValueError, IndexError, struct.error) as e:
                raise UndecodableReply(
                    f"the {what} reply does not decode ({e}); is the server an Iggy 0.11 "
                    f"server speaking PROTOCOL.md?") from None
        read.__name__ = fn.__name__
        read.__doc__ = fn.__doc__
        return read
    return wrap


def _list_of(what: str, read_one):
    """The decoder of a list reply: records back to back until the body ends, each read by
    `read_one(reader)`."""
    @_decoder(what)
    def read(body) -> list:
        r = Reader(body)
        out = []
        while r.remaining:
            out.append(read_one(r))
        return out
    return read


def _opt(read):
    """A get-one reply: an empty body is None (§6)."""
    def get(body):
        return read(body) if len(body) else None
    get.__name__ = read.__name__
    get.__doc__ = read.__doc__
    return get


@_decoder("login")
def read_identity(body) -> Identity:
    r = Reader(body)
    user_id, session = r.u32(), r.u64()
    version = ""
    if r.remaining:
        r.u32()
        version = r.name()
    return Identity(user_id, session, version)


@_decoder("get_stats")
def read_stats(body) -> Stats:
    r = Reader(body)
    process_id = r.u32()
    cpu = _F32.unpack(r.raw(4))[0]
    total_cpu = _F32.unpack(r.raw(4))[0]
    head = [r.u64() for _ in range(8)]
    streams, topics, parts, segments = (r.u32() for _ in range(4))
    messages = r.u64()
    clients, groups = r.u32(), r.u32()
    texts = [r.long_string() for _ in range(5)]
    semver = r.u32()
    r.raw(32 * r.u32())                 # cache metrics: not modelled
    threads = r.u32()
    free, total = r.u64(), r.u64()
    return Stats(process_id, cpu, total_cpu, *head, streams, topics, parts, segments,
                 messages, clients, groups, *texts, semver, threads, free, total)


@_decoder("get_cluster_metadata")
def read_cluster_metadata(body) -> ClusterMetadata:
    r = Reader(body)
    name = r.long_string()
    nodes = []
    for _ in range(r.u32()):
        node_name, ip = r.long_string(), r.long_string()
        ports = struct.unpack("<HHHH", r.raw(8))
        nodes.append(ClusterNode(node_name, ip, *ports, r.u8(), r.u8()))
    r.expect_end()
    return ClusterMetadata(name, nodes)


@_decoder("get_partition_leaders")
def read_partition_leaders(body) -> list[PartitionLeader]:
    r = Reader(body)
    out = [PartitionLeader(r.u32(), r.u64(), r.long_string(), r.long_string())
           for _ in range(r.u32())]
    r.expect_end()
    return out


@_decoder("describe_options")
def read_options(body) -> list[OptionSpec]:
    r = Reader(body)
    out = []
    for _ in range(r.u32()):
        key, kind = r.name(), r.u8()
        default = r.raw(r.u32())
        out.append(OptionSpec(key, kind, default, r.long_string()))
    r.expect_end()
    return out


def _client(r: Reader) -> tuple:
    cid, uid = r.u32(), r.u32()
    transport = _TRANSPORT_NAMES.get(r.u8(), "unknown")
    return cid, None if uid == 0xFFFFFFFF else uid, transport, r.long_string(), r.u32()


@_opt
@_decoder("get_client")
def read_client(body) -> ClientInfoDetails:
    r = Reader(body)
    fields = _client(r)
    refs = [ConsumerGroupRef(r.u32(), r.u32(), r.u32()) for _ in range(fields[-1])]
    r.expect_end()
    return ClientInfoDetails(*fields, consumer_groups=refs)


read_clients = _list_of("get_clients", lambda r: ClientInfo(*_client(r)))


def _user(r: Reader) -> tuple:
    uid, created, status, name = r.u32(), r.u64(), r.u8(), r.name()
    r.raw(r.u32())                      # user options: none defined
    return uid, created, status, name


@_decoder("user")
def _read_user_details(body) -> UserDetails:
    r = Reader(body)
    fields = _user(r)
    permissions = None
    if r.u8():
        permissions = Permissions.decode(r.raw(r.u32()))
    else:
        r.raw(3)                        # the no-permissions marker is four zero bytes (§5.3)
    r.expect_end()
    return UserDetails(*fields, permissions=permissions)


read_user = _opt(_read_user_details)
read_created_user = _read_user_details


read_users = _list_of("get_users", lambda r: User(*_user(r)))


read_tokens = _list_of("get_personal_access_tokens",
                       lambda r: PersonalAccessToken(r.name(), r.u64() or None))


@_decoder("create_personal_access_token")
def read_token(body) -> RawPersonalAccessToken:
    r = Reader(body)
    token = r.name()
    r.expect_end()
    return RawPersonalAccessToken(token)


def _stream(r: Reader) -> tuple:
    sid, created, topics, size, messages = r.u32(), r.u64(), r.u32(), r.u64(), r.u64()
    name = r.name()
    r.raw(r.u32())                      # stream options: none defined
    return sid, created, name, size, messages, topics


def _topic(r: Reader) -> Topic:
    tid, created, partitions, expiry = r.u32(), r.u64(), r.u32(), r.u64()
    compression, max_size, size, messages = r.u8(), r.u64(), r.u64(), r.u64()
    name = r.name()
    explicit = parse_tlv(r.raw(r.u32()))
    derived = parse_tlv(r.raw(r.u32()))
    return Topic(tid, created, name, size, messages, partitions, expiry, compression,
                 max_size, explicit, derived)


@_decoder("stream")
def _read_stream_details(body) -> StreamDetails:
    r = Reader(body)
    fields = _stream(r)
    topics = [_topic(r) for _ in range(fields[-1])]
    r.expect_end()
    return StreamDetails(*fields, topics=topics)


read_stream = _opt(_read_stream_details)
read_created_stream = _read_stream_details


read_streams = _list_of("get_streams", lambda r: Stream(*_stream(r)))


@_decoder("topic")
def _read_topic_details(body) -> TopicDetails:
    r = Reader(body)
    t = _topic(r)
    parts = [Partition(r.u32(), r.u64(), r.u32(), r.u64(), r.u64(), r.u64())
             for _ in range(t.partitions_count)]
    r.expect_end()
    return TopicDetails(t.id, t.created_at, t.name, t.size_bytes, t.messages_count,
                        t.partitions_count, t.message_expiry, t.compression_algorithm,
                        t.max_topic_size, t.options, t.derived_options, partitions=parts)


read_topic = _opt(_read_topic_details)
read_created_topic = _read_topic_details


@_decoder("get_topics")
def read_topics(body) -> list[Topic]:
    r = Reader(body)
    if not r.remaining:
        return []
    out = [_topic(r) for _ in range(r.u32())]
    r.expect_end()
    return out


def _group(r: Reader) -> tuple:
    gid, partitions, members = r.u32(), r.u32(), r.u32()
    return gid, r.name(), partitions, members


@_decoder("consumer group")
def _read_group_details(body) -> ConsumerGroupDetails:
    r = Reader(body)
    fields = _group(r)
    members = []
    for _ in range(fields[-1]):
        mid = r.u32()
        members.append(ConsumerGroupMember(mid, [r.u32() for _ in range(r.u32())]))
    r.expect_end()
    return ConsumerGroupDetails(*fields, members=members)


read_consumer_group = _opt(_read_group_details)
read_created_consumer_group = _read_group_details


read_consumer_groups = _list_of("get_consumer_groups",
                                lambda r: ConsumerGroup(*_group(r)))


@_opt
@_decoder("sync_consumer_group")
def read_assignment(body) -> GroupAssignment:
    r = Reader(body)
    generation = r.u64()
    parts = [r.u32() for _ in range(r.u32())]
    r.expect_end()
    return GroupAssignment(generation, parts)


@_opt
@_decoder("get_consumer_offset")
def read_consumer_offset(body) -> ConsumerOffset:
    r = Reader(body)
    offset = ConsumerOffset(r.u32(), r.u64(), r.u64())
    r.expect_end()
    return offset


def read_sent(body, count: int) -> Sent | None:
    """The SendMessages confirmation (§5.10) for a batch of `count` messages; None when the
    server reports no confirmation (an empty body or a count of 0)."""
    try:
        r = Reader(body)
        if not r.remaining or not (n := r.u32()):
            return None
        sent = Sent(r.u32(), r.u32(), r.u32(), r.u64(), count)
        r.raw(20 * (n - 1))
        r.expect_end()
        return sent
    except IggyError as e:
        raise UndecodableReply(f"the send_messages reply does not decode ({e})") from None


def read_polled(body) -> PolledMessages:
    try:
        return PolledMessages(body)
    except IggyError as e:
        raise UndecodableReply(f"the poll_messages reply does not decode ({e})") from None

