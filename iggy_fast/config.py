"""Server configuration: defaults, then a TOML file, then IGGY_* environment variables, then flags.

The keys follow Iggy's server.toml, and an environment variable names a key by its path in
upper case joined with underscores, as Iggy does: `IGGY_TCP_ADDRESS` is `[tcp] address`,
`IGGY_TCP_TLS_ENABLED` is `[tcp.tls] enabled`, `IGGY_SYSTEM_SEGMENT_SIZE` is
`[system.segment] size`. Sizes accept "1 GiB"-style strings and durations "7 days"-style ones.
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from typing import Any

NEVER = 2**64 - 1

DEFAULTS: dict[str, Any] = {
    "tcp": {
        "enabled": True,
        "address": "127.0.0.1:8090",
        "socket": {"nodelay": True},
        "sendfile": True,             # polls go from the page cache to the socket directly
        "tls": {"enabled": False, "self_signed": True, "cert_file": "", "key_file": ""},
    },
    "quic": {
        "enabled": False,
        "address": "127.0.0.1:8080",
        "certificate": {"self_signed": True, "cert_file": "", "key_file": ""},
    },
    "http": {
        "enabled": False,
        "address": "127.0.0.1:3000",
        "jwt": {"encoding_secret": "", "access_token_expiry": "1 h"},
        "tls": {"enabled": False, "cert_file": "", "key_file": ""},
    },
    "websocket": {
        "enabled": False,
        "address": "127.0.0.1:8092",
        "tls": {"enabled": False, "cert_file": "", "key_file": ""},
    },
    "heartbeat": {"enabled": True, "interval": "30 s"},
    "personal_access_token": {"max_tokens_per_user": 100},
    "data_maintenance": {"messages": {"cleaner_enabled": True, "interval": "1 m"}},
    "system": {
        "path": "local_data",
        "segment": {"size": "1 GiB"},
        "topic": {"message_expiry": "never", "max_size": "unlimited"},
        "partition": {
            # Without enforce_fsync, appends are synced in the background once this many
            # messages or bytes are unsynced, and at least every sync_interval (like Redis'
            # appendfsync everysec): at most about a second of data is at risk on power loss.
            "enforce_fsync": False,
            "messages_required_to_save": 1_000_000,
            "size_of_messages_required_to_save": "256 MiB",
            "sync_interval": "1 s",
            "validate_checksum": True,
        },
        "state": {"enforce_fsync": False},
    },
    "root": {"username": "iggy", "password": ""},
    "cluster": {"name": "iggy-cluster", "node_name": "iggy-node-1"},
}

# Iggy reads the root credentials from these two, outside the config tree.
_ROOT_ENV = {"IGGY_ROOT_USERNAME": ("root", "username"), "IGGY_ROOT_PASSWORD": ("root", "password")}

_SIZE_UNITS = {
    "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_TIME_UNITS = {
    "us": 1, "ms": 1000, "s": 1_000_000, "sec": 1_000_000, "secs": 1_000_000,
    "m": 60_000_000, "min": 60_000_000, "mins": 60_000_000,
    "h": 3_600_000_000, "hour": 3_600_000_000, "hours": 3_600_000_000,
    "d": 86_400_000_000, "day": 86_400_000_000, "days": 86_400_000_000,
}
_TERM = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)")


def parse_size(value: Any) -> int:
    """Bytes from an int or a string like "1 GiB", "100MB"; "unlimited" is u64::MAX."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip().lower()
    if text in ("unlimited", "none", "never"):
        return NEVER
    m = _TERM.fullmatch(text)
    if not m or (m.group(2) or "b") not in _SIZE_UNITS:
        raise ValueError(f"not a size: {value!r}")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2) or "b"])


def parse_duration_us(value: Any) -> int:
    """Microseconds from an int (µs) or a string like "7 days", "1m 30s"; "never" is u64::MAX."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip().lower()
    if text in ("never", "unlimited", "none"):
        return NEVER
    total, pos = 0, 0
    for m in _TERM.finditer(text):
        if m.start() != pos or m.group(2) not in _TIME_UNITS:
            raise ValueError(f"not a duration: {value!r}")
        total += int(float(m.group(1)) * _TIME_UNITS[m.group(2)])
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"not a duration: {value!r}")
    return total


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _merge(into: dict, other: dict, where: str = "") -> None:
    for key, value in other.items():
        if key not in into:
            raise ValueError(f"unknown config key {where}{key}")
        if isinstance(into[key], dict):
            if not isinstance(value, dict):
                raise ValueError(f"config key {where}{key} is a section")
            _merge(into[key], value, f"{where}{key}.")
        else:
            into[key] = value


def _env_path(tree: dict, parts: list[str]) -> list[str] | None:
    """Match IGGY_A_B_C against the tree, where a key may itself contain underscores."""
    if not parts:
        return None
    for take in range(len(parts), 0, -1):
        key = "_".join(parts[:take]).lower()
        if key in tree:
            if isinstance(tree[key], dict):
                rest = _env_path(tree[key], parts[take:])
                if rest is not None:
                    return [key, *rest]
            elif take == len(parts):
                return [key]
    return None


def _coerce(old: Any, text: str) -> Any:
    if isinstance(old, bool):
        return parse_bool(text)
    if isinstance(old, int):
        return int(text)
    return text


def load_config(path: str | None = None, environ: dict[str, str] | None = None,
                overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The effective configuration: defaults < TOML file < environment < overrides."""
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        with open(path, "rb") as f:
            _merge(cfg, tomllib.load(f))
    env = os.environ if environ is None else environ
    for name, value in env.items():
        if name in _ROOT_ENV:
            section, key = _ROOT_ENV[name]
            cfg[section][key] = value
            continue
        if not name.startswith("IGGY_"):
            continue
        route = _env_path(cfg, name[5:].split("_"))
        if route is None:
            continue  # other tools' IGGY_* variables (e.g. the SDK's) are not ours to reject
        node = cfg
        for key in route[:-1]:
            node = node[key]
        node[route[-1]] = _coerce(node[route[-1]], value)
    if overrides:
        _merge(cfg, overrides)
    return cfg


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)
