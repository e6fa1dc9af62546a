"""The client direction of the HTTP REST API: a binary request to an HTTP call, and the reply's
JSON back to the binary payload the client's decoders read.

The async client speaks binary (protocol/client_codec.py) whatever the transport, so an HTTP
link translates with the codecs that exist rather than a second client codec:

    request body --binary.decode_*--> typed request --Route.call--> method, path, query, JSON
    reply JSON --Route.reply: orjson, then the typed result (duck-typed as binary.py reads
               results)--binary.encode_*--> reply payload

`ROUTES` maps each command code to the binary decoder of its body, the HTTP call a typed
request becomes (the inverse of the server's route decoders in protocol/json.py) and the
converter of its reply. Commands HTTP has no route for (GetMe, consumer-group membership, a
consumer group's poll or offsets) raise FeatureUnavailable before anything is sent.

What JSON loses on the way: byte sizes arrive human-readable ("69.092 KB") and come back as
the bytes that text stands for (to 3 significant decimals); topic options arrive as text, so
their entries come back as String values.

Messages: a send's batch becomes its JSON by the compiled `_json.send_json` (ids, base64
payloads and user headers written straight from the batch: no Python object per message). A
poll's JSON becomes stored batches, one batch per run of messages that share a server
timestamp (a stored batch), with the offsets and timestamps set in its header: read straight
from the text by the compiled `_json.polled_from_json` when the reply has no user headers (no
Python object per message), else through orjson's dicts and `_json.batch_from_messages`, with
a short Python loop per message that finds the runs (and puts back u128 ids orjson read as
floats).
"""

from __future__ import annotations

import re
import struct
from types import SimpleNamespace
from typing import Callable, NamedTuple
from urllib.parse import quote

import orjson

from iggy_fast._json import batch_from_messages, polled_from_json, send_json
from iggy_fast._wire import batch_checksum
from iggy_fast.protocol import binary as bn
from iggy_fast.protocol import json as js
from iggy_fast.protocol.errors import FeatureUnavailable, InvalidFormat, UndecodableReply
from iggy_fast.protocol.results import (ClusterMetadata, ClusterNode, Sent, Session, Stats,
                                        StoredOffset, StreamInfo, TopicInfo)

GROUP = 2
_STRATEGY_NAMES = {number: name for name, number in js.STRATEGIES.items()}
_PARTITIONING_NAMES = {number: name for name, number in js.PARTITIONING.items()}
_SCOPE_NAMES = {number: name for name, number in js.SCOPES.items()}
_COMPRESSION = {name: number for number, name in js.COMPRESSION_NAMES.items()}
_UNIT = {unit: 1000 ** i for i, unit in enumerate(("B", "KB", "MB", "GB", "TB", "PB", "EB"))}


class Call(NamedTuple):
    """One HTTP request: method, path (identifiers quoted), query and JSON body (or None)."""
    method: str
    path: str
    query: dict | None = None
    body: dict | None = None


class Route(NamedTuple):
    decode: Callable                     # request body -> typed request (binary.py)
    call: Callable                       # typed request -> Call
    reply: Callable | None = None        # reply JSON (bytes) -> binary payload; None: empty


# -- paths ------------------------------------------------------------------------------------

def seg(ident) -> str:
    """An identifier as a path segment (a numeric id as digits, a name quoted)."""
    return str(ident) if type(ident) is int else quote(ident, safe="")


def _s(r) -> str:
    return f"/streams/{seg(r.stream)}"


def _t(r) -> str:
    return f"/streams/{seg(r.stream)}/topics/{seg(r.topic)}"


def _plain_consumer(r, what: str):
    if r.consumer_kind == GROUP:
        raise FeatureUnavailable(f"{what} as a consumer group is not available over HTTP (the "
                                 f"REST API has no consumer-group membership): use TCP, QUIC "
                                 f"or WebSocket")
    return str(r.consumer)


def _unavailable(what: str):
    def call(r):
        raise FeatureUnavailable(f"{what} is not available over HTTP (the REST API has no such "
                                 f"route): use TCP, QUIC or WebSocket")
    return call


# -- request -> Call --------------------------------------------------------------------------

def _option_value(kind: int, value: bytes):
    """A TLV option value as the JSON value the server's topic_options reads back."""
    if kind == js.STRING:
        return value.decode()
    if kind == js.BOOL:
        return value[:1] != b"\x00"
    text = js.value_text(kind, value)
    return int(text) if text.isdigit() else text


def _topic_body(r, **fields) -> dict:
    options = {key.decode(): _option_value(vk, value) for _kk, key, vk, value in r.options}
    return {"name": r.name, **fields, "options": options}


def _poll_call(r) -> Call:
    query = {"consumer_id": _plain_consumer(r, "polling"),
             "kind": _STRATEGY_NAMES.get(r.strategy, "offset"), "value": str(r.value),
             "count": str(r.count), "auto_commit": "true" if r.auto_commit else "false"}
    if r.partition_id is not None:
        query["partition_id"] = str(r.partition_id)
    return Call("GET", _t(r) + "/messages", query)


def _offset_query(r, what: str) -> dict:
    query = {"consumer_id": _plain_consumer(r, what)}
    if r.partition_id is not None:
        query["partition_id"] = str(r.partition_id)
    return query


def _store_offset_call(r) -> Call:
    _plain_consumer(r, "storing an offset")
    body = {"consumer_id": r.consumer, "offset": r.offset}
    if r.partition_id is not None:
        body["partition_id"] = r.partition_id
    return Call("PUT", _t(r) + "/consumer-offsets", None, body)


def _delete_offset_call(r) -> Call:
    query = _offset_query(r, "deleting an offset")
    del query["consumer_id"]
    return Call("DELETE", f"{_t(r)}/consumer-offsets/{seg(r.consumer)}", query)


def send_body(r, batch) -> bytearray:
    """The JSON of a send: its partitioning, then the messages written from the producer
    batch by the compiled `_json.send_json` (id, base64 payload, user headers if any)."""
    partitioning = {"kind": _PARTITIONING_NAMES.get(r.partitioning, "balanced")}
    if r.partitioning_value:
        partitioning["value"] = js.b64encode(bytes(r.partitioning_value))
    return send_json(orjson.dumps(partitioning), batch)


# -- reply JSON -> binary payload --------------------------------------------------------------

def size(text) -> int:
    """A human-readable byte size ("69.092 KB") as bytes (the inverse of json.byte_size)."""
    if type(text) is int:
        return text
    number, _, unit = str(text).partition(" ")
    return round(float(number) * _UNIT.get(unit, 1))


def _status(name) -> int:
    return js.USER_STATUS.get(name, 1)


def _user(u) -> SimpleNamespace:
    return SimpleNamespace(id=u["id"], created_at=u["created_at"], status=_status(u["status"]),
                           username=u["username"],
                           permissions=js.permissions_block(u.get("permissions")))


def _stream(s) -> SimpleNamespace:
    return SimpleNamespace(id=s["id"], created_at=s["created_at"], name=s["name"],
                           topics=range(s["topics_count"]), size_bytes=size(s["size"]),
                           messages_count=s["messages_count"])


def _entry(key: str, option) -> tuple:
    return js.STRING, key.encode(), js.STRING, str(option["value"]).encode()


def _topic(t, partitions=None) -> TopicInfo:
    options = t.get("options") or {}
    topic = SimpleNamespace(
        id=t["id"], created_at=t["created_at"], name=t["name"], size_bytes=size(t["size"]),
        messages_count=t["messages_count"],
        partitions=partitions if partitions is not None else dict.fromkeys(
            range(t["partitions_count"])),
        settings={"message_expiry": t["message_expiry"],
                  "compression": _COMPRESSION.get(t["compression_algorithm"], 1),
                  "max_topic_size": t["max_topic_size"]},
        explicit=[_entry(k, o) for k, o in options.items() if o.get("explicit")])
    return TopicInfo(topic, [_entry(k, o) for k, o in options.items() if not o.get("explicit")])


def _partition(p) -> SimpleNamespace:
    return SimpleNamespace(id=p["id"], created_at=p["created_at"], log=SimpleNamespace(
        segments=range(p["segments_count"]), current_offset=p["current_offset"],
        size_bytes=size(p["size"]), messages_count=p["messages_count"]))


def _topic_details(t) -> TopicInfo:
    return _topic(t, {p["id"]: _partition(p) for p in t.get("partitions") or ()})


def _group(g) -> SimpleNamespace:
    members = g.get("members") or []
    return SimpleNamespace(id=g["id"], name=g["name"],
                           topic=SimpleNamespace(partitions=range(g["partitions_count"])),
                           members=[m["id"] for m in members] or range(g["members_count"]),
                           assignment={m["id"]: m["partitions"] for m in members})


def _client(c, groups=()) -> SimpleNamespace:
    return SimpleNamespace(id=c["client_id"], user_id=c.get("user_id"),
                           transport=c["transport"], address=c["address"],
                           groups=groups or range(c["consumer_groups_count"]))


def _client_details(c):
    groups = {(g["stream_id"], g["topic_id"], g["group_id"]) for g in c["consumer_groups"]}
    return bn.encode_client_details(_client(c, groups))


def _stats(s) -> bytes:
    sizes = ("memory_usage", "total_memory", "available_memory", "read_bytes",
             "written_bytes", "messages_size_bytes", "free_disk_space", "total_disk_space")
    fields = {name: s.get(name) for name in Stats._fields}
    fields.update({name: size(s[name]) for name in sizes},
                  server_version=s["iggy_server_version"],
                  server_semver=s["iggy_server_semver"])
    return bn.encode_stats(Stats(**fields))


def _cluster(m) -> bytes:
    nodes = [ClusterNode(n["name"], n["ip"], *(n["endpoints"][k] for k in
                                                ("tcp", "quic", "http", "websocket")),
                         0 if n["role"] == "leader" else 1,
                         0 if n["status"] == "healthy" else 1) for n in m["nodes"]]
    return bn.encode_cluster_metadata(ClusterMetadata(m["name"], nodes))


def _options(entries) -> bytes:
    return bn.encode_options([(e["key"], js.KIND_BY_NAME.get(e["kind"], 1),
                                   bytes(e["default_value"]), e["description"])
                                  for e in entries])


def _sent(s) -> bytes:
    c = s["confirmations"][0]
    return bn.encode_sent(Sent(c["stream_id"], c["topic_id"], c["partition_id"],
                                   c["base_offset"]))


_POLL_HEAD = struct.Struct("<IQI")  # partition_id, current_offset, count
_RUN = struct.Struct("<QQQQ")       # partition_id, base_offset, base_timestamp, origin
_FRAME, _DELTA = struct.Struct("<Q"), struct.Struct("<I")    # checksum @0, timestamp delta @28
_IDS = re.compile(rb'"id"\s*:\s*(\d+)')  # message ids in order (base64 has no quotes or colons)


def polled_payload(raw: bytes) -> bytearray:
    """A poll reply's JSON as the binary PolledMessages payload (§7.5): the 16-byte head, then
    one batch per run of messages stored together (same server timestamp, consecutive
    offsets), each message's origin timestamp kept as its delta from the run's first and its
    checksum as the server reported it.

    A reply of the plain shape (no user headers: what a poll mostly answers) is read straight
    from its text by the compiled `_json.polled_from_json`; any other goes through orjson and
    a short loop per message. orjson reads an integer past 64 bits as a float, and message ids
    are u128 (the server's own are random ones): such an id is put back from the raw text."""
    payload = polled_from_json(raw)
    return payload if payload is not None else parsed_polled_payload(raw)


def parsed_polled_payload(raw: bytes) -> bytearray:
    """polled_payload of any reply, through orjson (user headers, escapes, other layouts)."""
    doc = orjson.loads(raw)
    messages = doc["messages"]
    n = len(messages)
    out = bytearray(_POLL_HEAD.pack(doc["partition_id"], doc["current_offset"], n))
    ids = None
    start = 0
    while start < n:
        head = messages[start]["header"]
        timestamp, offset, origin = head["timestamp"], head["offset"], head["origin_timestamp"]
        end = start
        while end < n:
            h = messages[end]["header"]
            if end > start and (h["timestamp"] != timestamp or h["offset"] != offset + end - start
                                or not 0 <= h["origin_timestamp"] - origin < 2**32):
                break
            if type(h["id"]) is float:
                ids = ids or _IDS.findall(raw)
                h["id"] = int(ids[end])
            end += 1
        run = batch_from_messages(messages[start:end], origin, js.header_block, js.bad,
                                  js.InexactInteger)
        _RUN.pack_into(run, 0, doc["partition_id"], offset, timestamp, origin)
        pos = 256
        for m in messages[start:end]:       # the stored checksum, and the origin's delta
            h = m["header"]
            _FRAME.pack_into(run, pos, h["checksum"])
            if h["origin_timestamp"] != origin:
                _DELTA.pack_into(run, pos + 28, h["origin_timestamp"] - origin)
            pos += 48 + h["payload_length"] + h["user_headers_length"]
        _FRAME.pack_into(run, 40, batch_checksum(run))    # the batch checksum, of it as it is now
        out += run
        start = end
    return out


def _json_reply(convert) -> Callable:
    def reply(raw: bytes):
        try:
            return convert(orjson.loads(raw))
        except (KeyError, TypeError, ValueError, InvalidFormat) as e:
            raise UndecodableReply(f"the HTTP reply does not decode ({type(e).__name__}: "
                                   f"{e})") from None
    return reply


def _each(encode, convert) -> Callable:
    return _json_reply(lambda items: encode([convert(x) for x in items]))


def _one(encode, convert) -> Callable:
    return _json_reply(lambda x: encode(convert(x)))


def session_payload(raw: bytes) -> tuple[bytes, str, int]:
    """A login's IdentityInfo JSON: (the binary login reply, the JWT, its expiry in unix s)."""
    doc = orjson.loads(raw)
    token = doc["access_token"]
    return (bytes(bn.encode_session(Session(doc["user_id"], 0))), token["token"],
            token["expiry"])


def _polled_reply(raw: bytes):
    try:
        return polled_payload(raw)
    except (KeyError, TypeError, ValueError, InvalidFormat) as e:
        raise UndecodableReply(f"the HTTP poll reply does not decode ({type(e).__name__}: "
                               f"{e})") from None


def _create_user_call(r) -> Call:
    return Call("POST", "/users", None, {
        "username": r.username, "password": r.password,
        "status": js.STATUS_NAMES.get(r.status, "active"),
        "permissions": js.permissions_json(r.permissions)})


def _update_user_call(r) -> Call:
    body = {}
    if r.username is not None:
        body["username"] = r.username
    if r.status is not None:
        body["status"] = js.STATUS_NAMES.get(r.status, "active")
    return Call("PUT", f"/users/{seg(r.user)}", None, body)


def _no_route(what: str) -> Route:
    return Route(lambda body: None, _unavailable(what))


ROUTES: dict[int, Route] = {
    10: Route(bn.decode_get_stats, lambda r: Call("GET", "/stats"), _json_reply(_stats)),
    11: Route(lambda body: None, lambda r: Call("POST", "/snapshot", None, {})),
    12: Route(bn.decode_get_cluster_metadata, lambda r: Call("GET", "/cluster/metadata"),
              _json_reply(_cluster)),
    13: Route(bn.decode_describe_options,
              lambda r: Call("GET", f"/options/{_SCOPE_NAMES[r.scope]}"), _json_reply(_options)),
    20: _no_route("GetMe (the connection's own client record)"),
    21: Route(bn.decode_get_client, lambda r: Call("GET", f"/clients/{r.client_id}"),
              _json_reply(_client_details)),
    22: Route(bn.decode_get_clients, lambda r: Call("GET", "/clients"),
              _each(bn.encode_clients, _client)),
    31: Route(bn.decode_get_user, lambda r: Call("GET", f"/users/{seg(r.user)}"),
              _one(bn.encode_user_details, _user)),
    32: Route(bn.decode_get_users, lambda r: Call("GET", "/users"),
              _each(bn.encode_users, _user)),
    33: Route(bn.decode_create_user, _create_user_call, _one(bn.encode_user_details, _user)),
    34: Route(bn.decode_delete_user, lambda r: Call("DELETE", f"/users/{seg(r.user)}")),
    35: Route(bn.decode_update_user, _update_user_call),
    36: Route(bn.decode_update_permissions, lambda r: Call(
        "PUT", f"/users/{seg(r.user)}/permissions", None,
        {"permissions": js.permissions_json(r.permissions)})),
    37: Route(bn.decode_change_password, lambda r: Call(
        "PUT", f"/users/{seg(r.user)}/password", None,
        {"current_password": r.current, "new_password": r.new})),
    41: Route(bn.decode_get_personal_access_tokens, lambda r: Call("GET",
                                                                 "/personal-access-tokens"),
              _each(bn.encode_tokens, lambda t: (t["name"], t["expiry_at"] or 0))),
    42: Route(bn.decode_create_personal_access_token, lambda r: Call(
        "POST", "/personal-access-tokens", None, {"name": r.name, "expiry": r.expiry}),
        _one(bn.encode_token, lambda t: t["token"])),
    43: Route(bn.decode_delete_personal_access_token,
              lambda r: Call("DELETE", f"/personal-access-tokens/{seg(r.name)}")),
    100: Route(bn.decode_poll_messages, _poll_call, _polled_reply),
    101: Route(bn.decode_send_messages, lambda r: Call("POST", _t(r) + "/messages"),
               _json_reply(_sent)),
    102: Route(bn.decode_flush_unsaved_buffer, lambda r: Call(
        "GET", f"{_t(r)}/messages/flush/{r.partition_id}/fsync="
               f"{'true' if r.fsync else 'false'}")),
    120: Route(bn.decode_get_consumer_offset, lambda r: Call(
        "GET", _t(r) + "/consumer-offsets", _offset_query(r, "reading an offset")),
        _json_reply(lambda o: bn.encode_stored_offset(StoredOffset(
            o["partition_id"], o["current_offset"], o["stored_offset"])))),
    121: Route(bn.decode_store_consumer_offset, _store_offset_call),
    122: Route(bn.decode_delete_consumer_offset, _delete_offset_call),
    200: Route(bn.decode_get_stream, lambda r: Call("GET", _s(r)),
               _json_reply(lambda s: bn.encode_stream_details(
                   StreamInfo(_stream(s), [_topic(t) for t in s["topics"]])))),
    201: Route(bn.decode_get_streams, lambda r: Call("GET", "/streams"),
               _each(bn.encode_streams, _stream)),
    202: Route(bn.decode_create_stream, lambda r: Call("POST", "/streams", None,
                                                      {"name": r.name}),
               _json_reply(lambda s: bn.encode_stream_details(
                   StreamInfo(_stream(s), [_topic(t) for t in s["topics"]])))),
    203: Route(bn.decode_delete_stream, lambda r: Call("DELETE", _s(r))),
    204: Route(bn.decode_update_stream, lambda r: Call("PUT", _s(r), None, {"name": r.name})),
    205: Route(bn.decode_purge_stream, lambda r: Call("DELETE", _s(r) + "/purge")),
    300: Route(bn.decode_get_topic, lambda r: Call("GET", _t(r)),
               _one(bn.encode_topic_details, _topic_details)),
    301: Route(bn.decode_get_topics, lambda r: Call("GET", _s(r) + "/topics"),
               _each(bn.encode_topics, _topic)),
    302: Route(bn.decode_create_topic, lambda r: Call(
        "POST", _s(r) + "/topics", None, _topic_body(r, partitions_count=r.partitions_count)),
        _one(bn.encode_topic_details, _topic_details)),
    303: Route(bn.decode_delete_topic, lambda r: Call("DELETE", _t(r))),
    304: Route(bn.decode_update_topic, lambda r: Call("PUT", _t(r), None, _topic_body(r))),
    305: Route(bn.decode_purge_topic, lambda r: Call("DELETE", _t(r) + "/purge")),
    402: Route(bn.decode_create_partitions, lambda r: Call(
        "POST", _t(r) + "/partitions", None, {"partitions_count": r.count})),
    403: Route(bn.decode_delete_partitions, lambda r: Call(
        "DELETE", _t(r) + "/partitions", {"partitions_count": str(r.count)})),
    503: Route(bn.decode_delete_segments, lambda r: Call(
        "DELETE", f"{_t(r)}/partitions/{r.partition_id}", {"segments_count": str(r.count)})),
    600: Route(bn.decode_get_consumer_group, lambda r: Call(
        "GET", f"{_t(r)}/consumer-groups/{seg(r.group)}"), _one(bn.encode_group_details, _group)),
    601: Route(bn.decode_get_consumer_groups, lambda r: Call("GET", _t(r) + "/consumer-groups"),
               _each(bn.encode_groups, _group)),
    602: Route(bn.decode_create_consumer_group, lambda r: Call(
        "POST", _t(r) + "/consumer-groups", None, {"name": r.name}),
        _one(bn.encode_group_details, _group)),
    603: Route(bn.decode_delete_consumer_group, lambda r: Call(
        "DELETE", f"{_t(r)}/consumer-groups/{seg(r.group)}")),
    604: _no_route("Joining a consumer group"),
    605: _no_route("Leaving a consumer group"),
    606: _no_route("Syncing a consumer group"),
}
