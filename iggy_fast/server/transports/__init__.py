"""Transport adapters: each moves bytes between its sockets and the connection driver.

Every transport is an `Endpoint` (tcp.py, and beside it one file per transport), registered in
server/app.py's ENDPOINTS by its configuration section. The server starts them in two steps so
that it never starts half-configured:

1. `Endpoint(cfg)`, before anything is written: load the configured certificate files and bind
   the sockets (not listening yet). A failure raises ConfigError or StartupError naming the
   transport, and the endpoints made so far are closed.
2. `await endpoint.start(server)`, once the data directory and the metadata are ready: make a
   self-signed certificate if one is asked for, start listening, set
   `server.listen_ports[<section>]` and log one line saying where it listens.

`close()` stops listening (and frees the sockets of an endpoint never started);
`wait_closed()` waits for that.
"""

from __future__ import annotations


class Endpoint:
    """One configured transport's listener(s); see the module docstring."""

    section = ""        # its configuration section: "tcp", "quic", "http", "websocket"
    name = ""           # its name in messages: "TCP", "QUIC", "HTTP", "WebSocket"

    def __init__(self, cfg: dict):
        self.cfg = cfg

    async def start(self, server) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    async def wait_closed(self) -> None:
        raise NotImplementedError
