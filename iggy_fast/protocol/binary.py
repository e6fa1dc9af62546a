"""The binary codec of the commands: request bodies to typed requests, results to reply bodies.

Built on the compiled cursors of `iggy_fast._wire` (Reader, Writer). Layouts are PROTOCOL.md
§5 (commands), §3 (primitives: Name, Identifier, Consumer, optional partition, TLV block) and
§7 (messages). Decoders take the request body (a memoryview into the receive buffer) and
return one request of `requests.py`; a body that is not exactly its command's layout (short,
malformed, or with bytes after it) raises InvalidCommand (3), and a login body that cannot be
a 0.11 login raises Eviction. Encoders take a result and return the reply payload: None
(empty body), a bytes-like object, or a list of pieces.

The hot path stays lean: a SendMessages request holds a memoryview of its batch where it was
received, and a poll reply is [head, *chunks] with the stored batches (bytes-likes or storage
FileRegions for sendfile) passed through untouched. No message becomes a Python object.

Model objects are read by attribute (duck-typed, so this module does not know the server):
  stream     id, created_at, name, topics (a sized collection), size_bytes, messages_count
  topic      id, created_at, name, partitions (dict id -> partition), size_bytes,
             messages_count, explicit (TLV entries the client set), settings (dict with
             message_expiry, compression, max_topic_size)
  partition  id, created_at, log (with segments (sized), current_offset, size_bytes,
             messages_count)
  user       id, created_at, status, username, permissions (the §3.1 block or None)
  client     id, user_id (None: not logged in), transport ("TCP", ...), address,
             groups (set of (stream_id, topic_id, group_id))
  group      id, name, topic (its .partitions), members (sized, member ids),
             assignment (dict member id -> list of partition ids)
"""

from __future__ import annotations

import struct

from iggy_fast._wire import Reader, Writer
from iggy_fast.protocol import requests as rq
from iggy_fast.protocol.codes import (PROTOCOL_VERSION, PROTOCOL_VERSION_MIN, SERVER_VERSION,
                                      STREAM_SCOPE, TOPIC_SCOPE, TRANSPORTS, USER_SCOPE,
                                      EvictionReason)
from iggy_fast.protocol.errors import (Eviction, IggyError, InvalidCommand,
                                       OptionsBlockTooLarge, UnsupportedOptionKey)

NOT_LOGGED_IN = 0xFFFFFFFF
MAX_OPTIONS_BLOCK = 100_000
MAX_OPTIONS_ENTRIES = 1024
POLL_ROUTE_TOKEN = 32       # RoutePoll's token: opaque to the SDK, which sends it back (14)

# -- the TLV block (§3): topic options, and the options no other command accepts ----------


def parse_tlv(block) -> list[tuple[int, bytes, int, bytes]]:
    """Split a TLV block into (key_kind, key, value_kind, value) entries."""
    if len(block) > MAX_OPTIONS_BLOCK:
        raise OptionsBlockTooLarge()
    out, pos, n = [], 0, len(block)
    while pos < n:
        entry = []
        for _ in range(2):
            if pos + 5 > n:
                raise InvalidCommand("truncated TLV entry")
            kind = block[pos]
            length = int.from_bytes(block[pos + 1:pos + 5], "little")
            if kind == 0 or not 1 <= length <= 255 or pos + 5 + length > n:
                raise InvalidCommand("bad TLV entry")
            entry += [kind, bytes(block[pos + 5:pos + 5 + length])]
            pos += 5 + length
        out.append(tuple(entry))
    if len(out) > MAX_OPTIONS_ENTRIES:
        raise OptionsBlockTooLarge()
    return out


def encode_tlv(entries) -> bytes:
    parts = []
    for key_kind, key, value_kind, value in entries:
        parts.append(struct.pack("<BI", key_kind, len(key)) + key
                     + struct.pack("<BI", value_kind, len(value)) + value)
    return b"".join(parts)


def _no_options(r: Reader) -> None:
    """The options TLV that ends CreateStream/UpdateStream/CreateUser/UpdateUser: none are
    known, so a well-formed block with any entry is refused (PROTOCOL.md §9.3)."""
    if r.remaining and parse_tlv(r.rest()):
        raise UnsupportedOptionKey()


# -- decoders -------------------------------------------------------------------------------

def _empty(cls):
    instance = cls()

    def decode(body):
        if len(body):
            raise InvalidCommand("this command takes an empty body")
        return instance
    decode.__name__ = f"decode_{cls.__name__}"
    return decode


decode_ping = _empty(rq.Ping)
decode_get_stats = _empty(rq.GetStats)
decode_get_cluster_metadata = _empty(rq.GetClusterMetadata)
decode_get_me = _empty(rq.GetMe)
decode_get_clients = _empty(rq.GetClients)
decode_get_users = _empty(rq.GetUsers)
decode_logout = _empty(rq.Logout)
decode_get_personal_access_tokens = _empty(rq.GetPersonalAccessTokens)
decode_get_streams = _empty(rq.GetStreams)


def decode_describe_options(body) -> rq.DescribeOptions:
    r = Reader(body)
    scope = r.u8()
    r.expect_end()
    if scope not in (TOPIC_SCOPE, STREAM_SCOPE, USER_SCOPE):
        raise InvalidCommand(f"options scope {scope}")
    return rq.DescribeOptions(scope)


def decode_get_partition_leaders(body) -> rq.GetPartitionLeaders:
    """[stream Identifier][topic Identifier][transport u8: 1 TCP, 2 QUIC, 3 HTTP, 4 WS]."""
    r = Reader(body)
    stream, topic, transport = r.identifier(), r.identifier(), r.u8()
    r.expect_end()
    if transport not in TRANSPORTS.values():
        raise InvalidCommand(f"transport {transport}")
    return rq.GetPartitionLeaders(stream, topic, transport)


def decode_get_client(body) -> rq.GetClient:
    r = Reader(body)
    client_id = r.u32()
    r.expect_end()
    return rq.GetClient(client_id)


# Login (§5.2): [version u32][sdk name Name][sdk version Name], then a password login
# [username Name][pw_len u8][pw][ctx_len u32][ctx] or a token login [token_len u8][token]
# [ctx_len u32][ctx]. The codes 40/45 are not on the wire, so the shape decides; a body may
# fit both, and then the password is tried first.

def _version_ok(client_version: int) -> bool:
    # Accept 0.11.x: at least our version with the patch zeroed, same major.minor.
    return (client_version >= PROTOCOL_VERSION_MIN
            and client_version >> 10 <= PROTOCOL_VERSION >> 10)


def _password_shape(body, pos: int) -> tuple[str, str] | None:
    try:
        r = Reader(body, pos)
        username = r.name()
        password = r.short_string()
        r.long_string()
        r.expect_end()
        return username, password
    except IggyError:
        return None


def _token_shape(body, pos: int) -> str | None:
    try:
        r = Reader(body, pos)
        token = r.short_string()
        r.long_string()
        r.expect_end()
        return token
    except IggyError:
        return None


def decode_login(body) -> rq.Login:
    r = Reader(body)
    try:
        version = r.u32()
        r.name()
        r.name()
    except IggyError:
        raise Eviction(EvictionReason.MALFORMED_LOGIN) from None
    if not _version_ok(version):
        raise Eviction(EvictionReason.INCOMPATIBLE_PROTOCOL, PROTOCOL_VERSION,
                       PROTOCOL_VERSION_MIN)
    credentials = _password_shape(body, r.pos)
    token = _token_shape(body, r.pos)
    if credentials is None and token is None:
        raise Eviction(EvictionReason.MALFORMED_LOGIN)
    return rq.Login(credentials, token)


def _ident_only(cls):
    def decode(body):
        r = Reader(body)
        ident = r.identifier()
        r.expect_end()
        return cls(ident)
    decode.__name__ = f"decode_{cls.__name__}"
    return decode


def _two_idents(cls):
    def decode(body):
        r = Reader(body)
        stream, topic = r.identifier(), r.identifier()
        r.expect_end()
        return cls(stream, topic)
    decode.__name__ = f"decode_{cls.__name__}"
    return decode


def _three_idents(cls):
    def decode(body):
        r = Reader(body)
        stream, topic, group = r.identifier(), r.identifier(), r.identifier()
        r.expect_end()
        return cls(stream, topic, group)
    decode.__name__ = f"decode_{cls.__name__}"
    return decode


def _permissions(r: Reader) -> bytes | None:
    """[has u8]([len u32][block])?; the block is checked by whoever interprets it."""
    if not r.u8():
        return None
    return r.raw(r.u32())


decode_get_user = _ident_only(rq.GetUser)
decode_delete_user = _ident_only(rq.DeleteUser)


def decode_create_user(body) -> rq.CreateUser:
    r = Reader(body)
    username = r.name()
    password = r.short_string()
    status = r.u8()
    permissions = _permissions(r)
    _no_options(r)
    return rq.CreateUser(username, password, status, permissions)


def decode_update_user(body) -> rq.UpdateUser:
    r = Reader(body)
    user = r.identifier()
    username = r.name() if r.u8() else None
    status = r.u8() if r.u8() else None
    _no_options(r)
    return rq.UpdateUser(user, username, status)


def decode_update_permissions(body) -> rq.UpdatePermissions:
    r = Reader(body)
    user = r.identifier()
    permissions = _permissions(r)
    r.expect_end()
    return rq.UpdatePermissions(user, permissions)


def decode_change_password(body) -> rq.ChangePassword:
    r = Reader(body)
    user = r.identifier()
    current = r.short_string()
    new = r.short_string()
    r.expect_end()
    return rq.ChangePassword(user, current, new)


def decode_create_personal_access_token(body) -> rq.CreatePersonalAccessToken:
    r = Reader(body)
    name = r.name()
    expiry = r.u64()
    r.expect_end()
    return rq.CreatePersonalAccessToken(name, expiry)


def decode_delete_personal_access_token(body) -> rq.DeletePersonalAccessToken:
    r = Reader(body)
    name = r.name()
    r.expect_end()
    return rq.DeletePersonalAccessToken(name)


def decode_send_messages(body) -> rq.SendMessages:
    """[metadata_length u32][stream][topic][partitioning kind u8][len u8][value]
    [messages_count u32][batch to the end] (§7.2). The batch stays a view of `body`."""
    r = Reader(body)
    metadata_length = r.u32()
    stream = r.identifier()
    topic = r.identifier()
    kind = r.u8()
    value = r.raw(r.u8())
    count = r.u32()
    if r.pos != 4 + metadata_length:
        raise InvalidCommand("metadata_length does not match the metadata")
    return rq.SendMessages(stream, topic, kind, value, count, r.view(r.remaining))


def decode_poll_messages(body) -> rq.PollMessages:
    """[Consumer][stream][topic][OptPart][strategy u8][value u64][count u32][auto_commit u8]."""
    r = Reader(body)
    kind, consumer = r.consumer()
    stream = r.identifier()
    topic = r.identifier()
    partition_id = r.optional_partition()
    strategy = r.u8()
    value = r.u64()
    count = r.u32()
    auto_commit = bool(r.u8())
    r.expect_end()
    return rq.PollMessages(kind, consumer, stream, topic, partition_id, strategy, value, count,
                           auto_commit)


def decode_bind_poll_route(body) -> bytes:
    """BindPollRoute (14): the 32-byte token a RoutePoll answered."""
    if len(body) != POLL_ROUTE_TOKEN:
        raise InvalidCommand(f"a poll route token is {POLL_ROUTE_TOKEN} bytes")
    return bytes(body)


def decode_flush_unsaved_buffer(body) -> rq.FlushUnsavedBuffer:
    r = Reader(body)
    stream, topic = r.identifier(), r.identifier()
    partition_id = r.u32()
    fsync = bool(r.u8())
    r.expect_end()
    return rq.FlushUnsavedBuffer(stream, topic, partition_id, fsync)


def _offset_target(r: Reader) -> tuple:
    """[Consumer][stream][topic][OptPart]: the five fields every offset command starts with."""
    kind, consumer = r.consumer()
    return kind, consumer, r.identifier(), r.identifier(), r.optional_partition()


def decode_get_consumer_offset(body) -> rq.GetConsumerOffset:
    r = Reader(body)
    target = _offset_target(r)
    r.expect_end()
    return rq.GetConsumerOffset(*target)


def decode_store_consumer_offset(body) -> rq.StoreConsumerOffset:
    r = Reader(body)
    target = _offset_target(r)
    offset = r.u64()
    if r.remaining:
        r.u8()      # the ack level: every store is committed before the reply anyway
    r.expect_end()
    return rq.StoreConsumerOffset(*target, offset)


def decode_delete_consumer_offset(body) -> rq.DeleteConsumerOffset:
    r = Reader(body)
    target = _offset_target(r)
    if r.remaining:
        r.u8()      # the ack level
    r.expect_end()
    return rq.DeleteConsumerOffset(*target)


decode_get_stream = _ident_only(rq.GetStream)
decode_delete_stream = _ident_only(rq.DeleteStream)
decode_purge_stream = _ident_only(rq.PurgeStream)
decode_get_topics = _ident_only(rq.GetTopics)


def decode_create_stream(body) -> rq.CreateStream:
    r = Reader(body)
    name = r.name()
    _no_options(r)
    return rq.CreateStream(name)


def decode_update_stream(body) -> rq.UpdateStream:
    r = Reader(body)
    stream = r.identifier()
    name = r.name()
    _no_options(r)
    return rq.UpdateStream(stream, name)


decode_get_topic = _two_idents(rq.GetTopic)
decode_delete_topic = _two_idents(rq.DeleteTopic)
decode_purge_topic = _two_idents(rq.PurgeTopic)


def decode_create_topic(body) -> rq.CreateTopic:
    r = Reader(body)
    stream = r.identifier()
    partitions_count = r.u32()
    name = r.name()
    return rq.CreateTopic(stream, partitions_count, name, parse_tlv(r.rest()))


def decode_update_topic(body) -> rq.UpdateTopic:
    r = Reader(body)
    stream, topic = r.identifier(), r.identifier()
    name = r.name()
    return rq.UpdateTopic(stream, topic, name, parse_tlv(r.rest()))


def _partitions_count(cls):
    def decode(body):
        r = Reader(body)
        stream, topic = r.identifier(), r.identifier()
        count = r.u32()
        r.expect_end()
        return cls(stream, topic, count)
    decode.__name__ = f"decode_{cls.__name__}"
    return decode


decode_create_partitions = _partitions_count(rq.CreatePartitions)
decode_delete_partitions = _partitions_count(rq.DeletePartitions)


def decode_delete_segments(body) -> rq.DeleteSegments:
    r = Reader(body)
    stream, topic = r.identifier(), r.identifier()
    partition_id = r.u32()
    count = r.u32()
    r.expect_end()
    return rq.DeleteSegments(stream, topic, partition_id, count)


decode_get_consumer_groups = _two_idents(rq.GetConsumerGroups)
decode_get_consumer_group = _three_idents(rq.GetConsumerGroup)
decode_delete_consumer_group = _three_idents(rq.DeleteConsumerGroup)
decode_join_consumer_group = _three_idents(rq.JoinConsumerGroup)
decode_leave_consumer_group = _three_idents(rq.LeaveConsumerGroup)
decode_sync_consumer_group = _three_idents(rq.SyncConsumerGroup)


def decode_create_consumer_group(body) -> rq.CreateConsumerGroup:
    r = Reader(body)
    stream, topic = r.identifier(), r.identifier()
    name = r.name()
    r.expect_end()
    return rq.CreateConsumerGroup(stream, topic, name)


# -- encoders -------------------------------------------------------------------------------

def encode_stats(s) -> bytearray:
    """§5.1.2: a 108-byte numeric head, five strings, then versions, caches and disks."""
    w = Writer()
    w.u32(s.process_id).f32(s.cpu_usage).f32(s.total_cpu_usage)
    w.u64(s.memory_usage).u64(s.total_memory).u64(s.available_memory)
    w.u64(s.run_time).u64(s.start_time).u64(s.read_bytes).u64(s.written_bytes)
    w.u64(s.messages_size_bytes).u32(s.streams_count).u32(s.topics_count)
    w.u32(s.partitions_count).u32(s.segments_count).u64(s.messages_count)
    w.u32(s.clients_count).u32(s.consumer_groups_count)
    for text in (s.hostname, s.os_name, s.os_version, s.kernel_version, s.server_version):
        w.long_string(text)
    w.u32(s.server_semver)
    w.u32(0)                                   # cache metrics: no message cache to report
    w.u32(s.threads_count)
    w.u64(s.free_disk_space).u64(s.total_disk_space)
    return w.buf


def encode_cluster_metadata(m) -> bytearray:
    """§5.1.4: [name][count u32], then per node [name][ip][4 ports u16][role u8][status u8]."""
    w = Writer().long_string(m.name).u32(len(m.nodes))
    for n in m.nodes:
        w.long_string(n.name).long_string(n.ip)
        w.raw(struct.pack("<HHHH", n.tcp_port, n.quic_port, n.http_port, n.websocket_port))
        w.u8(n.role).u8(n.status)
    return w.buf


def encode_poll_route(r) -> bytearray:
    """RoutePoll (103): [token: 32 bytes][name][ip][4 ports u16][role u8][status u8]."""
    n = r.node
    w = Writer().raw(r.token).long_string(n.name).long_string(n.ip)
    w.raw(struct.pack("<HHHH", n.tcp_port, n.quic_port, n.http_port, n.websocket_port))
    return w.u8(n.role).u8(n.status).buf


def encode_partition_leaders(leaders) -> bytearray:
    """GetPartitionLeaders (9000): [count u32], then per PartitionLeader [partition_id u32]
    [epoch u64][node long string][address long string] (both empty when no leader now)."""
    w = Writer().u32(len(leaders))
    for p in leaders:
        w.u32(p.partition_id).u64(p.epoch).long_string(p.node).long_string(p.address)
    return w.buf


def encode_options(entries) -> bytearray:
    """§5.1.5: [count u32], then per OptionInfo [key Name][kind u8][len u32][default]
    [description long string]."""
    w = Writer().u32(len(entries))
    for key, kind, default, description in entries:
        w.name(key).u8(kind).u32(len(default)).raw(default).long_string(description)
    return w.buf


def client_record(w: Writer, c) -> Writer:
    """[id u32][user_id u32][transport u8][address long string][groups_count u32]."""
    w.u32(c.id).u32(NOT_LOGGED_IN if c.user_id is None else c.user_id)
    return w.u8(TRANSPORTS.get(c.transport, 1)).long_string(c.address).u32(len(c.groups))


def encode_client_details(c) -> bytearray:
    """The client record and its groups as [stream_id u32][topic_id u32][group_id u32]."""
    w = client_record(Writer(), c)
    for sid, tid, gid in sorted(c.groups):
        w.u32(sid).u32(tid).u32(gid)
    return w.buf


def encode_clients(clients) -> bytearray:
    """Client records back to back, without their groups (§5.1.6)."""
    w = Writer()
    for c in clients:
        client_record(w, c)
    return w.buf


def encode_session(s) -> bytearray:
    """§5.2.1: [user_id u32][session u64][server protocol version u32][server version Name]."""
    return Writer().u32(s.user_id).u64(s.session).u32(PROTOCOL_VERSION).name(SERVER_VERSION).buf


def user_record(w: Writer, u) -> Writer:
    """[id u32][created_at u64][status u8][username Name][options_len u32 = 0]."""
    return w.u32(u.id).u64(u.created_at).u8(u.status).name(u.username).u32(0)


def encode_user_details(u) -> bytearray:
    """The user record, then 00 00 00 00 (no permissions) or 01 [len u32][block] (§5.3)."""
    w = user_record(Writer(), u)
    if u.permissions is None:
        return w.u32(0).buf
    return w.u8(1).u32(len(u.permissions)).raw(u.permissions).buf


def encode_users(users) -> bytearray:
    w = Writer()
    for u in users:
        user_record(w, u)
    return w.buf


def encode_tokens(tokens) -> bytearray:
    """(name, expiry_at µs) pairs as [name Name][expiry_at u64] back to back (§5.4)."""
    w = Writer()
    for name, expiry_at in tokens:
        w.name(name).u64(expiry_at)
    return w.buf


def encode_token(token: str) -> bytearray:
    return Writer().name(token).buf


_SENT = struct.Struct("<IIIIQ")
_POLL_HEAD = struct.Struct("<IQI")


def encode_sent(s) -> bytes:
    """§5.10: one confirmation: [1 u32][stream_id u32][topic_id u32][partition_id u32]
    [base_offset u64]."""
    return _SENT.pack(1, s.stream_id, s.topic_id, s.partition_id, s.base_offset)


def encode_polled(p) -> list:
    """§7.5: [partition_id u32][current_offset u64][count u32], then the stored batches."""
    return [_POLL_HEAD.pack(p.partition_id, p.current_offset, p.count), *p.chunks]


def encode_stored_offset(o) -> bytes:
    """§5.9: [partition_id u32][current_offset u64][stored_offset u64]."""
    return struct.pack("<IQQ", o.partition_id, o.current_offset, o.stored_offset)


def stream_record(w: Writer, s) -> Writer:
    """[id u32][created_at u64][topics_count u32][size u64][messages u64][name Name]
    [options_len u32 = 0] (§5.5)."""
    w.u32(s.id).u64(s.created_at).u32(len(s.topics)).u64(s.size_bytes).u64(s.messages_count)
    return w.name(s.name).u32(0)


def topic_record(w: Writer, info) -> Writer:
    """A TopicInfo as §5.6's Topic record: the fixed fields, the name, the explicit options
    and the derived ones, each block as [len u32][TLV]."""
    t = info.topic
    st = t.settings
    w.u32(t.id).u64(t.created_at).u32(len(t.partitions)).u64(st["message_expiry"])
    w.u8(st["compression"]).u64(st["max_topic_size"]).u64(t.size_bytes).u64(t.messages_count)
    w.name(t.name)
    explicit = encode_tlv(t.explicit)
    derived = encode_tlv(info.derived)
    return w.u32(len(explicit)).raw(explicit).u32(len(derived)).raw(derived)


def encode_stream_details(info) -> bytearray:
    """A StreamInfo: the stream record, then its topic records."""
    w = stream_record(Writer(), info.stream)
    for t in info.topics:
        topic_record(w, t)
    return w.buf


def encode_streams(streams) -> bytearray:
    w = Writer()
    for s in streams:
        stream_record(w, s)
    return w.buf


def encode_topic_details(info) -> bytearray:
    """The topic record, then a 40-byte record per partition: [id u32][created_at u64]
    [segments_count u32][current_offset u64][size_bytes u64][messages_count u64]."""
    w = topic_record(Writer(), info)
    for p in sorted(info.topic.partitions.values(), key=lambda p: p.id):
        log = p.log
        w.u32(p.id).u64(p.created_at).u32(len(log.segments)).u64(log.current_offset)
        w.u64(log.size_bytes).u64(log.messages_count)
    return w.buf


def encode_topics(infos) -> bytearray:
    """[count u32] then topic records: the one list reply with a count (§5.6)."""
    w = Writer().u32(len(infos))
    for info in infos:
        topic_record(w, info)
    return w.buf


def group_record(w: Writer, g) -> Writer:
    """[id u32][partitions_count u32][members_count u32][name Name] (§5.8)."""
    return w.u32(g.id).u32(len(g.topic.partitions)).u32(len(g.members)).name(g.name)


def encode_group_details(g) -> bytearray:
    """The group record, then per member [member_id u32][count u32][partition_id u32 x count]."""
    w = group_record(Writer(), g)
    for mid in sorted(g.members):
        owned = g.assignment.get(mid, [])
        w.u32(mid).u32(len(owned))
        for pid in owned:
            w.u32(pid)
    return w.buf


def encode_groups(groups) -> bytearray:
    w = Writer()
    for g in groups:
        group_record(w, g)
    return w.buf


def encode_group_assignment(a) -> bytearray:
    """§5.8 Sync: [generation u64][count u32][partition_id u32 x count]."""
    w = Writer().u64(a.generation).u32(len(a.partitions))
    for pid in a.partitions:
        w.u32(pid)
    return w.buf
