"""Client configuration: `ClientConfig`, built directly or parsed from a connection string.

A connection string is what the official SDKs take (Iggy's `ConnectionString`):

    iggy://USER:PASSWORD@HOST:PORT[?options]          TCP
    iggy+tcp://... iggy+quic://... iggy+http://... iggy+ws://...
    iggy+tcp://TOKEN@HOST:PORT                        a personal access token instead

As in Iggy, one `:` in the credentials means user and password (neither empty), none means a
token, and the address must have a numeric port. iggy-fast adds a list of nodes to fail over
between, comma-separated: `iggy://u:p@10.0.0.1:8090,10.0.0.2:8090`. User and password are
percent-decoded, so either may hold `@`, `:` or `,` written as %40, %3A, %2C.

Options (`?a=1&b=2`), Iggy's names: `tls` (true/false), `tls_domain`, `tls_ca_file`,
`heartbeat_interval`, `reconnection_retries` (a count or `unlimited`),
`reconnection_interval`, `reestablish_after`, `nodelay`; and iggy-fast's `timeout` (per
request) and `connect_timeout`. Durations are Iggy's: `500ms`, `5s`, `1m`, `2h`, or seconds
as a bare number. An unknown option, a bad value or a bad shape raises InvalidConnectionString
naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from urllib.parse import unquote

from iggy_fast.protocol.errors import InvalidConnectionString

# Connection-string scheme -> transport name (the key of aio.TRANSPORTS).
SCHEMES = {"iggy": "tcp", "iggy+tcp": "tcp", "iggy+quic": "quic", "iggy+http": "http",
           "iggy+ws": "ws", "iggy+websocket": "ws"}
DEFAULT_PORTS = {"tcp": 8090, "quic": 8080, "http": 3000, "ws": 8092}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|µs|ms|s|m|min|h)?\s*$")
_UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, None: 1.0, "m": 60.0, "min": 60.0,
          "h": 3600.0}


@dataclass
class ClientConfig:
    """Everything an IggyClient needs to reach, log in to and stay with a server.

    `addresses` are tried in order on connect and on every reconnect (failover). Credentials:
    `username` + `password`, or `token` (a personal access token), or neither (no automatic
    login: call `login_user` yourself). Times are seconds; every wait is bounded by one of them.
    """
    addresses: list[str] = field(default_factory=lambda: ["127.0.0.1:8090"])
    transport: str = "tcp"                  # tcp, quic, http, ws
    username: str | None = None
    password: str | None = None
    token: str | None = None
    tls: bool = False
    tls_ca_file: str | None = None          # None: the server's certificate is not verified
    tls_domain: str | None = None           # the name to verify; default: the host
    nodelay: bool = True
    timeout: float = 30.0                   # per request
    connect_timeout: float = 10.0           # per address tried
    heartbeat_interval: float | None = 5.0  # ping this often when idle; None: never
    reconnection_retries: int | None = None  # attempts per outage; None: unlimited
    reconnection_interval: float = 1.0      # first backoff; doubles up to reconnection_max
    reconnection_max: float = 30.0
    reestablish_after: float = 0.0         # wait this long after a loss before retrying

    def __post_init__(self):
        if isinstance(self.addresses, str):
            self.addresses = [a.strip() for a in self.addresses.split(",") if a.strip()]
        if not self.addresses:
            raise InvalidConnectionString("no server address given")
        if self.transport not in DEFAULT_PORTS:
            raise InvalidConnectionString(
                f"unknown transport {self.transport!r} (one of {', '.join(DEFAULT_PORTS)})")
        if (self.username is None) != (self.password is None):
            raise InvalidConnectionString("give both a username and a password, or neither")

    @property
    def auto_login(self) -> bool:
        return self.username is not None or self.token is not None

    def with_(self, **changes) -> "ClientConfig":
        return replace(self, **changes)


def parse_duration(text: str, option: str = "duration") -> float:
    """Iggy's duration syntax (`500ms`, `5s`, `1m`) to seconds."""
    m = _DURATION.match(text)
    if not m:
        raise InvalidConnectionString(f"{option}={text!r} is not a duration (like 500ms, 5s, 1m)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _bool(text: str, option: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise InvalidConnectionString(f"{option}={text!r} is not true or false")


def _address(text: str, transport: str, where: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidConnectionString(
            f"{where}: server address {text!r} must be HOST:PORT with a port in 1..65535")
    return text


def parse(connection_string: str) -> ClientConfig:
    """A ClientConfig from a connection string (see the module docstring)."""
    where = "connection string"
    scheme, sep, rest = connection_string.partition("://")
    if not sep:
        raise InvalidConnectionString(f"{where} {_masked(connection_string)!r} has no "
                                      f"'scheme://' (expected iggy://user:password@host:port)")
    transport = SCHEMES.get(scheme.lower())
    if transport is None:
        raise InvalidConnectionString(
            f"{where}: unknown scheme {scheme!r} (one of {', '.join(SCHEMES)})")
    credentials, at, location = rest.rpartition("@")
    if not at:
        raise InvalidConnectionString(
            f"{where}: no credentials (write iggy://user:password@host:port or "
            f"iggy://TOKEN@host:port)")
    location, _, query = location.partition("?")
    addresses = [_address(a.strip(), transport, where) for a in location.split(",")]
    kwargs: dict = {"addresses": addresses, "transport": transport}
    parts = credentials.split(":")
    if len(parts) == 1 and parts[0]:
        kwargs["token"] = unquote(parts[0])
    elif len(parts) == 2 and all(parts):
        kwargs["username"], kwargs["password"] = unquote(parts[0]), unquote(parts[1])
    else:
        raise InvalidConnectionString(
            f"{where}: credentials must be USER:PASSWORD (both non-empty) or a TOKEN")
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if not eq:
            raise InvalidConnectionString(f"{where}: option {item!r} has no '=value'")
        value = unquote(value)
        if key == "tls":
            kwargs["tls"] = _bool(value, key)
        elif key == "nodelay":
            kwargs["nodelay"] = _bool(value, key)
        elif key in ("tls_domain", "tls_ca_file"):
            kwargs[key] = value or None
        elif key in ("heartbeat_interval", "reconnection_interval", "reestablish_after",
                     "timeout", "connect_timeout"):
            kwargs[key] = parse_duration(value, key)
        elif key == "reconnection_retries":
            if value == "unlimited":
                kwargs[key] = None
            elif value.isdigit():
                kwargs[key] = int(value)
            else:
                raise InvalidConnectionString(
                    f"{key}={value!r} is neither a count nor 'unlimited'")
        else:
            raise InvalidConnectionString(f"{where}: unknown option {key!r}")
    return ClientConfig(**kwargs)


def _masked(text: str) -> str:
    """The string with its credentials hidden, for error messages."""
    scheme, sep, rest = text.partition("://")
    if sep and "@" in rest:
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return text
