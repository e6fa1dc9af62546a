"""The WebSocket transport (ws:// and wss://): RFC 6455 on the TCP transport's protocol, over the
connection driver.

The official SDK connects to `ws://host:port` (or `wss://`): the upgrade is for "/", with no
subprotocol and no compression. Each binary message carries request bytes and each reply goes
back as one binary message; message boundaries mean nothing to the Iggy byte stream (a frame
split over messages, or several in one, is served as on TCP).

Why not aiohttp (which served this port before): it reads a message whole, unmasks it into a
new bytes object that the driver then copied into its receive buffer, and writes each reply
as one more joined copy; with the client's masking copies that made WebSocket a quarter as
fast as TCP on 1 MB batches (BENCHMARKS.md, "Transports"). The port is WebSocket's alone, so
the protocol is spoken here directly, on `TcpConnection` (transports/tcp.py) with three
differences:

- Reading: the event loop reads straight into the driver's receive buffer, as on TCP, and
  `_websocket.FrameDecoder` (Cython) strips frame headers and unmasks the payload in place in
  the same pass, before the driver cuts Iggy frames from it. No message is ever assembled.
- Writing: a reply is one unmasked binary frame: a 2 to 10 byte header, then the driver's
  reply pieces, handed on as TCP does, so stored batches still go by sendfile(2) on plain ws://
  (copied under TLS). The `[tcp]` settings `sendfile` and `quickack` apply here too: they are
  about the TCP socket underneath.
- The upgrade: the HTTP/1.1 request head is read into a small buffer of its own (at most
  MAX_REQUEST_HEAD) and answered with 101, or with an HTTP error and a close: 426 for a request
  that is not a WebSocket upgrade, 404 for another path. Only then is the connection a client
  (the driver, with its `[connections]` limits: one over a limit gets close code 1013, try
  again later). The upgrade must come within the login deadline (at most HANDSHAKE_TIMEOUT).

Control frames: a ping is answered with a pong; a close is answered with a close and the
connection ends. Bad input closes only that connection, with one log line and a close code: a
text message (1003), a message over `[websocket] max_message_size` (1009), a broken frame
(1002), a request frame the driver cannot decode (the driver logs it; 1000). After sending its
close frame the server reads on only to see the peer's close (data is dropped), for at most
CLOSE_TIMEOUT (after a broken frame, whose stream cannot be parsed on, until the peer hangs
up or that time is up), then hangs up; the close frame follows every reply already queued.

With TLS (`[websocket.tls]`) the accept loop is transports/tls.py's `TlsListener` around the
same protocol, so that a failed handshake (or plain text on the TLS port) is logged with the
peer's address.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from iggy_fast import _websocket as wsf
from iggy_fast._log import FileRegion
from iggy_fast.config import parse_size
from iggy_fast.server.connection import Connection
from iggy_fast.server.transports.tcp import QUICKACK, TcpConnection, TcpEndpoint

log = logging.getLogger("iggy_fast.websocket")

MAX_REQUEST_HEAD = 8 * 1024  # the upgrade request's line and headers
HANDSHAKE_TIMEOUT = 60.0     # at most; a shorter login deadline bounds the upgrade too
CLOSE_TIMEOUT = 1.0          # how long a close waits for the peer's close frame (the SDK
                             # reads only while it awaits a reply: at shutdown it never answers)
DRAIN_CHUNK = 64 * 1024      # what is read at a time once closing (and then dropped)


def _http_error(status: str, text: str, extra: str = "") -> bytes:
    body = text.encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n").encode() + body


def upgrade_answer(head: bytes) -> tuple[bytes, bool]:
    """The answer to an HTTP request head (without its blank line), and whether it upgrades."""
    lines = head.split(b"\r\n")
    request = lines[0].split(b" ")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            return _http_error("400 Bad Request", "a header line without a colon\n"), False
        headers[name.strip().lower()] = value.strip()
    if len(request) != 3 or not request[2].startswith(b"HTTP/1."):
        return _http_error("400 Bad Request", "not an HTTP/1.1 request\n"), False
    if request[0] != b"GET":
        return _http_error("405 Method Not Allowed", "connect with a WebSocket upgrade (GET)\n",
                           "Allow: GET\r\n"), False
    if request[1].partition(b"?")[0] != b"/":
        return _http_error("404 Not Found", "the Iggy WebSocket endpoint is /\n"), False
    key = headers.get(b"sec-websocket-key")
    if (headers.get(b"upgrade", b"").lower() != b"websocket"
            or b"upgrade" not in headers.get(b"connection", b"").lower() or not key):
        return _http_error("426 Upgrade Required", "this is an Iggy WebSocket endpoint: "
                           "connect with ws:// (a WebSocket upgrade)\n",
                           "Upgrade: websocket\r\n"), False
    if headers.get(b"sec-websocket-version") != b"13":
        return _http_error("426 Upgrade Required", "WebSocket version 13 only\n",
                           "Sec-WebSocket-Version: 13\r\n"), False
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + wsf.accept_key(key) + b"\r\n\r\n"), True


def _size(piece) -> int:
    return piece.length if type(piece) is FileRegion else len(piece)


class WebSocketConnection(TcpConnection):
    """One WebSocket connection: its upgrade, then the TCP transport's protocol and the
    driver's Transport, framed (see the module docstring)."""

    def __init__(self, server, max_message_size: int):
        super().__init__(server, "WebSocket")
        self.max_message_size = max_message_size
        self.address = "unknown"
        self.request: bytearray | None = bytearray(MAX_REQUEST_HEAD)   # until upgraded
        self.request_have = 0
        self.decoder: wsf.FrameDecoder | None = None
        self.view = None             # the receive buffer handed to the event loop
        self.close_sent = False      # our close frame is queued: nothing follows it
        self.drain: bytearray | None = None    # read into and dropped once closing
        self.timer: asyncio.TimerHandle | None = None   # the upgrade's or the close's deadline

    # -- asyncio protocol ----------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.address = self._adopt(transport)     # the driver is made once upgraded
        timeout = min(HANDSHAKE_TIMEOUT, self.server.connections.login_timeout / 1e6)
        self.timer = asyncio.get_running_loop().call_later(timeout, self._no_upgrade, timeout)

    def get_buffer(self, sizehint: int):
        if self.request is not None:
            return memoryview(self.request)[self.request_have:]
        if self.close_sent:
            if self.drain is None:
                self.drain = bytearray(DRAIN_CHUNK)
            self.view = self.drain
        else:
            self.view = self.driver.frames.get_buffer(sizehint)
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        if self.request is not None:
            self._upgrade(nbytes)
            return
        decoder = self.decoder
        if decoder is None:          # refused: only read until the peer hangs up
            return
        data = decoder.decode(self.view, nbytes)
        self.view = None
        if data and not self.close_sent:
            driver = self.driver
            driver.buffer_updated(data)
            if (driver.frames.pending and self.socket is not None
                    and not self.transport.is_closing()):
                self.socket.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
        if decoder.events or decoder.error_code:
            self._control()

    def resume_writing(self) -> None:
        if self.close_sent:          # the driver is done: only what is queued goes out
            self.full = False
            self._flush()
        else:
            super().resume_writing()

    def connection_lost(self, exc) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.driver is None:      # never upgraded
            self.transport = None
            return
        super().connection_lost(exc)

    # -- the upgrade ---------------------------------------------------------------------

    def _upgrade(self, nbytes: int) -> None:
        self.request_have += nbytes
        end = self.request.find(b"\r\n\r\n", 0, self.request_have)
        if end < 0:
            if self.request_have == len(self.request):
                self._refuse(_http_error("431 Request Header Fields Too Large",
                                         "the upgrade request is too long\n"))
            return
        answer, upgraded = upgrade_answer(bytes(self.request[:end]))
        rest = bytes(self.request[end + 4:self.request_have])
        if not upgraded:
            self._refuse(answer)
            return
        self.request = None
        self.transport.write(answer)
        self.timer.cancel()
        self.timer = None
        self.decoder = wsf.FrameDecoder(True, self.max_message_size)
        driver = Connection(self.server, self, "WebSocket", self.address)
        self.driver = driver
        if driver.open and rest:     # frames sent right behind the request
            view = memoryview(rest)
            while view and not self.close_sent:
                buffer = self.get_buffer(len(view))
                n = min(len(buffer), len(view))
                buffer[:n] = view[:n]
                self.buffer_updated(n)
                view = view[n:]

    def _refuse(self, answer: bytes) -> None:
        """Answer with an HTTP error and hang up. What the peer sent on is read and dropped
        until it hangs up too (for at most CLOSE_TIMEOUT): closing a socket with unread
        bytes would reset the connection, and the answer with it."""
        self.request = None
        self.close_sent = True
        self.transport.write(answer)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:
            self.transport.close()
        self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.transport.abort)

    def _no_upgrade(self, timeout: float) -> None:
        log.info("closing connection %s: no WebSocket upgrade within %.1f s", self.address,
                 timeout)
        self.transport.abort()

    # -- control frames and the close handshake ------------------------------------------

    def _control(self) -> None:
        decoder = self.decoder
        events, decoder.events = decoder.events, []
        for opcode, payload in events:
            if opcode == wsf.PING and not self.close_sent:
                super().write([wsf.frame_header(wsf.PONG, len(payload)), payload])
            elif opcode == wsf.CLOSE:
                self._send_close(wsf.NORMAL)     # answered (if not ours), then hang up
                self.transport.close()
                return
        if decoder.error_code and not self.close_sent:
            log.warning("closing WebSocket connection %s: %s", self.address,
                        decoder.error_reason)
            self._send_close(decoder.error_code)

    def _send_close(self, code: int) -> None:
        """Queue a close frame behind every reply, and from now on only read for the peer's
        close (for at most CLOSE_TIMEOUT)."""
        if self.close_sent or self.transport is None or self.transport.is_closing():
            return
        payload = wsf.close_payload(code)
        super().write([wsf.frame_header(wsf.CLOSE, len(payload)), payload])
        self.close_sent = True
        if self.decoder is not None:
            self.decoder.discard = True
        self.transport.resume_reading()      # the driver may have paused it
        self.timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.transport.abort)

    # -- the driver's Transport ----------------------------------------------------------

    def write(self, pieces) -> None:
        if self.close_sent:
            return
        size = 0
        for piece in pieces:
            size += _size(piece)
        super().write([wsf.frame_header(wsf.BINARY, size), *pieces])

    def pause_reading(self) -> None:
        if not self.close_sent:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self.close_sent:
            self.transport.resume_reading()

    def close(self) -> None:
        # A connection over a limit is refused by the driver's constructor, before it is ours.
        self._send_close(wsf.NORMAL if self.driver is not None else wsf.TRY_AGAIN_LATER)

    def abort(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.transport.abort()


class WebSocketEndpoint(TcpEndpoint):
    """The WebSocket listener (wss:// when `[websocket.tls] enabled`): the TCP listener with
    the WebSocket protocol on each connection."""

    section, name = "websocket", "WebSocket"
    log = log

    def __init__(self, cfg: dict):
        super().__init__(cfg)
        self.max_message_size = parse_size(cfg["websocket"]["max_message_size"])

    def connection(self, server) -> WebSocketConnection:
        return WebSocketConnection(server, self.max_message_size)
