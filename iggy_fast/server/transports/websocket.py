"""The WebSocket transport (ws:// and wss://): aiohttp's WebSocket server over the connection
driver.

The official SDK connects to `ws://host:port` (or `wss://`): the upgrade is for "/", with no
subprotocol and no compression. Each binary message it sends carries one request frame and
each reply goes back as one binary message (`reply_bytes`: stored batches are read in, since a
message cannot be sent by sendfile). Received messages are handed to the driver with
`Connection.feed()`, which cuts frames wherever message boundaries fall, so a frame split over
messages (or messages carrying several) is served as on TCP.

One coroutine per connection (`WebSocketConnection.serve`) does everything in order: it sends
the replies the driver queued, then takes the next message, unless the driver paused reading
(a reply being awaited, or too many reply bytes queued). While it does not take messages,
aiohttp's receive queue fills and aiohttp pauses the socket: the client is held back by TCP as
on the TCP transport. Sending awaits aiohttp's drain when the socket is not keeping up, so
queued replies are bounded by HIGH_WATER plus one reply, after which the driver stops
dispatching until the queue has gone out (`resume_writing`).

Bad input closes only that connection, with one log line: a text message (close code 1003),
a message over `[websocket] max_message_size` (aiohttp refuses it with 1009), a broken
WebSocket frame (1002), a request frame the driver cannot decode (the driver logs it; 1000).
Other connections are served on.

Listening: aiohttp's low-level server (the AppRunner's protocol factory) on the sockets bound
in __init__, through the event loop's create_server as aiohttp's SockSite does, but kept here
so that close() can stop listening at once (an aiohttp site stops only asynchronously). With
TLS (`[websocket.tls]`) the accept loop is transports/tls.py's `TlsListener` around the same
factory, so that a failed handshake (or plain text on the TLS port) is logged with the peer's
address instead of being dropped silently by the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from aiohttp import WSCloseCode, WSMsgType, web

from iggy_fast.config import parse_size, split_address
from iggy_fast.server.connection import Connection, reply_bytes
from iggy_fast.server.core import StartupError
from iggy_fast.server.transports import Endpoint, tls
from iggy_fast.server.transports.sockets import BACKLOG, bind, os_reason

log = logging.getLogger("iggy_fast.websocket")

HIGH_WATER = 1024 * 1024     # reply bytes queued here above which the driver stops dispatching
SHUTDOWN_TIMEOUT = 2.0       # what aiohttp waits for a handler at shutdown before cancelling it
CLOSE_TIMEOUT = 1.0          # how long a close waits for the peer's close frame (the SDK
                             # reads only while it awaits a reply: at shutdown it never answers)


class WebSocketConnection:
    """One WebSocket client: the coroutine that serves it, and the driver's Transport."""

    def __init__(self, server, ws: web.WebSocketResponse, request: web.Request):
        self.ws = ws
        self.socket_transport = request.transport
        self.replies: deque[bytes] = deque()
        self.queued = 0              # bytes in `replies`
        self.full = False            # write_buffer_full() said True: resume_writing() owed
        self.reading = True
        self.closing = False         # the driver asked for a close (after queued replies)
        self.aborted = False         # the driver dropped the connection: nothing more is sent
        self.receiving = False       # serve() is waiting for a message (so nothing is queued)
        self.closer = None           # a close begun while serve() was receiving
        self.wake = asyncio.Event()  # something for serve() to do while it is not reading
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.address = f"{peer[0]}:{peer[1]}" if peer else "unknown"
        self.driver = Connection(server, self, "WebSocket", self.address)

    async def serve(self) -> None:
        ws = self.ws
        driver = self.driver
        try:
            while not ws.closed and not self.aborted:
                if self.replies:
                    await self._send_replies()
                elif self.closing:
                    await ws.close()
                elif not self.reading:
                    await self.wake.wait()
                    self.wake.clear()
                else:
                    self.receiving = True
                    try:
                        msg = await ws.receive()
                    finally:
                        self.receiving = False
                    if msg.type == WSMsgType.BINARY:
                        driver.feed(msg.data)
                    elif msg.type == WSMsgType.TEXT:
                        log.warning("closing WebSocket connection %s: a text message (the "
                                    "protocol is carried in binary messages)", self.address)
                        await ws.close(code=WSCloseCode.UNSUPPORTED_DATA)
                    elif msg.type == WSMsgType.ERROR:
                        # aiohttp has closed it already: a message over max_message_size (1009)
                        # or a broken WebSocket frame (1002).
                        too_big = getattr(msg.data, "code", None) == WSCloseCode.MESSAGE_TOO_BIG
                        log.warning("closing WebSocket connection %s: %s%s", self.address,
                                    msg.data, " (websocket.max_message_size)" if too_big else "")
                    # CLOSE/CLOSING/CLOSED: the peer left; the loop ends with ws.closed.
        except ConnectionError as e:          # the socket went away under a send
            log.debug("WebSocket connection %s: %s", self.address, e)
        finally:
            self.replies.clear()
            driver.connection_lost()
            self.driver = None               # no cycle through the driver

    async def _send_replies(self) -> None:
        ws = self.ws
        replies = self.replies
        while replies:
            data = replies.popleft()
            self.queued -= len(data)
            await ws.send_bytes(data)        # waits only while the socket's buffer is full
        if self.full:
            self.full = False
            self.driver.resume_writing()

    # -- the driver's Transport ----------------------------------------------------------

    def write(self, pieces) -> None:
        data = reply_bytes(pieces)
        self.replies.append(data)
        self.queued += len(data)
        self.wake.set()

    def write_buffer_full(self) -> bool:
        if self.queued > HIGH_WATER:
            self.full = True
            return True
        return False

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True
        self.wake.set()

    def close(self) -> None:
        self.closing = True
        if self.receiving:
            # Nothing is queued, and serve() may wait long for a message: close now (aiohttp
            # ends the pending receive with CLOSING).
            self.closer = asyncio.ensure_future(self.ws.close())
        else:
            self.wake.set()

    def abort(self) -> None:
        self.aborted = True
        self.replies.clear()
        self.queued = 0
        if self.socket_transport is not None:
            self.socket_transport.abort()
        self.wake.set()

    def shrink(self) -> int:
        return 0                     # nothing kept between messages


class WebSocketEndpoint(Endpoint):
    """The WebSocket listener (wss:// when `[websocket.tls] enabled`): sockets bound in
    __init__, aiohttp's server on them once started."""

    section, name = "websocket", "WebSocket"

    def __init__(self, cfg: dict):
        super().__init__(cfg)
        section = cfg["websocket"]
        tls_cfg = section["tls"]
        self.tls = tls_cfg["enabled"]
        self.ssl_context = (tls.configured_context(tls_cfg, "websocket.tls") if self.tls
                            else None)
        self.max_message_size = parse_size(section["max_message_size"])
        self.sockets = bind(self.name, section["address"])
        self.runner: web.AppRunner | None = None
        self.listeners: list = []    # asyncio Servers, or TlsListeners
        self.server = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=False, max_msg_size=self.max_message_size,
                                   timeout=CLOSE_TIMEOUT)
        if not ws.can_prepare(request).ok:
            return web.Response(status=426, text="this is an Iggy WebSocket endpoint: "
                                "connect with ws:// (a WebSocket upgrade)\n",
                                headers={"Upgrade": "websocket"})
        await ws.prepare(request)
        conn = WebSocketConnection(self.server, ws, request)
        if not conn.driver.open:     # over a connection limit: the driver logged it
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER)
            return ws
        await conn.serve()
        return ws

    async def start(self, server) -> None:
        self.server = server
        if self.tls and self.ssl_context is None:
            self.ssl_context = tls.self_signed_context_or_stop(server.data_dir)
        address = self.cfg["websocket"]["address"]
        try:
            for sock in self.sockets:
                sock.listen(BACKLOG)
        except OSError as e:
            raise StartupError(f"WebSocket cannot listen on {address}: {os_reason(e)}"
                               ) from None
        app = web.Application(client_max_size=1024)
        app.router.add_get("/", self._handle)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                    shutdown_timeout=SHUTDOWN_TIMEOUT)
        await self.runner.setup()
        loop = asyncio.get_running_loop()
        for sock in self.sockets:
            if self.ssl_context is None:
                self.listeners.append(await loop.create_server(
                    self.runner.server, sock=sock, backlog=BACKLOG))
            else:
                self.listeners.append(tls.TlsListener(
                    sock, self.ssl_context, self.runner.server,
                    server.connections.login_timeout / 1e6))
        port = self.sockets[0].getsockname()[1]
        server.listen_ports["websocket"] = port
        log.info("WebSocket%s listening on %s:%d", " (TLS)" if self.tls else "",
                 split_address(address)[0], port)

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()
        if self.runner is None:
            for sock in self.sockets:
                sock.close()

    async def wait_closed(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()     # ends the connections still open
        for listener in self.listeners:
            await listener.wait_closed()
