"""The WebSocket link (ws:// and wss://): the binary protocol over aiohttp's WebSocket client.

Each request frame goes out as one binary message and each reply arrives as one (the server
side: server/transports/websocket.py); replies are handed to the FramedLink's core as they
come, which would also take a reply split over messages. aiohttp sends asynchronously while
`_write` is called synchronously, so requests wait in `outbox` for one writer task, which keeps
them in order; a reader task feeds replies in.

TLS: `wss://`, verifying the server against `ca_file` (or the system's trust store), with
`domain` as the name checked (and sent as SNI) when the address is an IP address;
`verify=False` accepts any certificate, as the official SDK does by default.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque

import aiohttp

from iggy_fast.client.transports import FramedLink
from iggy_fast.protocol.codes import MAX_FRAME_SIZE


def client_context(ca_file: str | None = None, verify: bool = True) -> ssl.SSLContext:
    """A client TLS context trusting `ca_file` (None: the system's CAs); no checks at all
    when `verify` is False."""
    ctx = ssl.create_default_context(cafile=ca_file)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


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
        self.ssl = (client_context(ca_file, verify) if self.url.startswith("wss://")
                    else None)
        self.domain = domain
        self.session: aiohttp.ClientSession | None = None
        self.ws = None
        self.outbox: deque[bytes] = deque()
        self.output = asyncio.Event()
        self.tasks: list[asyncio.Task] = []
        self.closing: asyncio.Task | None = None

    async def _open(self) -> None:
        self.session = aiohttp.ClientSession()
        try:
            self.ws = await self.session.ws_connect(
                self.url, ssl=self.ssl if self.ssl is not None else True,
                server_hostname=self.domain, compress=0, autoping=True,
                max_msg_size=MAX_FRAME_SIZE)
        except BaseException:
            await self.session.close()
            raise
        self.tasks = [asyncio.ensure_future(self._read()), asyncio.ensure_future(self._sender())]

    async def _read(self) -> None:
        ws = self.ws
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                self._lost(ConnectionError(f"{self.address} sent a {msg.type.name} message"))
                return
            self._received(msg.data)
        self._lost(ConnectionError(f"connection to {self.address} closed by the server"
                                   f" (close code {ws.close_code})"))

    async def _sender(self) -> None:
        ws = self.ws
        outbox = self.outbox
        try:
            while True:
                await self.output.wait()
                self.output.clear()
                while outbox:
                    await ws.send_bytes(outbox.popleft())
        except ConnectionError as e:
            self._lost(e)

    def _write(self, pieces: list) -> None:
        self.outbox.append(b"".join(pieces))
        self.output.set()

    def _close(self) -> None:
        if self.closing is None:
            self.closing = asyncio.ensure_future(self._shut())

    async def _shut(self) -> None:
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()
        self.outbox.clear()
        try:
            if self.ws is not None:
                await self.ws.close()
        finally:
            await self.session.close()

    async def close(self) -> None:
        await super().close()
        if self.closing is not None:
            await asyncio.shield(self.closing)
