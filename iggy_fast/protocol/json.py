"""The JSON codec of the HTTP REST API (PROTOCOL.md §11.3), shared by the server and a client.

Requests: a route's decoder takes the parsed request, `(path, query, body)` (the path's
`{name}` parts and the query string as str -> str mappings, the body as `parse_body()` made
it), and returns one typed request of `requests.py`, exactly what the binary codec would have
made of the same command, so both transports reach the same service functions. Path ids are
identifiers: all digits is a numeric id, anything else a name. A field of the wrong type, a
required one missing, or a body that is not a JSON object raises InvalidFormat (4) naming the
field (`error.field`), which the transport shows as Iggy's error JSON with status 400.

Results: an encoder takes a service result and returns the JSON document as bytes (orjson),
or None for "no content". The shapes are Iggy's (snake_case names; byte sizes as
human-readable strings, "69.092 KB"; times and durations in µs).

Messages: a send's `messages` array (orjson's list of dicts: the JSON's own objects) becomes
one producer batch of the binary layout of §7 in compiled code (`_json.batch_from_messages`:
payloads base64-decoded in place, checksums computed), so the service validates and stores it
as if it came over TCP; a body of the plain shape (no user headers, no unknown keys: what
clients send) is read straight from its text by `_json.send_from_json` without orjson. A
poll's reply is written by the compiled `_json.polled_json` straight from the stored batches.
None of these makes a Python object per message.
"""

from __future__ import annotations

import binascii
import json as std_json
import struct
import time

import orjson
import pybase64

from iggy_fast._json import batch_from_messages, polled_json, send_from_json
from iggy_fast.protocol import requests as rq
from iggy_fast.protocol.codes import (BALANCED, FIRST, GLOBAL_PERMISSION_FLAGS, LAST,
                                      MESSAGES_KEY, NEXT, OFFSET, PARTITION_ID,
                                      STREAM_PERMISSION_FLAGS, STREAM_SCOPE, TIMESTAMP,
                                      TOPIC_PERMISSION_FLAGS, TOPIC_SCOPE, USER_SCOPE)
from iggy_fast.protocol.errors import IggyError, InvalidFormat

U32, U64 = 2**32 - 1, 2**64 - 1
CONSUMER = 1

# Header and option kinds (§3), by their wire number: the names JSON uses, and for the
# fixed-width ones the struct format of their value.
KIND_NAMES = ("", "raw", "string", "bool", "int8", "int16", "int32", "int64", "int128",
              "uint8", "uint16", "uint32", "uint64", "uint128", "float32", "float64")
KIND_BY_NAME = {name: number for number, name in enumerate(KIND_NAMES) if name}
_FIXED = {4: "<b", 5: "<h", 6: "<i", 7: "<q", 9: "<B", 10: "<H", 11: "<I", 12: "<Q",
          14: "<f", 15: "<d"}
STRING, BOOL, UINT64 = 2, 3, 12

USER_STATUS = {"active": 1, "inactive": 2}
STATUS_NAMES = {1: "active", 2: "inactive"}
COMPRESSION_NAMES = {1: "none", 2: "gzip"}
STRATEGIES = {"offset": OFFSET, "timestamp": TIMESTAMP, "first": FIRST, "last": LAST,
              "next": NEXT}
PARTITIONING = {"balanced": BALANCED, "partition_id": PARTITION_ID,
                "messages_key": MESSAGES_KEY}
SCOPES = {"topic": TOPIC_SCOPE, "stream": STREAM_SCOPE, "user": USER_SCOPE}


b64decode, b64encode = pybase64.b64decode, pybase64.b64encode_as_string


def bad(field: str, why: str) -> InvalidFormat:
    """InvalidFormat naming the offending field (shown as `field` in the error JSON)."""
    e = InvalidFormat(f"{field}: {why}")
    e.field = field
    return e


# -- parsing --------------------------------------------------------------------------------

class InexactInteger(Exception):
    """orjson read an integer past 64 bits as a float: parse the body again exactly."""


def parse_body(raw: bytes, exact: bool = False) -> dict:
    """The request body as a JSON object; an empty body is an empty object. orjson reads
    integers past 64 bits (a u128 message id) as floats; `exact` parses with the standard
    library, which keeps them (decode_request retries with it when a decoder meets one)."""
    if not raw:
        return {}
    try:
        body = std_json.loads(raw) if exact else orjson.loads(raw)
    except ValueError as e:         # orjson.JSONDecodeError is a ValueError too
        raise InvalidFormat(f"malformed JSON: {e}") from None
    if not isinstance(body, dict):
        raise InvalidFormat("the body must be a JSON object")
    return body


def decode_request(decoder, path, query, raw: bytes):
    """`decoder(path, query, body)` on the parsed body: orjson first, the standard library
    only for a body whose integers orjson could not hold. A send of the plain shape is read
    straight from its text instead (`plain_send`)."""
    if decoder is decode_send:
        req = plain_send(path, raw)
        if req is not None:
            return req
    try:
        return decoder(path, query, parse_body(raw))
    except InexactInteger:
        pass
    try:
        return decoder(path, query, parse_body(raw, exact=True))
    except InexactInteger:          # a number like 5.0 where an integer belongs
        raise InvalidFormat("expected an integer, not a decimal number") from None


def path_ident(text: str) -> int | str:
    """A path segment as an identifier: all digits is a numeric id, anything else a name."""
    if text.isdigit() and text.isascii():
        value = int(text)
        if value > U32:
            raise bad("id", "numeric id beyond u32")
        return value
    return text


def _get(obj: dict, name: str, kind, default=..., limit: int = U64):
    """obj[name] checked to be of `kind` (str, int, bool, dict, list; ints 0..limit)."""
    value = obj.get(name, default)
    if value is ...:
        raise bad(name, "missing")
    if value is default and default is not ...:
        return value
    if kind is int:
        if type(value) is float and value.is_integer():
            raise InexactInteger()
        if type(value) is not int or not 0 <= value <= limit:
            raise bad(name, f"expected an integer 0..{limit}")
    elif not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise bad(name, f"expected {kind.__name__}")
    return value


def _ident(obj: dict, name: str) -> int | str:
    value = obj.get(name, ...)
    if type(value) is int and 0 <= value <= U32:
        return value
    if isinstance(value, str) and value:
        return path_ident(value)
    raise bad(name, "expected an id (number) or a name (string)")


def _q_int(query, name: str, default=None, limit: int = U64) -> int | None:
    text = query.get(name)
    if text is None:
        if default is None:
            raise bad(name, "missing")
        return default
    if not (text.isdigit() and text.isascii()) or int(text) > limit:
        raise bad(name, f"expected an integer 0..{limit}")
    return int(text)


def _q_bool(query, name: str) -> bool:
    text = query.get(name, "false").lower()
    if text not in ("true", "false"):
        raise bad(name, "expected true or false")
    return text == "true"


def _q_ident(query, name: str) -> int | str:
    text = query.get(name)
    if not text:
        raise bad(name, "missing")
    return path_ident(text)


def _b64(text, field: str) -> bytes:
    if not isinstance(text, str):
        raise bad(field, "expected a base64 string")
    try:
        return b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise bad(field, "invalid base64") from None


# -- permissions (§3.1 block <-> JSON) -------------------------------------------------------

def _flags(obj, names, field: str) -> bytes:
    if not isinstance(obj, dict):
        raise bad(field, "expected an object of flags")
    return bytes(1 if _get(obj, n, bool, False) else 0 for n in names)


def permissions_block(perms) -> bytes | None:
    """JSON Permissions -> the binary block the service stores (None: no permissions)."""
    if perms is None:
        return None
    if not isinstance(perms, dict):
        raise bad("permissions", "expected an object or null")
    out = bytearray(_flags(perms.get("global") or {}, GLOBAL_PERMISSION_FLAGS, "global"))
    streams = perms.get("streams") or {}
    if not isinstance(streams, dict):
        raise bad("streams", "expected an object")
    for sid, stream in streams.items():
        if not (sid.isdigit() and int(sid) <= U32):
            raise bad("streams", "keys are stream ids")
        out += b"\x01" + int(sid).to_bytes(4, "little")
        out += _flags(stream, STREAM_PERMISSION_FLAGS, "streams")
        topics = stream.get("topics") or {}
        if not isinstance(topics, dict):
            raise bad("topics", "expected an object")
        for tid, topic in topics.items():
            if not (tid.isdigit() and int(tid) <= U32):
                raise bad("topics", "keys are topic ids")
            out += b"\x01" + int(tid).to_bytes(4, "little")
            out += _flags(topic, TOPIC_PERMISSION_FLAGS, "topics")
        out += b"\x00"
    out += b"\x00"
    return bytes(out)


def permissions_json(block: bytes | None):
    """The stored block as JSON Permissions (it was validated when it was stored)."""
    if block is None:
        return None
    pos = 0

    def flags(names):
        nonlocal pos
        chosen = {n: bool(b) for n, b in zip(names, block[pos:pos + len(names)])}
        pos += len(names)
        return chosen

    def u32():
        nonlocal pos
        pos += 4
        return int.from_bytes(block[pos - 4:pos], "little")

    glob = flags(GLOBAL_PERMISSION_FLAGS)
    streams = {}
    while block[pos]:
        pos += 1
        sid = u32()
        stream = flags(STREAM_PERMISSION_FLAGS)
        topics = {}
        while block[pos]:
            pos += 1
            tid = u32()
            topics[str(tid)] = flags(TOPIC_PERMISSION_FLAGS)
        pos += 1
        stream["topics"] = topics or None
        streams[str(sid)] = stream
    return {"global": glob, "streams": streams or None}


# -- TLV entries (options, user headers) -----------------------------------------------------

def value_text(kind: int, value: bytes) -> str:
    """An option value in its string form (as Iggy shows options)."""
    if kind == STRING:
        return value.decode(errors="replace")
    if kind == BOOL:
        return "true" if value[:1] != b"\x00" else "false"
    if kind in _FIXED and struct.calcsize(_FIXED[kind]) == len(value):
        return str(struct.unpack(_FIXED[kind], value)[0])
    if kind in (8, 13) and len(value) == 16:
        return str(int.from_bytes(value, "little", signed=kind == 8))
    return b64encode(value)


def _typed(obj, field: str) -> tuple[int, bytes]:
    """{kind, value: base64} -> (kind number, bytes)."""
    if not isinstance(obj, dict):
        raise bad(field, "expected {kind, value}")
    kind = KIND_BY_NAME.get(obj.get("kind"))
    if kind is None:
        raise bad(field, "unknown kind")
    value = _b64(obj.get("value"), field)
    if not 1 <= len(value) <= 255:
        raise bad(field, "1..255 bytes")
    return kind, value


def header_block(entries) -> bytes:
    """[HeaderEntry] (or a base64 string of the raw block) -> the TLV block of a message."""
    if entries is None:
        return b""
    if isinstance(entries, str):
        return _b64(entries, "user_headers")
    if not isinstance(entries, list):
        raise bad("user_headers", "expected a list of header entries")
    parts = []
    for e in entries:
        if not isinstance(e, dict):
            raise bad("user_headers", "expected {key, value}")
        kk, k = _typed(e.get("key"), "user_headers")
        vk, v = _typed(e.get("value"), "user_headers")
        parts.append(struct.pack("<BI", kk, len(k)) + k + struct.pack("<BI", vk, len(v)) + v)
    return b"".join(parts)


def _option(key: str, value) -> tuple[int, bytes, int, bytes]:
    """A topic option as a TLV entry: strings as String, numbers as Uint64, bools as Bool."""
    if isinstance(value, bool):
        return STRING, key.encode(), BOOL, b"\x01" if value else b"\x00"
    if type(value) is int and 0 <= value <= U64:
        return STRING, key.encode(), UINT64, value.to_bytes(8, "little")
    if isinstance(value, str) and value:
        return STRING, key.encode(), STRING, value.encode()
    raise bad(key, "expected a string, a u64 or a bool")


def topic_options(body: dict) -> list:
    """The named settings and the `options` map of a CreateTopic/UpdateTopic body."""
    entries = []
    for name in ("compression_algorithm", "message_expiry", "max_topic_size"):
        if body.get(name) is not None:
            entries.append(_option(name, body[name]))
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise bad("options", "expected an object")
    for key, value in options.items():
        if key not in body or body.get(key) is None:
            entries.append(_option(key, value))
    return entries


def _options_json(explicit, derived) -> dict:
    out = {}
    for entries, is_explicit in ((explicit, True), (derived, False)):
        for _kk, key, vk, value in entries:
            out[key.decode(errors="replace")] = {"value": value_text(vk, value),
                                                 "explicit": is_explicit}
    return out


# -- request decoders: (path, query, body) -> typed request ----------------------------------

def _empty(cls):
    instance = cls()
    return lambda path, query, body: instance


def _s(path):
    return path_ident(path["stream_id"])


def _st(path):
    return path_ident(path["stream_id"]), path_ident(path["topic_id"])


def decode_login(path, query, body) -> rq.Login:
    return rq.Login((_get(body, "username", str), _get(body, "password", str)), None)


def decode_token_login(path, query, body) -> rq.Login:
    return rq.Login(None, _get(body, "token", str))


def decode_create_pat(path, query, body) -> rq.CreatePersonalAccessToken:
    return rq.CreatePersonalAccessToken(_get(body, "name", str), _get(body, "expiry", int, 0))


def decode_delete_pat(path, query, body) -> rq.DeletePersonalAccessToken:
    return rq.DeletePersonalAccessToken(path["name"])


def _status(body) -> int:
    status = _get(body, "status", str, "active")
    if status not in USER_STATUS:
        raise bad("status", "expected active or inactive")
    return USER_STATUS[status]


def decode_get_user(path, query, body) -> rq.GetUser:
    return rq.GetUser(path_ident(path["user_id"]))


def decode_create_user(path, query, body) -> rq.CreateUser:
    return rq.CreateUser(_get(body, "username", str), _get(body, "password", str),
                         _status(body), permissions_block(body.get("permissions")))


def decode_update_user(path, query, body) -> rq.UpdateUser:
    username = _get(body, "username", str, None)
    status = _status(body) if body.get("status") is not None else None
    return rq.UpdateUser(path_ident(path["user_id"]), username, status)


def decode_delete_user(path, query, body) -> rq.DeleteUser:
    return rq.DeleteUser(path_ident(path["user_id"]))


def decode_change_password(path, query, body) -> rq.ChangePassword:
    return rq.ChangePassword(path_ident(path["user_id"]), _get(body, "current_password", str),
                             _get(body, "new_password", str))


def decode_update_permissions(path, query, body) -> rq.UpdatePermissions:
    return rq.UpdatePermissions(path_ident(path["user_id"]),
                                permissions_block(body.get("permissions")))


def decode_get_stream(path, query, body) -> rq.GetStream:
    return rq.GetStream(_s(path))


def decode_create_stream(path, query, body) -> rq.CreateStream:
    return rq.CreateStream(_get(body, "name", str))


def decode_update_stream(path, query, body) -> rq.UpdateStream:
    return rq.UpdateStream(_s(path), _get(body, "name", str))


def decode_delete_stream(path, query, body) -> rq.DeleteStream:
    return rq.DeleteStream(_s(path))


def decode_purge_stream(path, query, body) -> rq.PurgeStream:
    return rq.PurgeStream(_s(path))


def decode_get_topics(path, query, body) -> rq.GetTopics:
    return rq.GetTopics(_s(path))


def decode_get_topic(path, query, body) -> rq.GetTopic:
    return rq.GetTopic(*_st(path))


def decode_create_topic(path, query, body) -> rq.CreateTopic:
    return rq.CreateTopic(_s(path), _get(body, "partitions_count", int, limit=U32),
                          _get(body, "name", str), topic_options(body))


def decode_update_topic(path, query, body) -> rq.UpdateTopic:
    return rq.UpdateTopic(*_st(path), _get(body, "name", str), topic_options(body))


def decode_delete_topic(path, query, body) -> rq.DeleteTopic:
    return rq.DeleteTopic(*_st(path))


def decode_purge_topic(path, query, body) -> rq.PurgeTopic:
    return rq.PurgeTopic(*_st(path))


def decode_create_partitions(path, query, body) -> rq.CreatePartitions:
    return rq.CreatePartitions(*_st(path), _get(body, "partitions_count", int, limit=U32))


def decode_delete_partitions(path, query, body) -> rq.DeletePartitions:
    return rq.DeletePartitions(*_st(path), _q_int(query, "partitions_count", limit=U32))


def decode_delete_segments(path, query, body) -> rq.DeleteSegments:
    partition_id = path_ident(path["partition_id"])
    if not isinstance(partition_id, int):
        raise bad("partition_id", "expected a number")
    return rq.DeleteSegments(*_st(path), partition_id,
                             _q_int(query, "segments_count", limit=U32))


def decode_get_groups(path, query, body) -> rq.GetConsumerGroups:
    return rq.GetConsumerGroups(*_st(path))


def decode_get_group(path, query, body) -> rq.GetConsumerGroup:
    return rq.GetConsumerGroup(*_st(path), path_ident(path["group_id"]))


def decode_create_group(path, query, body) -> rq.CreateConsumerGroup:
    return rq.CreateConsumerGroup(*_st(path), _get(body, "name", str))


def decode_delete_group(path, query, body) -> rq.DeleteConsumerGroup:
    return rq.DeleteConsumerGroup(*_st(path), path_ident(path["group_id"]))


def decode_poll(path, query, body) -> rq.PollMessages:
    """?consumer_id=&partition_id=&kind=&value=&count=&auto_commit= (HTTP has no groups: the
    consumer is always a plain consumer)."""
    kind = query.get("kind", "offset")
    if kind not in STRATEGIES:
        raise bad("kind", "expected offset, timestamp, first, last or next")
    return rq.PollMessages(CONSUMER, _q_ident(query, "consumer_id"), *_st(path),
                           _q_int(query, "partition_id", 0, U32), STRATEGIES[kind],
                           _q_int(query, "value", 0), _q_int(query, "count", 10, U32),
                           _q_bool(query, "auto_commit"))


def decode_send(path, query, body, now_us: int | None = None) -> rq.SendMessages:
    """{partitioning: {kind, value: base64}, messages: [{id, payload, user_headers?}]} (the
    id and headers also as Iggy's newer {header: {id}, ...}) -> one producer batch."""
    partitioning = _get(body, "partitioning", dict, {"kind": "balanced"})
    kind = PARTITIONING.get(partitioning.get("kind"))
    if kind is None:
        raise bad("partitioning", "kind must be balanced, partition_id or messages_key")
    value = b"" if kind == BALANCED else _b64(partitioning.get("value"), "partitioning")
    messages = _get(body, "messages", list)
    if not messages:
        raise bad("messages", "at least one message")
    now = time.time_ns() // 1000 if now_us is None else now_us
    data = batch_from_messages(messages, now, header_block, bad, InexactInteger)
    return rq.SendMessages(*_st(path), kind, value, len(messages), memoryview(data))


def plain_send(path, raw: bytes, now_us: int | None = None) -> rq.SendMessages | None:
    """decode_send of a body of the plain shape, read by the compiled
    `_json.send_from_json` straight into the batch (u128 ids too, no Python object per
    message); None for any other body (decode_send then reads it, or says what is wrong)."""
    now = time.time_ns() // 1000 if now_us is None else now_us
    found = send_from_json(raw, now)
    if found is None:
        return None
    kind_name, value, batch, count = found
    kind = PARTITIONING.get(kind_name or "balanced")
    if kind is None:
        return None
    value = b"" if kind == BALANCED else _b64(value, "partitioning")
    return rq.SendMessages(*_st(path), kind, value, count, memoryview(batch))


def decode_flush(path, query, body) -> rq.FlushUnsavedBuffer:
    """GET …/messages/flush/{partition_id}/fsync={bool}, as the official client calls it."""
    partition_id = path_ident(path["partition_id"])
    if not isinstance(partition_id, int):
        raise bad("partition_id", "expected a number")
    return rq.FlushUnsavedBuffer(*_st(path), partition_id, path["fsync"] == "fsync=true")


def decode_get_offset(path, query, body) -> rq.GetConsumerOffset:
    return rq.GetConsumerOffset(CONSUMER, _q_ident(query, "consumer_id"), *_st(path),
                                _q_int(query, "partition_id", 0, U32))


def decode_store_offset(path, query, body) -> rq.StoreConsumerOffset:
    partition = body.get("partition_id")
    return rq.StoreConsumerOffset(CONSUMER, _ident(body, "consumer_id"), *_st(path),
                                  None if partition is None else _get(body, "partition_id", int,
                                                                      limit=U32),
                                  _get(body, "offset", int))


def decode_delete_offset(path, query, body) -> rq.DeleteConsumerOffset:
    return rq.DeleteConsumerOffset(CONSUMER, path_ident(path["consumer_id"]), *_st(path),
                                   _q_int(query, "partition_id", 0, U32))


def decode_describe_options(path, query, body) -> rq.DescribeOptions:
    scope = SCOPES.get(path["scope"])
    if scope is None:
        raise bad("scope", "expected topic, stream or user")
    return rq.DescribeOptions(scope)


def decode_get_client(path, query, body) -> rq.GetClient:
    cid = path_ident(path["client_id"])
    if not isinstance(cid, int):
        raise bad("client_id", "expected a number")
    return rq.GetClient(cid)


decode_ping = _empty(rq.Ping)
decode_get_pats = _empty(rq.GetPersonalAccessTokens)
decode_get_users = _empty(rq.GetUsers)
decode_get_streams = _empty(rq.GetStreams)
decode_get_stats = _empty(rq.GetStats)
decode_get_cluster_metadata = _empty(rq.GetClusterMetadata)
decode_get_clients = _empty(rq.GetClients)


# -- result encoders: result -> JSON bytes ---------------------------------------------------

dumps = orjson.dumps

_UNITS = ("B", "KB", "MB", "GB", "TB", "PB", "EB")


def byte_size(n: int) -> str:
    """Iggy's human-readable byte size (decimal units): "0 B", "512 B", "69.092 KB"."""
    value, unit = float(n), 0
    while value >= 1000 and unit < len(_UNITS) - 1:
        value /= 1000
        unit += 1
    if unit == 0:
        return f"{n} B"
    return f"{value:.3f}".rstrip("0").rstrip(".") + f" {_UNITS[unit]}"


def error_body(e: IggyError) -> bytes:
    """Iggy's error JSON: {id, code, reason, field}."""
    return dumps({"id": e.code, "code": e.name, "reason": str(e),
                  "field": getattr(e, "field", None)})


def identity(user_id: int, token: str, expiry: int) -> bytes:
    """IdentityInfo: the user and its access token (expiry in unix seconds)."""
    return dumps({"user_id": user_id, "access_token": {"token": token, "expiry": expiry}})


def _user(u) -> dict:
    return {"id": u.id, "created_at": u.created_at, "status": STATUS_NAMES.get(u.status, "active"),
            "username": u.username, "options": {}}


def encode_user_details(u) -> bytes:
    return dumps({**_user(u), "permissions": permissions_json(u.permissions)})


def encode_users(users) -> bytes:
    return dumps([_user(u) for u in users])


def encode_tokens(tokens) -> bytes:
    return dumps([{"name": name, "expiry_at": expiry_at or None} for name, expiry_at in tokens])


def encode_token(token: str) -> bytes:
    return dumps({"token": token})


def _stream(s) -> dict:
    return {"id": s.id, "created_at": s.created_at, "name": s.name,
            "size": byte_size(s.size_bytes), "messages_count": s.messages_count,
            "topics_count": len(s.topics), "options": {}}


def _topic(info) -> dict:
    t = info.topic
    st = t.settings
    return {"id": t.id, "created_at": t.created_at, "name": t.name,
            "size": byte_size(t.size_bytes), "message_expiry": st["message_expiry"],
            "compression_algorithm": COMPRESSION_NAMES.get(st["compression"], "none"),
            "max_topic_size": st["max_topic_size"], "replication_factor": 1,
            "messages_count": t.messages_count, "partitions_count": len(t.partitions),
            "options": _options_json(t.explicit, info.derived)}


def encode_streams(streams) -> bytes:
    return dumps([_stream(s) for s in streams])


def encode_stream_details(info) -> bytes:
    return dumps({**_stream(info.stream), "topics": [_topic(t) for t in info.topics]})


def encode_topics(infos) -> bytes:
    return dumps([_topic(t) for t in infos])


def encode_topic_details(info) -> bytes:
    partitions = []
    for p in sorted(info.topic.partitions.values(), key=lambda p: p.id):
        log = p.log
        partitions.append({"id": p.id, "created_at": p.created_at,
                           "segments_count": len(log.segments),
                           "current_offset": log.current_offset,
                           "size": byte_size(log.size_bytes),
                           "messages_count": log.messages_count})
    return dumps({**_topic(info), "partitions": partitions})


def _group(g) -> dict:
    return {"id": g.id, "name": g.name, "partitions_count": len(g.topic.partitions),
            "members_count": len(g.members)}


def encode_groups(groups) -> bytes:
    return dumps([_group(g) for g in groups])


def encode_group_details(g) -> bytes:
    members = []
    for mid in sorted(g.members):
        owned = list(g.assignment.get(mid, []))
        members.append({"id": mid, "partitions_count": len(owned), "partitions": owned})
    return dumps({**_group(g), "members": members})


def encode_sent(s) -> bytes:
    return dumps({"confirmations": [{"stream_id": s.stream_id, "topic_id": s.topic_id,
                                     "partition_id": s.partition_id,
                                     "base_offset": s.base_offset}]})


def encode_polled(p) -> bytearray:
    """PolledMessages, written by the compiled `_json.polled_json` straight from the stored
    batches (file regions are read here, one read per region)."""
    return polled_json(p.partition_id, p.current_offset,
                       [c.read() if hasattr(c, "read") else c for c in p.chunks])


def encode_stored_offset(o) -> bytes:
    return dumps({"partition_id": o.partition_id, "current_offset": o.current_offset,
                  "stored_offset": o.stored_offset})


def encode_stats(s) -> bytes:
    return dumps({
        "process_id": s.process_id, "cpu_usage": s.cpu_usage,
        "total_cpu_usage": s.total_cpu_usage, "memory_usage": byte_size(s.memory_usage),
        "total_memory": byte_size(s.total_memory),
        "available_memory": byte_size(s.available_memory), "run_time": s.run_time,
        "start_time": s.start_time, "read_bytes": byte_size(s.read_bytes),
        "written_bytes": byte_size(s.written_bytes),
        "messages_size_bytes": byte_size(s.messages_size_bytes),
        "streams_count": s.streams_count, "topics_count": s.topics_count,
        "partitions_count": s.partitions_count, "segments_count": s.segments_count,
        "messages_count": s.messages_count, "clients_count": s.clients_count,
        "consumer_groups_count": s.consumer_groups_count, "hostname": s.hostname,
        "os_name": s.os_name, "os_version": s.os_version, "kernel_version": s.kernel_version,
        "iggy_server_version": s.server_version, "iggy_server_semver": s.server_semver,
        "cache_metrics": {}, "threads_count": s.threads_count,
        "free_disk_space": byte_size(s.free_disk_space),
        "total_disk_space": byte_size(s.total_disk_space)})


def encode_cluster_metadata(m) -> bytes:
    return dumps({"name": m.name, "nodes": [
        {"name": n.name, "ip": n.ip,
         "endpoints": {"tcp": n.tcp_port, "quic": n.quic_port, "http": n.http_port,
                       "websocket": n.websocket_port},
         "role": "leader" if n.role == 0 else "follower",
         "status": "healthy" if n.status == 0 else "unhealthy"} for n in m.nodes]})


def encode_options(entries) -> bytes:
    return dumps([{"key": key, "kind": KIND_NAMES[kind] if kind < len(KIND_NAMES) else "raw",
                   "default_value": list(default), "description": description}
                  for key, kind, default, description in entries])


def _client(c) -> dict:
    return {"client_id": c.id, "user_id": c.user_id, "address": c.address,
            "transport": c.transport, "consumer_groups_count": len(c.groups)}


def encode_clients(clients) -> bytes:
    return dumps([_client(c) for c in clients])


def encode_client_details(c) -> bytes:
    return dumps({**_client(c), "consumer_groups": [
        {"stream_id": s, "topic_id": t, "group_id": g} for s, t, g in sorted(c.groups)]})
