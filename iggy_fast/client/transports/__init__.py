"""The client's transports: one small adapter (a `Link`) per transport, under the async client.

A `Link` is one connection to one server. The async client (client/aio.py) asks it for one
thing: `await link.request(code, body, extra)` (and `login`, `token_login`) answering the
reply's body, or raising the IggyError the server answered with.

Binary transports (TCP, TLS, QUIC, WebSocket) share `FramedLink`: it owns the sans-IO
ClientCore (numbering, session, the FIFO of pending requests, framing), so an adapter only
moves bytes. A subclass implements `_open()`, `_write(pieces)` (one request frame, in order)
and `_close()`, and calls `self._received(data)` with reply bytes in the order the server sent
them, and `self._lost(exc)` when the connection ends. HTTP speaks JSON per command instead and
implements `request()` its own way (client/transports/http.py).

Every wait is bounded by `timeout` (seconds): a request that gets no answer in time raises
TimeoutError naming it, and the link is closed (a late answer could no longer be matched).
"""

from __future__ import annotations

import asyncio

from iggy_fast.client.core import ClientCore, Failure, Pending
from iggy_fast.protocol.errors import ProtocolViolation


class Link:
    """One connection to a server, carrying requests and their answers."""

    def __init__(self, address: str, timeout: float = 30.0):
        self.address = address
        self.timeout = timeout

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

    def _lost(self, exc: BaseException | None) -> None:
        """The connection ended: every request still waiting fails."""
        if self.error is None:
            self.error = exc or ConnectionError(f"connection to {self.address} closed")
        self._open_ = False
        waiters, self.waiters = self.waiters, {}
        for pending, fut in waiters.items():
            if not fut.done():
                fut.set_exception(ConnectionError(
                    f"connection to {self.address} lost before {pending} was answered: "
                    f"{self.error}"))
        self._close()

    # -- Link -----------------------------------------------------------------------------

    async def connect(self) -> None:
        await asyncio.wait_for(self._open(), self.timeout)
        self._open_ = True

    @property
    def closed(self) -> bool:
        return not self._open_

    async def request(self, code: int, body=b"", extra=()) -> memoryview:
        return await self._send(*self.core.request(code, body, extra))

    async def login(self, username: str, password: str) -> memoryview:
        return await self._send(*self.core.login(username, password))

    async def token_login(self, token: str) -> memoryview:
        return await self._send(*self.core.token_login(token))

    async def _send(self, pending: Pending, pieces: list) -> memoryview:
        if not self._open_:
            raise ConnectionError(f"not connected to {self.address}"
                                  + (f": {self.error}" if self.error else ""))
        fut = asyncio.get_running_loop().create_future()
        self.waiters[pending] = fut
        self._write(pieces)
        try:
            return await asyncio.wait_for(fut, self.timeout)
        except asyncio.TimeoutError:
            self._lost(TimeoutError(f"no answer to {pending} within {self.timeout} s"))
            raise TimeoutError(f"no answer to {pending} from {self.address} within "
                               f"{self.timeout} s; connection closed") from None

    async def close(self) -> None:
        if self._open_:
            self._lost(ConnectionError("closed by the client"))
