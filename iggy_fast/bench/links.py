"""How the benchmark's actors reach the server over each transport.

`connect(spec)` answers a logged-in client with the few methods the actors use (`call`,
`login`, `send_batch`, `poll`, `close`, `bytes_sent`, `bytes_received`). Plain TCP and
TLS-TCP keep the raw-frame `BlockingClient`, so their path is exactly what it was. QUIC,
WebSocket and HTTP get `LinkClient`: the async client's Link for that transport
(client/transports/), driven lock-step.

LinkClient runs its Link on a private event loop in the calling thread
(`loop.run_until_complete` per request), not on a loop in a background thread: an actor is
one thread doing one request at a time, so this has no thread hand-off per call, and the
loop only has to run while a request is out (uvloop when installed, as the server). The price is that nothing is read between
requests (an idle QUIC connection's acknowledgements wait for the next request), which the
actors' back-to-back requests and sub-second pauses never notice.

Byte counters: BlockingClient counts what its socket carried. A Link hides its transport's
bytes, so LinkClient counts the Iggy frames it carried (256-byte header plus body, both
ways), whatever the transport wraps them in (WebSocket frames, QUIC packets, HTTP and JSON).
"""

from __future__ import annotations

import asyncio
import logging

from iggy_fast.client import BlockingClient
from iggy_fast.client.aio import make_link
from iggy_fast.client.connection_string import ClientConfig
from iggy_fast.client.core import poll_body, send_messages_body
from iggy_fast.protocol.codes import HEADER_SIZE
from iggy_fast.protocol.errors import IggyError

# aioquic logs every connection at INFO; an actor's output is the report, not that.
logging.getLogger("quic").setLevel(logging.ERROR)

# --transport name -> (the client's transport, TLS). TLS-TCP is "tls" ("tcp-tls" kept).
TRANSPORTS = {"tcp": ("tcp", False), "tls": ("tcp", True), "tcp-tls": ("tcp", True),
              "quic": ("quic", True), "ws": ("ws", False), "http": ("http", False)}


class Answer:
    """A reply as the actors read it: `body`, the payload."""

    __slots__ = ("body",)

    def __init__(self, body: memoryview):
        self.body = body


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (as the server runs), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _size(piece) -> int:
    return piece.nbytes if isinstance(piece, memoryview) else len(piece)


class LinkClient:
    """One Link, blocking (see the module docstring)."""

    def __init__(self, transport: str, address: str, tls_ca_file: str | None = None,
                 tls_domain: str = "localhost", timeout: float = 30.0):
        self.loop = _new_loop()
        config = ClientConfig(transport=transport, addresses=[address], timeout=timeout,
                              tls=transport == "quic", tls_ca_file=tls_ca_file,
                              tls_domain=tls_domain)
        self.link = make_link(transport, address, config)
        self.bytes_sent = 0
        self.bytes_received = 0
        try:
            self.loop.run_until_complete(self.link.connect())
        except BaseException:
            self.loop.close()
            raise

    def _run(self, coro, sent: int) -> Answer:
        body = self.loop.run_until_complete(coro)
        self.bytes_sent += HEADER_SIZE + sent
        self.bytes_received += HEADER_SIZE + body.nbytes
        return Answer(body)

    def call(self, code: int, body=b"", extra=()) -> Answer:
        return self._run(self.link.request(code, body, extra),
                         _size(body) + sum(_size(p) for p in extra))

    def login(self, username: str = "iggy", password: str = "iggy") -> int:
        """Log in; returns the user id."""
        reply = self._run(self.link.login(username, password), len(username) + len(password))
        return int.from_bytes(reply.body[:4], "little")

    def send_batch(self, stream, topic, partition_id: int, batch, count: int) -> int:
        """Send one encoded batch (as BlockingClient.send_batch)."""
        self.call(101, send_messages_body(stream, topic, partition_id, count), (batch,))
        return 0    # the base offset is not in every transport's answer; actors ignore it

    def poll(self, stream, topic, partition_id, strategy: int, value: int, count: int,
             auto_commit: bool = False, consumer_id=1, consumer_kind: int = 1) -> Answer:
        return self.call(100, poll_body(stream, topic, partition_id, strategy, value, count,
                                        auto_commit, consumer_id, consumer_kind))

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.link.close())
        finally:
            self.loop.close()


def connect(spec: dict):
    """A logged-in client for an actor's or the runner's `spec` (transport, address, TLS)."""
    transport, tls = TRANSPORTS[spec.get("transport", "tcp")]
    if transport == "tcp":
        client = BlockingClient(spec["address"], tls=tls, tls_ca_file=spec.get("tls_ca_file"),
                                tls_domain=spec.get("tls_domain", "localhost"))
    else:
        client = LinkClient(transport, spec["address"], spec.get("tls_ca_file"),
                            spec.get("tls_domain", "localhost"))
    try:
        client.login()
    except (IggyError, OSError):
        client.close()
        raise
    return client
