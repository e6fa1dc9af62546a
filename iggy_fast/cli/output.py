"""How the admin commands answer: tables for people, JSON for scripts (`--output json`).

A command hands `emit()` plain data: a dict (one object), a list of dicts (a listing) or
the SDK's model objects (dataclasses, named tuples), which are turned into dicts first. With
`--output json` that data is printed as it is, numbers raw (µs timestamps, bytes), so a script
reads exactly what the server said. In a table the same numbers are made readable (dates,
KiB/MiB, durations) by the name of their field, and a list inside an object (a stream's
topics, a group's members) becomes a table of its own under the object's.

Failures go to stderr as one line, `iggy-fast: error: ...`, with exit code 1 (a server's
Iggy error names its code); argparse's usage errors keep their exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import struct
import sys

U64_MAX = (1 << 64) - 1


def output_options() -> argparse.ArgumentParser:
    """The `--output` option, for a command's parser `parents`."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--output", choices=("table", "json"), default=argparse.SUPPRESS,
                        help="a table for people (default) or JSON for scripts")
    return parent


def _json(args) -> bool:
    return getattr(args, "output", "table") == "json"


def plain(obj):
    """Model objects as JSON-ready data: dicts, lists, numbers, strings (bytes as text when
    they are UTF-8, else hex)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name.rstrip("_"): plain(getattr(obj, f.name))
                for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple) and hasattr(obj, "_asdict"):
        return {k: plain(v) for k, v in obj._asdict().items()}
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (bytes, bytearray, memoryview)):
        raw = bytes(obj)
        try:
            return raw.decode()
        except UnicodeDecodeError:
            return raw.hex()
    return obj


_INT_KINDS = {4: "<b", 5: "<h", 6: "<i", 7: "<q", 9: "<B", 10: "<H", 11: "<I", 12: "<Q",
              14: "<f", 15: "<d"}


def tlv_value(kind: int, raw: bytes):
    """A header or option value (§3 kinds) as the Python value it stands for."""
    raw = bytes(raw)
    if kind == 2:
        return raw.decode(errors="replace")
    if kind == 3:
        return raw != b"\x00"
    if kind in (8, 13):
        return int.from_bytes(raw, "little", signed=kind == 8)
    if kind in _INT_KINDS and len(raw) == struct.calcsize(_INT_KINDS[kind]):
        return struct.unpack(_INT_KINDS[kind], raw)[0]
    return raw.hex()


def tlv_dict(entries) -> dict:
    """TLV entries [(key kind, key, value kind, value)] as {key: value}."""
    return {str(tlv_value(kk, k)): tlv_value(vk, v) for kk, k, vk, v in entries}


def emit(args, data, columns=None, title: str | None = None) -> None:
    """Print `data` (an object or a list of objects) as JSON or as table(s); `columns`
    chooses and orders a listing's columns (default: every field that is not a list)."""
    data = plain(data)
    if _json(args):
        import orjson
        sys.stdout.buffer.write(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
        sys.stdout.flush()
        return
    from rich.console import Console
    console = Console()
    if isinstance(data, list):
        if data or columns:
            console.print(listing(data, columns, title))
        else:
            console.print(f"{title or 'List'}: none")
        return
    console.print(record(data, title))
    for key, value in data.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            console.print(listing(value, None, label(key).capitalize()))


def done(args, message: str, data) -> None:
    """What a command that changes something answers: a sentence, or `data` as JSON."""
    if _json(args):
        emit(args, data)
    else:
        print(message)


# Column headings shorter than the field names, so listings fit a terminal.
_LABELS = {"partitions_count": "partitions", "messages_count": "messages", "size_bytes": "size",
           "topics_count": "topics", "streams_count": "streams", "clients_count": "clients",
           "created_at": "created", "members_count": "members",
           "consumer_groups_count": "groups", "segments_count": "segments",
           "current_offset": "current offset", "message_expiry": "expiry",
           "max_topic_size": "max size", "compression_algorithm": "compression"}


def label(key: str) -> str:
    return _LABELS.get(key, key.replace("_", " "))


def listing(rows: list, columns=None, title: str | None = None):
    from rich.table import Table
    if columns is None:
        columns = [k for k, v in rows[0].items() if not isinstance(v, (list, dict))] if rows else []
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(label(column), overflow="fold",
                         justify="right" if rows and isinstance(rows[0].get(column), (int, float))
                         and not isinstance(rows[0].get(column), bool) else "left")
    for row in rows:
        table.add_row(*(cell(column, row.get(column)) for column in columns))
    return table


def record(obj: dict, title: str | None = None):
    from rich.table import Table
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in obj.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            continue                    # shown as a table of its own
        table.add_row(label(key), cell(key, value))
    return table


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def duration(us: int) -> str:
    seconds = us / 1e6
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, s = divmod(int(seconds), 60)
    hours, m = divmod(minutes, 60)
    days, h = divmod(hours, 24)
    return (f"{days}d " if days else "") + f"{h}h {m}m {s}s"


def permissions_text(p: dict) -> str:
    """A user's permissions (plain() of the SDK's Permissions) as one line per scope."""
    def granted(flags: dict) -> str:
        return ", ".join(k for k, v in flags.items() if v is True) or "none"
    lines = [f"global: {granted(p.get('global', {}))}"]
    for sid, sp in p.get("streams", {}).items():
        lines.append(f"stream {sid}: {granted(sp)}")
        for tid, tp in sp.get("topics", {}).items():
            lines.append(f"stream {sid} topic {tid}: {granted(tp)}")
    return "\n".join(lines)


def cell(key: str, value) -> str:
    """A field's value for a person: by its name, µs timestamps as dates, bytes as sizes."""
    if value is None:
        return "never" if key == "expiry_at" else ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key == "permissions" and isinstance(value, dict):
        return permissions_text(value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items() if v not in (False, None, {}, []))
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, int):
        if key.endswith("_at") or key in ("start_time", "timestamp", "origin_timestamp"):
            if value in (0, U64_MAX):
                return "never" if key == "expiry_at" else ""
            return datetime.datetime.fromtimestamp(value / 1e6).strftime("%Y-%m-%d %H:%M:%S")
        if key in ("message_expiry",):
            return {0: "server default", U64_MAX: "never"}.get(value) or duration(value)
        if key == "compression_algorithm":
            return {1: "none", 2: "gzip"}.get(value, str(value))
        if key == "status":
            return {1: "active", 2: "inactive"}.get(value, str(value))
        if key in ("max_topic_size",):
            return {0: "server default", U64_MAX: "unlimited"}.get(value) or size(value)
        if key.endswith(("_bytes", "_memory", "_disk_space")) or key in ("size", "memory_usage"):
            return size(value)
        if key == "run_time":
            return duration(value)
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


class CommandError(Exception):
    """A command the user asked for that cannot be done as asked (bad value, missing input)."""


def report(e: BaseException) -> int:
    """One line on stderr for a failed command; its exit code."""
    from iggy_fast.protocol.errors import IggyError
    if isinstance(e, IggyError):
        code = getattr(e, "code", None)
        text = str(e) or type(e).__name__
        print(f"iggy-fast: error: {text}" + (f" (Iggy error {code})" if code else ""),
              file=sys.stderr)
    else:
        print(f"iggy-fast: error: {e}", file=sys.stderr)
    return 1


def run_local(func):
    """A command that needs no server: its errors become `report()` lines."""
    from iggy_fast.cli.contexts import ContextError
    from iggy_fast.protocol.errors import IggyError

    @functools.wraps(func)
    def run(args) -> int:
        try:
            return func(args)
        except (ContextError, CommandError, OSError, IggyError) as e:
            return report(e)
    return run
