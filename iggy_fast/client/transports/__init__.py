"""The client's transports: one small adapter (a `Link`) per transport, under the async client.

A `Link` is one connection to one server. The async client (client/aio.py) asks it for one
thing: `await link.request(code, body, extra)` (and `login`, `token_login`) answering the
reply's payload, or raising the IggyError the server answered with. Request bodies and reply
payloads are the binary layouts of PROTOCOL.md §5 whatever the transport (the client's codec,
protocol/client_codec.py, reads them), so a Link that speaks something else (HTTP's JSON)
translates both ways.

Binary transports (TCP, TLS, QUIC, WebSocket) share `FramedLink`: it owns the sans-IO
ClientCore (numbering, session, the FIFO of pending requests, framing), so an adapter only
moves bytes. A subclass implements `_open()`, `_write(pieces)` (one request frame, in order)
and `_close()`, and calls `self._received(data)` with reply bytes in the order the server sent
them, and `self._lost(exc)` when the connection ends. A transport that can read straight
into memory (asyncio's BufferedProtocol) may instead fill `self._get_buffer()` and call
`self._buffer_updated(n)`: a reply body then lands in its own buffer, never copied. HTTP
speaks JSON per command instead and implements `request()` its own way
(client/transports/http.py).

The client builds a link with `LinkClass.from_config(address, config)` (a ClientConfig,
client/connection_string.py); the default passes the request timeout, and a transport that
needs more (TLS settings) overrides it.

Every wait is bounded by `timeout` (seconds): a request that gets no answer in time raises
RequestTimeout (a TimeoutError) naming it, and the link is closed (a late answer could no
longer be matched). A connection that ends under a request raises Disconnected (a
ConnectionError); a request on a closed link raises NotConnected.
"""

from __future__ import annotations

import asyncio

from iggy_fast.client.core import ClientCore, Failure, Pending
from iggy_fast.protocol.codes import HEADER_SIZE, MAX_FRAME_SIZE
from iggy_fast.protocol.errors import (Disconnected, NotConnected, ProtocolViolation,
                                       RequestTimeout, RequestTooLarge)


def _nbytes(piece) -> int:
    return piece.nbytes if isinstance(piece, memoryview) else len(piece)


class Link:
    """One connection to a server, carrying requests and their answers."""

    def __init__(self, address: str, timeout: float = 30.0):
        self.address = address
        self.timeout = timeout

    @classmethod
    def from_config(cls, address: str, config) -> "Link":
        """A link to `address` configured from a ClientConfig."""
        return cls(address, config.timeout)

    async def connect(self) -> None:
        raise NotImplementedError

    async def request(self, code: int, body=b"", extra=()) -> memoryview:
        raise NotImplementedError

    async def login(self, username: str, password: str) -> memoryview:
        raise NotImplementedError

    async def token_login(self, token: str) -> memoryview:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        raise NotImplementedError


class FramedLink(Link):
    """A Link over a transport that carries the binary frames (see the module docstring)."""

    def __init__(self, address: str, timeout: float = 30.0):
        super().__init__(address, timeout)
        self.core = ClientCore()
        self.waiters: dict[Pending, asyncio.Future] = {}
        self.error: BaseException | None = None     # why the link ended, once it has
        self._open_ = False

    # -- for subclasses ------------------------------------------------------------------

    async def _open(self) -> None:
        raise NotImplementedError

    def _write(self, pieces: list) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _received(self, data) -> None:
        """Reply bytes, in the order the server sent them."""
        try:
            events = self.core.receive_data(data)
        except ProtocolViolation as e:
            self._lost(e)
            return
        for event in events:
            fut = self.waiters.pop(event.pending, None)
            if fut is None or fut.done():
                continue                # its caller gave up (timeout, cancel)
            if type(event) is Failure:
                fut.set_exception(event.error)
            else:
                # A view of `data` may be reused by the transport: the answer owns its bytes.
                fut.set_result(memoryview(bytes(event.body)))

    def _get_buffer(self) -> memoryview:
        """Where the next received bytes go (BufferedProtocol transports)."""
        return self.core.get_buffer()

    def _buffer_updated(self, nbytes: int) -> None:
        """`nbytes` were written at `_get_buffer()`; an answer's body is its own buffer."""
        try:
            events = self.core.buffer_updated(nbytes)
        except ProtocolViolation as e:
            self._lost(e)
            return
        for event in events:
            fut = self.waiters.pop(event.pending, None)
            if fut is None or fut.done():
                continue
            if type(event) is Failure:
                fut.set_exception(event.error)
            else:
                fut.set_result(event.body)

    def _lost(self, exc: BaseException | None) -> None:
        """The connection ended: every request still waiting fails."""
        if self.error is None:
            self.error = exc or ConnectionError(f"connection to {self.address} closed")
        self._open_ = False
        waiters, self.waiters = self.waiters, {}
        for pending, fut in waiters.items():
            if not fut.done():
                fut.set_exception(Disconnected(
                    f"connection to {self.address} lost before {pending} was answered "
                    f"({self.error}); it may or may not have been applied"))
        self._close()

    # -- Link -----------------------------------------------------------------------------

    async def connect(self) -> None:
        await asyncio.wait_for(self._open(), self.timeout)
        self._open_ = True

    @property
    def closed(self) -> bool:
        return not self._open_

    async def request(self, code: int, body=b"", extra=()) -> memoryview:
        size = _nbytes(body) + sum(_nbytes(p) for p in extra)
        if size > MAX_FRAME_SIZE - HEADER_SIZE:
            raise RequestTooLarge(f"command {code} would be a frame of {size + HEADER_SIZE} "
                                  f"bytes, more than the {MAX_FRAME_SIZE} a server reads; "
                                  f"send less per call")
        self._check_open()
        return await self._send(*self.core.request(code, body, extra))

    async def login(self, username: str, password: str) -> memoryview:
        self._check_open()
        return await self._send(*self.core.login(username, password))

    async def token_login(self, token: str) -> memoryview:
        self._check_open()
        return await self._send(*self.core.token_login(token))

    def _check_open(self) -> None:
        if not self._open_:
            raise NotConnected(f"not connected to {self.address}"
                               + (f" ({self.error})" if self.error else ""))

    async def _send(self, pending: Pending, pieces: list) -> memoryview:
        fut = asyncio.get_running_loop().create_future()
        self.waiters[pending] = fut
        self._write(pieces)
        try:
            return await asyncio.wait_for(fut, self.timeout)
        except asyncio.TimeoutError:
            self._lost(RequestTimeout(f"no answer to {pending} within {self.timeout} s"))
            raise RequestTimeout(f"no answer to {pending} from {self.address} within "
                                 f"{self.timeout} s; connection closed (is the server "
                                 f"overloaded, or the timeout too short?)") from None

    async def close(self) -> None:
        if self._open_:
            self._lost(ConnectionError("closed by the client"))
