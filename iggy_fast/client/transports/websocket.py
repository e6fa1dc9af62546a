"""The WebSocket link (ws:// and wss://): the binary protocol in WebSocket frames, over an
asyncio BufferedProtocol as TcpLink is.

Why not aiohttp's client (used before): it masked each request by copying it three times in
Python-level steps, 3-4 ms per 1 MB batch, which alone held a producer to a fifth of TCP.
Here a request is one binary frame built by `_websocket.masked_frame()` (Cython): one copy of
the pieces into a new buffer, masked as they are copied (a client must mask, and the caller's
batch must not change). Replies are read straight into the memory ClientCore hands out, as
on TCP, and `_websocket.FrameDecoder` strips the server's (unmasked) frame headers from them
in place: a poll reply's body lands in its own buffer and is never copied.

The upgrade is one HTTP/1.1 GET for the URL's path (no subprotocol, no extensions), checked
for 101 and the right Sec-WebSocket-Accept. A ping from the server is answered with a pong; a
close from it is answered and ends the link, naming its close code. `close()` sends a close
frame and waits (at most CLOSE_TIMEOUT) for the server's answer before hanging up.

TLS: `wss://`, verifying the server against `ca_file` (or the system's trust store), with
`domain` as the name checked (and sent as SNI) when the address is an IP address;
`verify=False` accepts any certificate, as the official SDK does by default.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import ssl
from urllib.parse import urlsplit

from iggy_fast import _websocket as wsf
from iggy_fast.client.transports import FramedLink

MAX_RESPONSE_HEAD = 8 * 1024
CLOSE_TIMEOUT = 1.0


def client_context(ca_file: str | None = None, verify: bool = True) -> ssl.SSLContext:
    """A client TLS context trusting `ca_file` (None: the system's CAs); no checks at all
    when `verify` is False."""
    ctx = ssl.create_default_context(cafile=ca_file)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _Protocol(asyncio.BufferedProtocol):
    """The upgrade, then frames into the link's core."""

    def __init__(self, link: "WebSocketLink", request: bytes, key: bytes):
        self.link = link
        self.request = request
        self.accept = wsf.accept_key(key)
        self.response: bytearray | None = bytearray(MAX_RESPONSE_HEAD)   # until upgraded
        self.response_have = 0
        self.upgraded = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.decoder = wsf.FrameDecoder(False)
        self.view = None
        self.transport = None
        self.close_sent = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def get_buffer(self, sizehint: int):
        if self.response is not None:
            return memoryview(self.response)[self.response_have:]
        self.view = self.link._get_buffer()
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        if self.response is not None:
            self._upgrade(nbytes)
            return
        decoder = self.decoder
        data = decoder.decode(self.view, nbytes)
        self.view = None
        if data:
            self.link._buffer_updated(data)
        if decoder.events or decoder.error_code:
            self._control()

    def _upgrade(self, nbytes: int) -> None:
        self.response_have += nbytes
        end = self.response.find(b"\r\n\r\n", 0, self.response_have)
        if end < 0:
            if self.response_have == len(self.response):
                self._refused("an over-long upgrade response")
            return
        head = bytes(self.response[:end]).split(b"\r\n")
        rest = bytes(self.response[end + 4:self.response_have])
        self.response = None
        status = head[0].split(b" ", 2)
        if len(status) < 2 or status[1] != b"101":
            self._refused(head[0].decode(errors="replace"))
            return
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if headers.get(b"sec-websocket-accept") != self.accept:
            self._refused("a wrong Sec-WebSocket-Accept")
            return
        self.upgraded.set_result(None)
        if rest:                      # frames right behind the response
            data = bytearray(rest)
            n = self.decoder.decode(data, len(data))
            if n:
                self.link._received(data[:n])
            if self.decoder.events or self.decoder.error_code:
                self._control()

    def _refused(self, why: str) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError(
                f"{self.link.address} refused the WebSocket upgrade: {why}"))
        self.transport.close()

    def _control(self) -> None:
        decoder = self.decoder
        events, decoder.events = decoder.events, []
        for opcode, payload in events:
            if opcode == wsf.PING and not self.close_sent:
                self.transport.write(wsf.masked_frame(wsf.PONG, [payload], os.urandom(4)))
            elif opcode == wsf.CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                self.send_close()
                self.transport.close()
                self.link._lost(ConnectionError(f"connection to {self.link.address} closed "
                                                f"by the server (close code {code})"))
                return
        if decoder.error_code:
            self.link._lost(ConnectionError(f"{self.link.address} sent "
                                            f"{decoder.error_reason}"))

    def send_close(self) -> None:
        if not self.close_sent and not self.transport.is_closing():
            self.close_sent = True
            self.transport.write(wsf.masked_frame(wsf.CLOSE, [wsf.close_payload(wsf.NORMAL)],
                                                  os.urandom(4)))

    def eof_received(self):
        return False

    def connection_lost(self, exc) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(exc or ConnectionError(
                f"{self.link.address} closed the connection during the WebSocket upgrade"))
        if not self.closed.done():
            self.closed.set_result(None)
        self.link._lost(exc)


class WebSocketLink(FramedLink):
    """One WebSocket connection to a server. `address` is "host:port" or a ws:// or wss://
    URL; `tls=True` makes "host:port" wss://."""

    def __init__(self, address: str, timeout: float = 30.0, *, tls: bool = False,
                 ca_file: str | None = None, verify: bool = True, domain: str | None = None):
        super().__init__(address, timeout)
        if "://" in address:
            self.url = address
        else:
            self.url = f"{'wss' if tls else 'ws'}://{address}"
        url = urlsplit(self.url)
        if url.scheme not in ("ws", "wss") or not url.port:
            raise ValueError(f"address {address!r} is not HOST:PORT or a ws:// or wss:// URL "
                             "with a port")
        self.host, self.port = url.hostname, url.port
        self.path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self.ssl = client_context(ca_file, verify) if url.scheme == "wss" else None
        self.domain = domain
        self.protocol: _Protocol | None = None

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        key = base64.b64encode(os.urandom(16))
        host = f"[{self.host}]" if ":" in self.host else self.host
        request = (f"GET {self.path} HTTP/1.1\r\nHost: {host}:{self.port}\r\n"
                   f"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n"
                   f"\r\n").encode()
        kwargs = {}
        if self.ssl is not None:
            kwargs = {"ssl": self.ssl, "server_hostname": self.domain or self.host}
        transport, protocol = await loop.create_connection(
            lambda: _Protocol(self, request, key), self.host, self.port, **kwargs)
        self.protocol = protocol
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await protocol.upgraded
        except BaseException:
            transport.abort()
            raise
        if self.error is not None:   # closed by the server right behind its answer
            raise self.error

    def _write(self, pieces: list) -> None:
        self.protocol.transport.write(wsf.masked_frame(wsf.BINARY, pieces, os.urandom(4)))

    def _close(self) -> None:
        protocol = self.protocol
        if protocol is None or protocol.transport.is_closing():
            return
        # The server answers our close and hangs up; if it does not, we do.
        protocol.send_close()
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, protocol.transport.abort)

    async def close(self) -> None:
        await super().close()
        if self.protocol is not None:
            await asyncio.shield(self.protocol.closed)
