"""The admin commands, on the SDK's IggyClient: what Iggy's `iggy` CLI does, for iggy-fast.

    iggy-fast stream    create|list|get|update|delete|purge
    iggy-fast topic     create|list|get|update|delete|purge
    iggy-fast partition create|delete          iggy-fast segment delete
    iggy-fast user      create|list|get|update|password|permissions|delete
    iggy-fast pat       create|list|delete     (create prints the token, once)
    iggy-fast group     create|list|get|delete
    iggy-fast offset    get|set|delete
    iggy-fast message   send|poll|flush
    iggy-fast client    list|get
    iggy-fast stats | me | ping | options [topic|stream|user]

Names and positional arguments follow Iggy's CLI (`iggy topic create STREAM NAME PARTITIONS`,
`iggy consumer-offset get CONSUMER STREAM TOPIC PARTITION`), with Iggy's short aliases. A
stream, topic, group or user is named by its id or its name (a number is an id, as in the
SDKs). Ids are the server's to assign (PROTOCOL.md §10), so there is no `--stream-id` on
create. Every command takes the connection options of connect.py and `--output json`; each
is one short async function given a connected client.
"""

from __future__ import annotations

import base64
import re
import struct
import sys

from iggy_fast.cli.connect import connection_options, remote
from iggy_fast.cli.output import CommandError, done, emit, plain, tlv_dict

from iggy_fast.protocol.binary import parse_tlv

U64_MAX = (1 << 64) - 1


# -- argument types ---------------------------------------------------------------------------

def ident(text: str) -> int | str:
    """A stream, topic, group or user: a number is an id, anything else a name."""
    return int(text) if text.isdigit() else text


_UNITS_US = {"us": 1, "µs": 1, "ms": 1_000, "s": 1_000_000, "sec": 1_000_000,
             "m": 60_000_000, "min": 60_000_000, "h": 3_600_000_000, "hour": 3_600_000_000,
             "hours": 3_600_000_000, "d": 86_400_000_000, "day": 86_400_000_000,
             "days": 86_400_000_000, "w": 604_800_000_000, "week": 604_800_000_000,
             "weeks": 604_800_000_000}
_PART = re.compile(r"(\d+)\s*([a-zµ]+)?")


def expiry(text: str) -> int:
    """An expiry as Iggy writes them (`1h`, `15m`, `1d 12h`, `never`, `server_default`): µs,
    with Iggy's codes 0 (server default) and u64::MAX (never)."""
    word = text.strip().lower()
    if word in ("never", "none", "unlimited"):
        return U64_MAX
    if word in ("server_default", "default"):
        return 0
    total, pos = 0, 0
    for m in _PART.finditer(word):
        if word[pos:m.start()].strip() or (m.group(2) or "s") not in _UNITS_US:
            break
        total += int(m.group(1)) * _UNITS_US[m.group(2) or "s"]
        pos = m.end()
    if pos == 0 or word[pos:].strip():
        raise ValueError(text)
    return total
expiry.__name__ = "expiry (like 1h, 30m, 7d, never)"


_SIZE_UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
               "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def byte_size(text: str) -> int:
    """A size (`1GB`, `512MiB`, `unlimited`, `server_default`) in bytes, with Iggy's codes."""
    word = text.strip().lower().replace(" ", "")
    if word in ("unlimited", "none"):
        return U64_MAX
    if word in ("server_default", "default"):
        return 0
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([a-z]*)", word)
    if not m or (m.group(2) or "b") not in _SIZE_UNITS:
        raise ValueError(text)
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2) or "b"])
byte_size.__name__ = "size (like 1GB, 512MiB, unlimited)"


def key_value(text: str) -> tuple[str, str]:
    key, eq, value = text.partition("=")
    if not eq or not key or not value:
        raise ValueError(text)
    return key, value
key_value.__name__ = "KEY=VALUE"


# Header kinds as Iggy's CLI spells them (-H key:kind:value), with their §3 kind codes and
# encodings.
_HEADER_KINDS = {"raw": (1, None), "string": (2, None), "bool": (3, None),
                 "int8": (4, "<b"), "int16": (5, "<h"), "int32": (6, "<i"), "int64": (7, "<q"),
                 "int128": (8, 16), "uint8": (9, "<B"), "uint16": (10, "<H"),
                 "uint32": (11, "<I"), "uint64": (12, "<Q"), "uint128": (13, 16),
                 "float32": (14, "<f"), "float64": (15, "<d")}


def header(text: str) -> tuple[str, tuple[int, bytes]]:
    """`key:kind:value` to (key, (kind code, encoded value))."""
    parts = text.split(":", 2)
    if len(parts) != 3 or parts[1].lower() not in _HEADER_KINDS or not parts[0]:
        raise ValueError(text)
    key, kind, value = parts[0], parts[1].lower(), parts[2]
    code, fmt = _HEADER_KINDS[kind]
    if kind in ("raw", "string"):
        encoded = value.encode()
    elif kind == "bool":
        if value.lower() not in ("true", "false"):
            raise ValueError(text)
        encoded = bytes([value.lower() == "true"])
    elif fmt == 16:
        encoded = int(value).to_bytes(16, "little", signed=kind == "int128")
    else:
        encoded = struct.pack(fmt, float(value) if kind.startswith("float") else int(value))
    return key, (code, encoded)
header.__name__ = "header (key:kind:value, kind one of " + ", ".join(_HEADER_KINDS) + ")"


# Permission names, long as the SDK's fields and short as Iggy's CLI writes them.
_GLOBAL_SHORT = {"m_srv": "manage_servers", "r_srv": "read_servers", "m_usr": "manage_users",
                 "r_usr": "read_users", "m_str": "manage_streams", "r_str": "read_streams",
                 "m_top": "manage_topics", "r_top": "read_topics", "p_msg": "poll_messages",
                 "s_msg": "send_messages"}
_STREAM_SHORT = {"m_str": "manage_stream", "r_str": "read_stream", "m_top": "manage_topics",
                 "r_top": "read_topics", "p_msg": "poll_messages", "s_msg": "send_messages"}
_TOPIC_SHORT = {"m_top": "manage_topic", "r_top": "read_topic", "p_msg": "poll_messages",
                "s_msg": "send_messages"}


def _flags(text: str, short: dict, what: str) -> dict:
    names = {}
    for name in filter(None, (n.strip() for n in text.split(","))):
        name = short.get(name, name)
        if name not in short.values():
            raise CommandError(f"unknown {what} permission {name!r} (one of "
                               f"{', '.join(short.values())} or {', '.join(short)})")
        names[name] = True
    return names


def permissions(global_text: str | None, stream_texts: list[str] | None):
    """Permissions from Iggy's CLI syntax: `-g m_str,r_top` and
    `-s STREAM[:perms][#TOPIC[:perms]]...` (one -s per stream)."""
    from iggy_fast.protocol.models import (GlobalPermissions, Permissions, StreamPermissions,
                                           TopicPermissions)
    if global_text is None and not stream_texts:
        return None
    streams = {}
    for text in stream_texts or ():
        stream_part, *topic_parts = text.split("#")
        sid, _, flags = stream_part.partition(":")
        topics = {}
        for topic_text in topic_parts:
            tid, _, tflags = topic_text.partition(":")
            if not tid.isdigit():
                raise CommandError(f"topic permissions {topic_text!r}: TOPIC_ID[:perms]")
            topics[int(tid)] = TopicPermissions(**_flags(tflags, _TOPIC_SHORT, "topic"))
        if not sid.isdigit():
            raise CommandError(f"stream permissions {text!r}: STREAM_ID[:perms][#TOPIC_ID[:perms]]")
        streams[int(sid)] = StreamPermissions(**_flags(flags, _STREAM_SHORT, "stream"),
                                              topics=topics)
    return Permissions(GlobalPermissions(**_flags(global_text or "", _GLOBAL_SHORT, "global")),
                       streams)


# -- system -----------------------------------------------------------------------------------

@remote(login=False)
async def ping(client, args) -> int:
    import time
    times = []
    for i in range(args.count):
        start = time.perf_counter()
        await client.ping()
        times.append((time.perf_counter() - start) * 1000)
    if getattr(args, "output", "table") == "json":
        emit(args, {"count": len(times), "times_ms": [round(t, 3) for t in times]})
    else:
        for i, t in enumerate(times, 1):
            print(f"Ping {i}: {t:.2f} ms")
    return 0


@remote()
async def stats(client, args) -> int:
    emit(args, await client.get_stats(), title="Server stats")
    return 0


@remote()
async def me(client, args) -> int:
    emit(args, await client.get_me(), title="This client")
    return 0


@remote()
async def options(client, args) -> int:
    from iggy_fast.cli.output import tlv_value
    rows = [{"key": o.key, "default": tlv_value(o.kind, o.default),
             "description": o.description} for o in await client.describe_options(args.scope)]
    emit(args, rows, title=f"Options of a {args.scope}", columns=("key", "default",
                                                                  "description"))
    return 0


@remote()
async def client_list(client, args) -> int:
    emit(args, await client.get_clients(), title="Clients")
    return 0


@remote()
async def client_get(client, args) -> int:
    emit(args, _found(await client.get_client(args.client_id), f"client {args.client_id}"),
         title=f"Client {args.client_id}")
    return 0


def _found(obj, what: str):
    """A Get* answer of None (the server's "no such thing") as an error."""
    if obj is None:
        raise CommandError(f"{what} not found")
    return obj


# -- streams ----------------------------------------------------------------------------------

@remote()
async def stream_create(client, args) -> int:
    stream = await client.create_stream(args.name)
    done(args, f"Stream {stream.name} created with id {stream.id}", stream)
    return 0


@remote()
async def stream_list(client, args) -> int:
    emit(args, await client.get_streams(), title="Streams",
         columns=("id", "name", "topics_count", "messages_count", "size_bytes", "created_at"))
    return 0


@remote()
async def stream_get(client, args) -> int:
    stream = _found(await client.get_stream(args.stream), f"stream {args.stream}")
    emit(args, {**plain(stream), "topics": [_topic(t) for t in stream.topics]},
         title=f"Stream {args.stream}")
    return 0


@remote()
async def stream_update(client, args) -> int:
    await client.update_stream(args.stream, args.name)
    done(args, f"Stream {args.stream} renamed {args.name}", {"stream": args.stream,
                                                             "name": args.name})
    return 0


@remote()
async def stream_delete(client, args) -> int:
    await client.delete_stream(args.stream)
    done(args, f"Stream {args.stream} deleted", {"stream": args.stream, "deleted": True})
    return 0


@remote()
async def stream_purge(client, args) -> int:
    await client.purge_stream(args.stream)
    done(args, f"Stream {args.stream} purged", {"stream": args.stream, "purged": True})
    return 0


# -- topics -----------------------------------------------------------------------------------

def _topic(topic) -> dict:
    """A topic with its option entries as {key: value}, for reading."""
    data = plain(topic)
    for key in ("options", "derived_options"):
        if key in data:
            data[key] = tlv_dict(getattr(topic, key))
    return data


def _topic_options(args) -> dict:
    """The topic settings given on the command line, as the SDK's keywords."""
    options = {}
    if args.compression is not None:
        options["compression_algorithm"] = args.compression
    if args.message_expiry is not None:
        options["message_expiry"] = args.message_expiry
    if args.max_topic_size is not None:
        options["max_topic_size"] = args.max_topic_size
    if args.set:
        options["options"] = dict(args.set)
    return options


@remote()
async def topic_create(client, args) -> int:
    topic = await client.create_topic(args.stream, args.name, args.partitions_count,
                                      **_topic_options(args))
    done(args, f"Topic {topic.name} created with id {topic.id} and "
         f"{topic.partitions_count} partitions in stream {args.stream}", _topic(topic))
    return 0


@remote()
async def topic_list(client, args) -> int:
    emit(args, [_topic(t) for t in await client.get_topics(args.stream)],
         title=f"Topics of stream {args.stream}",
         columns=("id", "name", "partitions_count", "messages_count", "size_bytes",
                  "message_expiry", "max_topic_size", "created_at"))
    return 0


@remote()
async def topic_get(client, args) -> int:
    emit(args, _topic(_found(await client.get_topic(args.stream, args.topic),
                             f"topic {args.topic} of stream {args.stream}")),
         title=f"Topic {args.topic} of stream {args.stream}")
    return 0


@remote()
async def topic_update(client, args) -> int:
    name = args.name
    if name is None:
        name = _found(await client.get_topic(args.stream, args.topic),
                      f"topic {args.topic} of stream {args.stream}").name
    await client.update_topic(args.stream, args.topic, name, **_topic_options(args))
    done(args, f"Topic {args.topic} of stream {args.stream} updated",
         {"stream": args.stream, "topic": args.topic, "name": name, "updated": True})
    return 0


@remote()
async def topic_delete(client, args) -> int:
    await client.delete_topic(args.stream, args.topic)
    done(args, f"Topic {args.topic} of stream {args.stream} deleted",
         {"stream": args.stream, "topic": args.topic, "deleted": True})
    return 0


@remote()
async def topic_purge(client, args) -> int:
    await client.purge_topic(args.stream, args.topic)
    done(args, f"Topic {args.topic} of stream {args.stream} purged",
         {"stream": args.stream, "topic": args.topic, "purged": True})
    return 0


# -- partitions and segments --------------------------------------------------------------------

@remote()
async def partition_create(client, args) -> int:
    await client.create_partitions(args.stream, args.topic, args.count)
    done(args, f"{args.count} partition(s) added to topic {args.topic} of stream {args.stream}",
         {"stream": args.stream, "topic": args.topic, "created": args.count})
    return 0


@remote()
async def partition_delete(client, args) -> int:
    await client.delete_partitions(args.stream, args.topic, args.count)
    done(args, f"The last {args.count} partition(s) of topic {args.topic} deleted",
         {"stream": args.stream, "topic": args.topic, "deleted": args.count})
    return 0


@remote()
async def segment_delete(client, args) -> int:
    await client.delete_segments(args.stream, args.topic, args.partition, args.count)
    done(args, f"{args.count} segment(s) of partition {args.partition} deleted",
         {"stream": args.stream, "topic": args.topic, "partition": args.partition,
          "deleted": args.count})
    return 0


# -- users ----------------------------------------------------------------------------------

_STATUS = {"active": 1, "inactive": 2}


@remote()
async def user_create(client, args) -> int:
    user = await client.create_user(args.new_username, args.new_password, _STATUS[args.status],
                                    permissions(args.global_permissions,
                                                args.stream_permissions))
    done(args, f"User {user.username} created with id {user.id}", user)
    return 0


@remote()
async def user_list(client, args) -> int:
    emit(args, await client.get_users(), title="Users",
         columns=("id", "username", "status", "created_at"))
    return 0


@remote()
async def user_get(client, args) -> int:
    emit(args, _found(await client.get_user(args.user), f"user {args.user}"),
         title=f"User {args.user}")
    return 0


@remote()
async def user_update(client, args) -> int:
    if args.name is None and args.status is None:
        raise CommandError("nothing to change: give --name and/or --status")
    await client.update_user(args.user, args.name,
                             None if args.status is None else _STATUS[args.status])
    done(args, f"User {args.user} updated", {"user": args.user, "updated": True})
    return 0


@remote()
async def user_password(client, args) -> int:
    await client.change_password(args.user, args.current_password, args.new_password)
    done(args, f"Password of user {args.user} changed", {"user": args.user, "changed": True})
    return 0


@remote()
async def user_permissions(client, args) -> int:
    await client.update_permissions(args.user, permissions(args.global_permissions,
                                                           args.stream_permissions))
    done(args, f"Permissions of user {args.user} updated", {"user": args.user, "updated": True})
    return 0


@remote()
async def user_delete(client, args) -> int:
    await client.delete_user(args.user)
    done(args, f"User {args.user} deleted", {"user": args.user, "deleted": True})
    return 0


# -- personal access tokens -----------------------------------------------------------------

@remote()
async def pat_create(client, args) -> int:
    token = await client.create_personal_access_token(args.name, args.expiry)
    raw = getattr(token, "token", token)
    if getattr(args, "output", "table") == "json":
        emit(args, {"name": args.name, "token": raw})
    else:
        print(raw)                  # alone on its line, for `TOKEN=$(iggy-fast pat create ...)`
    return 0


@remote()
async def pat_list(client, args) -> int:
    emit(args, await client.get_personal_access_tokens(), title="Personal access tokens",
         columns=("name", "expiry_at"))
    return 0


@remote()
async def pat_delete(client, args) -> int:
    await client.delete_personal_access_token(args.name)
    done(args, f"Personal access token {args.name} deleted", {"name": args.name, "deleted": True})
    return 0


# -- consumer groups and offsets -------------------------------------------------------------

@remote()
async def group_create(client, args) -> int:
    group = await client.create_consumer_group(args.stream, args.topic, args.name)
    done(args, f"Consumer group {group.name} created with id {group.id}", group)
    return 0


@remote()
async def group_list(client, args) -> int:
    emit(args, await client.get_consumer_groups(args.stream, args.topic),
         title=f"Consumer groups of topic {args.topic}")
    return 0


@remote()
async def group_get(client, args) -> int:
    emit(args, _found(await client.get_consumer_group(args.stream, args.topic, args.group),
                      f"consumer group {args.group}"), title=f"Consumer group {args.group}")
    return 0


@remote()
async def group_delete(client, args) -> int:
    await client.delete_consumer_group(args.stream, args.topic, args.group)
    done(args, f"Consumer group {args.group} deleted",
         {"stream": args.stream, "topic": args.topic, "group": args.group, "deleted": True})
    return 0


def _consumer(args):
    from iggy_fast.client.types import Consumer
    return (Consumer.group if args.kind == "group" else Consumer.single)(args.consumer)


@remote()
async def offset_get(client, args) -> int:
    offset = _found(await client.get_consumer_offset(args.stream, args.topic, args.partition,
                                                     _consumer(args)),
                    f"a stored offset of {args.kind} {args.consumer}")
    emit(args, offset, title=f"Offset of {args.kind} {args.consumer}")
    return 0


async def _as_member(client, args, change) -> None:
    """Run `change()` (a store or delete of an offset). A group's offset may only be changed
    by the member owning the partition, so for a group this connection joins it for the
    change and leaves after; with other members online the partition may be theirs."""
    from iggy_fast.protocol.errors import ResourceNotFound
    if args.kind != "group":
        await change()
        return
    await client.join_consumer_group(args.stream, args.topic, args.consumer)
    try:
        await change()
    except ResourceNotFound:
        raise CommandError(f"partition {args.partition} belongs to another member of group "
                           f"{args.consumer}: change its offset when the group is idle, or "
                           f"from that member") from None
    finally:
        await client.leave_consumer_group(args.stream, args.topic, args.consumer)


@remote()
async def offset_set(client, args) -> int:
    await _as_member(client, args, lambda: client.store_consumer_offset(
        args.stream, args.topic, args.offset, args.partition, _consumer(args)))
    done(args, f"Offset of {args.kind} {args.consumer} on partition {args.partition} set to "
         f"{args.offset}", {"consumer": args.consumer, "partition": args.partition,
                            "offset": args.offset})
    return 0


@remote()
async def offset_delete(client, args) -> int:
    await _as_member(client, args, lambda: client.delete_consumer_offset(
        args.stream, args.topic, args.partition, _consumer(args)))
    done(args, f"Offset of {args.kind} {args.consumer} on partition {args.partition} deleted",
         {"consumer": args.consumer, "partition": args.partition, "deleted": True})
    return 0


# -- messages -----------------------------------------------------------------------------------

def _payloads(args) -> list[bytes]:
    if args.input_file:
        with open(args.input_file, "rb") as f:
            return [line.rstrip(b"\r\n") for line in f if line.strip()]
    if args.messages:
        return [m.encode() for m in args.messages]
    # Neither: one message per line of stdin, as Iggy's CLI reads them.
    return [line.rstrip("\r\n").encode() for line in sys.stdin if line.strip()]


@remote()
async def message_send(client, args) -> int:
    from iggy_fast.client.types import Partitioning, SendMessage
    payloads = _payloads(args)
    if not payloads:
        raise CommandError("no messages to send (give them as arguments, --input-file or stdin)")
    headers = dict(args.headers) if args.headers else None
    if args.partition_id is not None:
        partitioning = Partitioning.partition_id(args.partition_id)
    elif args.message_key is not None:
        partitioning = Partitioning.messages_key(args.message_key)
    else:
        partitioning = Partitioning.balanced()
    sent = await client.send_messages(args.stream, args.topic, partitioning,
                                      [SendMessage(p, headers) for p in payloads])
    result = {"stream": args.stream, "topic": args.topic, "count": len(payloads)}
    if sent is not None:
        result.update(partition_id=sent.partition_id, base_offset=sent.base_offset)
    done(args, f"Sent {len(payloads)} message(s) to topic {args.topic} of stream {args.stream}"
         + (f", partition {sent.partition_id} from offset {sent.base_offset}" if sent else ""),
         result)
    return 0


def _message_row(m, show_headers: bool) -> dict:
    try:
        payload, encoding = bytes(m.payload).decode(), "utf-8"
    except UnicodeDecodeError:
        payload, encoding = base64.b64encode(bytes(m.payload)).decode(), "base64"
    row = {"offset": m.offset, "timestamp": m.timestamp, "id": f"{m.id:032x}",
           "size": len(m.payload), "payload": payload, "encoding": encoding}
    if show_headers:
        row["headers"] = tlv_dict(parse_tlv(m.user_headers)) if m.user_headers else {}
    return row


@remote()
async def message_poll(client, args) -> int:
    from iggy_fast.client.types import Consumer, PollingStrategy
    if args.offset is not None:
        strategy = PollingStrategy.Offset(args.offset)
    elif args.first:
        strategy = PollingStrategy.First()
    elif args.last:
        strategy = PollingStrategy.Last()
    else:
        strategy = PollingStrategy.Next()
    polled = await client.poll_messages(args.stream, args.topic, partition_id=args.partition,
                                        polling_strategy=strategy, count=args.message_count,
                                        auto_commit=args.auto_commit,
                                        consumer=Consumer.single(args.consumer))
    if args.output_file:
        with open(args.output_file, "ab") as f:
            for m in polled:
                f.write(bytes(m.payload) + b"\n")
    rows = [_message_row(m, args.show_headers) for m in polled]
    if getattr(args, "output", "table") == "json":
        emit(args, {"partition_id": polled.partition_id,
                    "current_offset": polled.current_offset, "count": len(rows),
                    "messages": rows})
    else:
        emit(args, rows, title=f"{len(rows)} message(s) from partition {args.partition} "
             f"(current offset {polled.current_offset})",
             columns=("offset", "timestamp", "size", "payload")
             + (("headers",) if args.show_headers else ()))
    return 0


@remote()
async def message_flush(client, args) -> int:
    await client.flush_unsaved_buffer(args.stream, args.topic, args.partition, args.fsync)
    done(args, f"Partition {args.partition} flushed", {"partition": args.partition,
                                                       "flushed": True})
    return 0


# -- the parsers ------------------------------------------------------------------------------

def add_parser(sub) -> None:
    conn = connection_options()

    def group(name, aliases, help):
        parser = sub.add_parser(name, aliases=aliases, parents=[conn], help=help)
        return parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(actions, name, alias, func, help, *positionals):
        parser = actions.add_parser(name, aliases=[alias] if alias else [], parents=[conn],
                                    help=help)
        for spec in positionals:
            arg, kind = spec if isinstance(spec, tuple) else (spec, ident)
            parser.add_argument(arg, type=kind)
        parser.set_defaults(func=func)
        return parser

    def system(name, func, help):
        parser = sub.add_parser(name, parents=[conn], help=help)
        parser.set_defaults(func=func)
        return parser

    system("ping", ping, "check that the server answers (no login needed)").add_argument(
        "-c", "--count", type=int, default=1, help="pings to send")
    system("stats", stats, "the server's statistics")
    system("me", me, "this connection as the server sees it")
    system("options", options, "the settings a topic (or stream, user) accepts, with their "
           "defaults").add_argument("scope", choices=("topic", "stream", "user"), nargs="?",
                                    default="topic")

    a = group("stream", ["s"], "streams")
    action(a, "create", "c", stream_create, "create a stream", ("name", str))
    action(a, "list", "l", stream_list, "list the streams")
    action(a, "get", "g", stream_get, "a stream and its topics", "stream")
    action(a, "update", "u", stream_update, "rename a stream", "stream", ("name", str))
    action(a, "delete", "d", stream_delete, "delete a stream and everything in it", "stream")
    action(a, "purge", "p", stream_purge, "delete every message of a stream", "stream")

    def topic_settings(parser, create: bool):
        parser.add_argument("--compression", choices=("none", "gzip"))
        parser.add_argument("--message-expiry", type=expiry,
                            help="how long messages are kept: 1h, 7d, never, server_default")
        parser.add_argument("--max-topic-size", type=byte_size,
                            help="1GB, 512MiB, unlimited, server_default")
        parser.add_argument("--set", type=key_value, action="append", metavar="KEY=VALUE",
                            help="any other topic option (docs/configuration.md), repeatable")

    a = group("topic", ["t"], "topics")
    topic_settings(action(a, "create", "c", topic_create, "create a topic", "stream",
                          ("name", str), ("partitions_count", int)), True)
    action(a, "list", "l", topic_list, "list the topics of a stream", "stream")
    action(a, "get", "g", topic_get, "a topic and its partitions", "stream", "topic")
    p = action(a, "update", "u", topic_update, "rename a topic or change its settings",
               "stream", "topic")
    p.add_argument("name", nargs="?", help="its new name (default: unchanged)")
    topic_settings(p, False)
    action(a, "delete", "d", topic_delete, "delete a topic", "stream", "topic")
    action(a, "purge", "p", topic_purge, "delete every message of a topic", "stream", "topic")

    a = group("partition", ["p"], "partitions")
    action(a, "create", "c", partition_create, "add partitions to a topic", "stream", "topic",
           ("count", int))
    action(a, "delete", "d", partition_delete, "delete a topic's last partitions", "stream",
           "topic", ("count", int))

    a = group("segment", ["seg"], "segments")
    action(a, "delete", "d", segment_delete, "delete a partition's oldest segments", "stream",
           "topic", ("partition", int), ("count", int))

    def permission_options(parser):
        parser.add_argument("-g", "--global-permissions", metavar="PERMS",
                            help="comma-separated: manage_servers (m_srv), read_servers "
                            "(r_srv), manage_users, read_users, manage_streams, read_streams, "
                            "manage_topics, read_topics, poll_messages, send_messages")
        parser.add_argument("-s", "--stream-permissions", action="append",
                            metavar="STREAM[:PERMS][#TOPIC[:PERMS]]...",
                            help="one stream's permissions (and its topics'), repeatable")

    a = group("user", ["u"], "users")
    p = action(a, "create", "c", user_create, "create a user")
    # Not `username`/`password`: those are the login's (connect.py).
    p.add_argument("new_username", metavar="username")
    p.add_argument("new_password", metavar="password")
    p.add_argument("--status", choices=tuple(_STATUS), default="active")
    permission_options(p)
    action(a, "list", "l", user_list, "list the users")
    action(a, "get", "g", user_get, "a user and their permissions", "user")
    p = action(a, "update", "n", user_update, "change a user's name or status", "user")
    p.add_argument("--name", help="the new username")
    p.add_argument("--status", choices=tuple(_STATUS))
    action(a, "password", "pwd", user_password, "change a user's password", "user",
           ("current_password", str), ("new_password", str))
    permission_options(action(a, "permissions", "p", user_permissions,
                              "replace a user's permissions", "user"))
    action(a, "delete", "d", user_delete, "delete a user", "user")

    a = group("pat", [], "personal access tokens")
    p = action(a, "create", "c", pat_create, "create a token and print it (shown only once)",
               ("name", str))
    p.add_argument("--expiry", type=expiry, default=0,
                   help="how long it is valid: 1h, 30d, never (default: the server's)")
    action(a, "list", "l", pat_list, "list your tokens")
    action(a, "delete", "d", pat_delete, "delete a token", ("name", str))

    a = group("group", ["consumer-group", "g"], "consumer groups")
    action(a, "create", "c", group_create, "create a consumer group", "stream", "topic",
           ("name", str))
    action(a, "list", "l", group_list, "list a topic's consumer groups", "stream", "topic")
    action(a, "get", "g", group_get, "a consumer group and its members", "stream", "topic",
           "group")
    action(a, "delete", "d", group_delete, "delete a consumer group", "stream", "topic",
           "group")

    a = group("offset", ["consumer-offset", "o"], "stored consumer offsets")
    offset_args = ("consumer", "stream", "topic", ("partition", int))
    for name, alias, func, help, extra in (
            ("get", "g", offset_get, "a consumer's stored offset", ()),
            ("set", "s", offset_set, "store a consumer's offset", (("offset", int),)),
            ("delete", "d", offset_delete, "forget a consumer's stored offset", ())):
        p = action(a, name, alias, func, help, *offset_args, *extra)
        p.add_argument("-k", "--kind", choices=("consumer", "group"), default="consumer")

    a = group("message", ["m"], "send and poll messages")
    p = action(a, "send", "s", message_send, "send messages (arguments, --input-file or "
               "stdin lines)", "stream", "topic")
    p.add_argument("messages", nargs="*")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--partition-id", type=int, help="default: the server balances")
    where.add_argument("-m", "--message-key", help="messages with one key share a partition")
    p.add_argument("-H", "--headers", type=header, action="append",
                   metavar="KEY:KIND:VALUE", help="a user header on every message, repeatable")
    p.add_argument("--input-file", help="one message per line")
    p = action(a, "poll", "p", message_poll, "poll messages from a partition", "stream",
               "topic", ("partition", int))
    p.add_argument("-m", "--message-count", type=int, default=1)
    p.add_argument("-a", "--auto-commit", action="store_true")
    start = p.add_mutually_exclusive_group()
    start.add_argument("-o", "--offset", type=int, help="from this offset")
    start.add_argument("-f", "--first", action="store_true", help="from the first message")
    start.add_argument("-l", "--last", action="store_true", help="the last messages")
    start.add_argument("-n", "--next", action="store_true",
                       help="after the consumer's stored offset (the default)")
    p.add_argument("-c", "--consumer", type=ident, default=1)
    p.add_argument("-s", "--show-headers", action="store_true")
    p.add_argument("--output-file", help="append each payload as a line to this file")
    p = action(a, "flush", "f", message_flush, "flush a partition's unsaved messages",
               "stream", "topic", ("partition", int))
    p.add_argument("--fsync", action="store_true")

    a = group("client", ["c"], "connected clients")
    action(a, "list", "l", client_list, "list the connected clients")
    action(a, "get", "g", client_get, "one client", ("client_id", int))

