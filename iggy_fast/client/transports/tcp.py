"""TcpLink: the async client's TCP and TLS-over-TCP transport (PROTOCOL.md §1).

Reading: an asyncio BufferedProtocol. Between frames the event loop reads into a 64 KiB scratch
buffer, so a small reply (a send's confirmation: a 256-byte header and a short body) comes in
one read, not a read for the header and another for the body; the bodies of the frames it
completes are copied out (they are small). A frame the scratch ends inside (a poll reply) is
finished straight into the core's buffer of exactly the frame's size, which becomes the answer:
at most the first 64 KiB of a large reply are copied, the rest never.

Writing: a request is one `sendmsg` of its pieces (header, body, the producer's batch as the
caller's buffer) straight to the socket when asyncio's transport has nothing queued ahead of
it, so the server is woken once per request and nothing is copied in user space; what the
socket does not take, and every write while something is queued, goes through the transport
(which then keeps the order). TLS writes go through the transport (asyncio's SSL layer
encrypts them).

Timeouts: answers come in request order, so one timer, at the oldest unanswered request's
deadline, bounds every wait (the same RequestTimeout, and the link closed, as FramedLink's
wait_for per request, without a timer and a wrapper future per request). `tls_ca_file` is the CA to verify the server against, and without it the
certificate is not verified (fine on loopback, not beyond).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections import deque

from iggy_fast.client.core import Failure
from iggy_fast.client.transports import FramedLink, _nbytes
from iggy_fast.protocol.codes import HEADER_SIZE
from iggy_fast.protocol.errors import ProtocolViolation, RequestTimeout

_SCRATCH = 64 * 1024        # what one read between frames may take
_SIZE = struct.Struct("<I")  # a reply header's frame size, at offset 48
_JOIN_BELOW = 16 * 1024     # written through the transport, smaller pieces are joined


class _Protocol(asyncio.BufferedProtocol):
    __slots__ = ("link",)

    def __init__(self, link: "TcpLink"):
        self.link = link

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.link._next_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.link._filled(nbytes)

    def eof_received(self):
        return False            # close: the server does not half-close a live connection

    def connection_lost(self, exc) -> None:
        self.link._lost(exc)


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    if ca_file:
        return ssl.create_default_context(cafile=ca_file)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def _connected_socket(host: str, port: int) -> socket.socket:
    """A connected non-blocking TCP socket to the first address of `host` that answers."""
    loop = asyncio.get_running_loop()
    errors: list[OSError] = []
    for family, kind, proto, _, address in await loop.getaddrinfo(
            host, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
            return sock
        except OSError as e:
            sock.close()
            errors.append(e)
        except BaseException:
            sock.close()
            raise
    if len(errors) == 1:
        raise errors[0]
    raise OSError(f"Multiple exceptions: {', '.join(str(e) for e in errors)}")


class TcpLink(FramedLink):
    """One TCP (or TLS) connection carrying binary frames."""

    def __init__(self, address: str, timeout: float = 30.0, tls: bool = False,
                 tls_ca_file: str | None = None, tls_domain: str | None = None,
                 nodelay: bool = True):
        super().__init__(address, timeout)
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"address {address!r} is not HOST:PORT")
        self.host, self.port = host.strip("[]") or "127.0.0.1", int(port)
        self.tls = tls
        self.tls_ca_file = tls_ca_file
        self.tls_domain = tls_domain
        self.nodelay = nodelay
        self.transport: asyncio.Transport | None = None
        self.sock: socket.socket | None = None      # plain TCP: written to directly
        self._scratch = memoryview(bytearray(_SCRATCH))
        self._in_frame = False      # reading the rest of a frame into the core's buffer
        # (deadline, pending, future) of the requests out, oldest first, and the one timer
        # that watches the oldest (instead of a wait_for, and its timer, per request).
        self._deadlines: deque = deque()
        self._watchdog: asyncio.TimerHandle | None = None

    @classmethod
    def from_config(cls, address: str, config) -> "TcpLink":
        return cls(address, config.timeout, tls=config.tls, tls_ca_file=config.tls_ca_file,
                   tls_domain=config.tls_domain, nodelay=config.nodelay)

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        if self.tls:
            self.transport, _ = await loop.create_connection(
                lambda: _Protocol(self), self.host, self.port, ssl=tls_context(self.tls_ca_file),
                server_hostname=self.tls_domain or self.host)
            sock = self.transport.get_extra_info("socket")
        else:
            sock = await _connected_socket(self.host, self.port)
            try:
                self.transport, _ = await loop.create_connection(lambda: _Protocol(self),
                                                                 sock=sock)
            except BaseException:
                sock.close()
                raise
            self.sock = sock
        if self.nodelay and sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -- requests ----------------------------------------------------------------------------

    async def _send(self, pending, pieces: list) -> memoryview:
        """FramedLink's _send, with the same timeout: an unanswered request raises
        RequestTimeout and closes the link. Answers come in request order, so one timer
        at the oldest request's deadline watches them all."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.waiters[pending] = fut
        self._write(pieces)
        deadlines = self._deadlines
        while deadlines and deadlines[0][2].done():
            deadlines.popleft()
        deadline = loop.time() + self.timeout
        deadlines.append((deadline, pending, fut))
        if self._watchdog is None:
            self._watchdog = loop.call_at(deadline, self._check_deadlines)
        return await fut

    def _check_deadlines(self) -> None:
        self._watchdog = None
        deadlines = self._deadlines
        while deadlines and deadlines[0][2].done():
            deadlines.popleft()
        if not deadlines:
            return
        deadline, pending, fut = deadlines[0]
        loop = asyncio.get_running_loop()
        if deadline > loop.time():
            self._watchdog = loop.call_at(deadline, self._check_deadlines)
            return
        deadlines.popleft()
        self.waiters.pop(pending, None)
        fut.set_exception(RequestTimeout(
            f"no answer to {pending} from {self.address} within {self.timeout} s; connection "
            f"closed (is the server overloaded, or the timeout too short?)"))
        self._lost(RequestTimeout(f"no answer to {pending} within {self.timeout} s"))

    # -- reading -----------------------------------------------------------------------------

    def _next_buffer(self) -> memoryview:
        return self._get_buffer() if self._in_frame else self._scratch

    def _filled(self, nbytes: int) -> None:
        if self._in_frame:
            try:
                events = self.core.buffer_updated(nbytes)
            except ProtocolViolation as e:
                self._lost(e)
                return
            if events:                      # the frame is complete: back to the scratch
                self._in_frame = False
                self._answer(events)
            return
        data = self._scratch[:nbytes]
        # Where the frames wholly inside `data` end: past that, a frame continues.
        pos = 0
        while nbytes - pos >= HEADER_SIZE:
            size = _SIZE.unpack_from(data, pos + 48)[0]
            if size < HEADER_SIZE or nbytes - pos < size:
                break
            pos += size
        self._received(data)        # answers complete frames with copies of their bodies
        self._in_frame = pos < nbytes and not self.closed

    def _answer(self, events: list) -> None:
        for event in events:
            fut = self.waiters.pop(event.pending, None)
            if fut is None or fut.done():
                continue                # its caller gave up (timeout, cancel)
            if type(event) is Failure:
                fut.set_exception(event.error)
            else:
                fut.set_result(event.body)      # the frame's own buffer: no copy

    # -- writing -----------------------------------------------------------------------------

    def _write(self, pieces: list) -> None:
        transport = self.transport
        sock = self.sock
        if sock is None or transport.get_write_buffer_size() or transport.is_closing():
            self._write_through(pieces)
            return
        try:
            sent = sock.sendmsg(pieces)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            sent = 0                # the transport's write meets the error and reports it
        for i, piece in enumerate(pieces):
            size = _nbytes(piece)
            if sent < size:
                self._write_through([memoryview(piece)[sent:], *pieces[i + 1:]])
                return
            sent -= size

    def _write_through(self, pieces: list) -> None:
        # Through the transport: small pieces joined (one write, one TLS record), a large one
        # (a batch) written as it is.
        transport = self.transport
        run: list = []
        for piece in pieces:
            if _nbytes(piece) < _JOIN_BELOW:
                run.append(piece)
                continue
            if run:
                transport.write(b"".join(run))
                run = []
            transport.write(piece)
        if run:
            transport.write(b"".join(run))

    def _close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._deadlines.clear()
        if self.transport is not None:
            self.transport.close()
