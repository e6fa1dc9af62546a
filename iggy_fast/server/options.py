"""Topic options: the TLV option blocks of CreateTopic/UpdateTopic and their catalog.

A TLV entry is [key_kind u8][key_len u32][key][value_kind u8][value_len u32][value]
(PROTOCOL.md §3); the block's codec is the protocol's (protocol/binary.py), and this
module takes the entries it decodes. Known keys are checked and resolved to typed settings;
a numeric key may come typed (Uint64, ...) or as a String ("7 days", "1 GiB"), as the
official SDK's `options={...}` dict sends them, and is kept and shown in the catalog's kind
whichever way it came. Unknown keys are kept and echoed verbatim, so newer clients work.

A refusal's message names the key and the value (the reply carries only the code; the service
logs the message). A topic's segment_size obeys the same rule as the server-wide
[system.segment] size (`check_segment_size`): what the operator may set for every topic, a
topic may ask for itself.
"""

from __future__ import annotations

import struct

from iggy_fast.config import NEVER, ConfigError, parse_bool, parse_duration_us, parse_size
from iggy_fast.protocol.errors import (InvalidOptionValue, InvalidReplicationFactor,
                                      InvalidTopicSize, UnsupportedOptionKey)

RAW, STRING, BOOL, UINT32, UINT64 = 1, 2, 3, 11, 12
_INT_KINDS = {4: (1, True), 5: (2, True), 6: (4, True), 7: (8, True), 8: (16, True),
              9: (1, False), 10: (2, False), 11: (4, False), 12: (8, False), 13: (16, False)}

# Segment sizes, for a topic and server-wide alike: up to Iggy's 1 GiB ceiling, and not so
# small that every batch would open a file of its own.
SEGMENT_SIZE_RANGE = (4096, 1 << 30)

COMPRESSION = {"none": 1, "gzip": 2}
COMPRESSION_NAMES = {v: k for k, v in COMPRESSION.items()}


def _int_value(kind: int, value: bytes) -> int:
    width, signed = _INT_KINDS[kind]
    if len(value) != width:
        raise ValueError("width")
    return int.from_bytes(value, "little", signed=signed)


def _as_text(kind: int, value: bytes) -> str | None:
    return value.decode("utf-8") if kind == STRING else None


def _shown(kind: int, value: bytes) -> str:
    """A value as a log line may show it: text quoted, an integer as such, else hex."""
    try:
        if kind == STRING:
            text = value.decode("utf-8")
            return repr(text if len(text) <= 64 else text[:64] + "...")
        if kind in _INT_KINDS:
            return str(_int_value(kind, value))
        if kind == BOOL and len(value) == 1:
            return str(value != b"\x00").lower()
    except (ValueError, UnicodeDecodeError):
        pass
    shown = value[:32].hex()
    return f"0x{shown}{'...' if len(value) > 32 else ''} (kind {kind})"


def check_segment_size(size: int) -> str | None:
    """Why `size` cannot be a segment size, or None when it can."""
    low, high = SEGMENT_SIZE_RANGE
    if not low <= size <= high:
        return f"must be {low} bytes (4 KiB) .. {high} bytes (1 GiB)"
    return None


class TopicSettings:
    """The resolved settings of one topic (what storage and retention act on)."""

    FIELDS = ("compression", "message_expiry", "max_topic_size", "segment_size",
              "enforce_fsync", "messages_required_to_save",
              "size_of_messages_required_to_save", "preallocate_segments",
              "durability", "consumer_offset_durability", "replication_factor",
              "min_in_sync_replicas")

    def __init__(self, **values):
        for field in self.FIELDS:
            setattr(self, field, values[field])

    def to_dict(self) -> dict:
        return {f: getattr(self, f) for f in self.FIELDS}


# key -> (wire kind, description, parser(kind, bytes) -> value, encoder(value) -> bytes)
def _u64_parser(text_parser):
    def parse(kind, value):
        if kind in _INT_KINDS:
            return _int_value(kind, value)
        text = _as_text(kind, value)
        if text is None:
            raise ValueError("kind")
        return text_parser(text) if not text.strip().isdigit() else int(text)
    return parse


def _bool_parser(kind, value):
    if kind == BOOL:
        return value != b"\x00"
    text = _as_text(kind, value)
    if text is None:
        raise ValueError("kind")
    return parse_bool(text)


def _compression_parser(kind, value):
    text = _as_text(kind, value)
    if text is None or text.lower() not in COMPRESSION:
        raise ValueError("compression")
    return COMPRESSION[text.lower()]


def _durability_parser(kind, value):
    text = _as_text(kind, value)
    if text not in ("replicated", "persisted"):
        raise ValueError("durability")
    return text


CATALOG = {
    "compression_algorithm": (STRING, "compression", "Compression of message payloads: none or gzip (metadata only).",
                              _compression_parser, lambda v: COMPRESSION_NAMES[v].encode()),
    "message_expiry": (UINT64, "message_expiry", "How long messages are kept, in microseconds (u64::MAX = never).",
                       _u64_parser(parse_duration_us), lambda v: struct.pack("<Q", v)),
    "max_topic_size": (UINT64, "max_topic_size", "Largest size of the topic in bytes before the oldest segments are deleted (u64::MAX = unlimited).",
                       _u64_parser(parse_size), lambda v: struct.pack("<Q", v)),
    "segment_size": (UINT64, "segment_size", "Size of a segment file in bytes (4 KiB..1 GiB).",
                     _u64_parser(parse_size), lambda v: struct.pack("<Q", v)),
    "enforce_fsync": (BOOL, "enforce_fsync", "Acknowledge a send only once its bytes are on disk.",
                      _bool_parser, lambda v: b"\x01" if v else b"\x00"),
    "messages_required_to_save": (UINT32, "messages_required_to_save", "Messages appended before the partition is synced to disk.",
                                  _u64_parser(int), lambda v: struct.pack("<I", v)),
    "size_of_messages_required_to_save": (UINT64, "size_of_messages_required_to_save", "Bytes appended before the partition is synced to disk.",
                                          _u64_parser(parse_size), lambda v: struct.pack("<Q", v)),
    "preallocate_segments": (BOOL, "preallocate_segments", "Reserve a segment's bytes when it is opened.",
                             _bool_parser, lambda v: b"\x01" if v else b"\x00"),
    "durability": (STRING, "durability", "When a send is acknowledged: replicated or persisted.",
                   _durability_parser, lambda v: v.encode()),
    "consumer_offset_durability": (STRING, "consumer_offset_durability", "When an offset store is acknowledged: replicated or persisted.",
                                   _durability_parser, lambda v: v.encode()),
    "replication_factor": (UINT32, "replication_factor", "Nodes each partition is placed on, in a cluster (1..255; fixed at creation).",
                           _u64_parser(int), lambda v: struct.pack("<I", v)),
    "min_in_sync_replicas": (UINT32, "min_in_sync_replicas", "Sends are refused (transient_not_accepted) while a partition has fewer in-sync replicas, in a cluster.",
                             _u64_parser(int), lambda v: struct.pack("<I", v)),
}

# Keys UpdateTopic may change (others there are refused, as Iggy does).
UPDATABLE = {"compression_algorithm", "message_expiry", "max_topic_size"}


def default_settings(cfg: dict) -> dict:
    """The server-wide settings every topic starts from; ConfigError for a value a topic
    could not set either."""
    system = cfg["system"]
    part = system["partition"]
    segment_size = parse_size(system["segment"]["size"])
    refused = check_segment_size(segment_size)
    if refused:
        raise ConfigError(f"system.segment.size: {system['segment']['size']!r} {refused}")
    return {
        "compression": 1,
        "message_expiry": parse_duration_us(system["topic"]["message_expiry"]),
        "max_topic_size": parse_size(system["topic"]["max_size"]),
        "segment_size": segment_size,
        "enforce_fsync": bool(part["enforce_fsync"]),
        "messages_required_to_save": int(part["messages_required_to_save"]),
        "size_of_messages_required_to_save": parse_size(part["size_of_messages_required_to_save"]),
        "preallocate_segments": False,
        "durability": "replicated",
        "consumer_offset_durability": "replicated",
        # A single node is one replica of everything (and always in sync with itself).
        "replication_factor": int(cfg["cluster"]["replication_factor"])
        if cfg["cluster"]["enabled"] else 1,
        "min_in_sync_replicas": 1,
    }


def resolve(entries, defaults: dict, current: dict | None = None,
            updatable_only: bool = False) -> tuple[dict, list]:
    """Apply option entries on top of `current` (or the defaults).

    Returns (settings, explicit entries to keep: catalog keys in their catalog kind, see
    `canonical`). Sentinels: 0 means "server default" for message_expiry and
    max_topic_size, as on the wire.
    """
    settings = dict(current or defaults)
    seen = set()
    kept = []
    for key_kind, key, value_kind, value in entries:
        if key_kind != STRING:
            raise UnsupportedOptionKey(f"option key {_shown(key_kind, key)}: keys must be "
                                       f"strings")
        name = key.decode("utf-8", "replace")
        if name in seen:
            raise InvalidOptionValue(f"option {name!r} given twice")
        seen.add(name)
        spec = CATALOG.get(name)
        if spec is None:
            if updatable_only:
                raise UnsupportedOptionKey(f"option {name!r} is not known, so cannot be "
                                           f"updated")
            kept.append((key_kind, key, value_kind, value))
            continue
        if updatable_only and name not in UPDATABLE:
            raise UnsupportedOptionKey(f"option {name!r} cannot be updated (only "
                                       f"{', '.join(sorted(UPDATABLE))})")
        shown = _shown(value_kind, value)
        try:
            parsed = spec[3](value_kind, value)
        except (ValueError, KeyError, UnicodeDecodeError):
            raise InvalidOptionValue(f"option {name!r}: {shown} is not a valid value") from None
        field = spec[1]
        if field in ("message_expiry", "max_topic_size") and parsed == 0:
            parsed = defaults[field]
        if field == "segment_size":
            refused = check_segment_size(parsed)
            if refused:
                raise InvalidOptionValue(f"option {name!r}: {shown} {refused}")
        if field == "messages_required_to_save" and parsed < 1:
            raise InvalidOptionValue(f"option {name!r}: {shown} must be at least 1")
        if field == "replication_factor" and not 1 <= parsed <= 255:
            raise InvalidReplicationFactor(f"option {name!r}: {shown} must be 1..255")
        if field == "min_in_sync_replicas" and parsed < 1:
            raise InvalidOptionValue(f"option {name!r}: {shown} must be at least 1")
        settings[field] = parsed
        kept.append((key_kind, key, value_kind, value))
    if settings["max_topic_size"] != NEVER and settings["max_topic_size"] < settings["segment_size"]:
        raise InvalidTopicSize(f"option 'max_topic_size': {settings['max_topic_size']} is "
                               f"smaller than one segment ({settings['segment_size']} bytes)")
    if settings["min_in_sync_replicas"] > settings["replication_factor"]:
        raise InvalidOptionValue(f"option 'min_in_sync_replicas': "
                                 f"{settings['min_in_sync_replicas']} is more than the topic's "
                                 f"replication_factor ({settings['replication_factor']}): no "
                                 f"send could ever be accepted")
    return settings, canonical(kept, settings)


def canonical(entries, settings: dict) -> list:
    """Explicit entries as GetTopic shows them: a catalog key with its resolved value in the
    catalog's kind (what DescribeOptions declares: `enforce_fsync` a Bool, `segment_size`
    a Uint64 of bytes), whether the client sent it typed or as a String ("true", "1 GiB"),
    as Iggy does; other keys verbatim."""
    out = []
    for key_kind, key, value_kind, value in entries:
        spec = CATALOG.get(key.decode("utf-8", "replace")) if key_kind == STRING else None
        if spec is not None:
            value_kind, value = spec[0], spec[4](settings[spec[1]])
        out.append((key_kind, key, value_kind, value))
    return out


def derived_entries(settings: dict, explicit_keys: set[str]) -> list:
    """The catalog keys the client did not set, with the values the server resolved, as
    TLV entries."""
    entries = []
    for name in sorted(CATALOG):
        if name in explicit_keys:
            continue
        kind, field, _desc, _parse, encode = CATALOG[name]
        entries.append((STRING, name.encode(), kind, encode(settings[field])))
    return entries


def describe(defaults: dict) -> list[tuple[str, int, bytes, str]]:
    """(key, kind, default value bytes, description) for DescribeOptions, topic scope."""
    return [(name, kind, encode(defaults[field]), desc)
            for name, (kind, field, desc, _parse, encode) in sorted(CATALOG.items())]
