"""The TCP (and TLS-TCP) transport: an asyncio BufferedProtocol over the connection driver.

The event loop reads straight into the driver's FrameReader buffer; replies leave with one
writelines() of header + payload pieces. Stored batches in a poll reply arrive as FileRegion
pieces: on plain TCP they go from the page cache to the socket with sendfile(2) when nothing is
queued ahead of them in the transport, and are pread otherwise (TLS, or a socket that is not
keeping up), in chunks, into a buffer the connection reuses. A transport may keep a reference
to what it was given (the SSL transport's backlog, a socket's pending writes), so the buffer is
reused only when the transport reports nothing pending after the write; otherwise the transport
keeps it and a new one is made. A connection idle for a while gives it back (`shrink()`, from
the driver's sweep), so only a connection that is polling keeps one. A region holds its
segment file open (OpenFile), so a reply still queued here outlives a purge or retention of
the segment it came from.

Write buffer limits are set explicitly (HIGH_WATER, LOW_WATER) for the driver's backpressure:
above HIGH_WATER the event loop calls pause_writing() and the driver stops dispatching and
reading until resume_writing(). Regions are not read ahead of that either: what the buffer
cannot take waits in `pending` as regions (open files, not bytes), so a slow reader costs at
most HIGH_WATER + READ_CHUNK here whatever its replies' size. LOW_WATER is 0 so that a
connection resumes with an empty buffer, where the next stored batches can go by sendfile
again; the kernel's socket buffer still holds data meanwhile, so the socket does not run dry.
(A region held for a slow reader keeps its file's disk space until it is sent or the
connection ends, even if retention deleted the segment.)

TCP_QUICKACK: a client with Nagle on (the official SDK's default) writes a request of a few
tens of KB in two pieces and holds the second until the first is acknowledged, while this side,
having answered every request so far, delays its ACK (up to 40 ms on Linux) hoping to carry it
on a reply. Whenever a read leaves a frame incomplete the ACK is sent at once (TCP_QUICKACK is
not sticky: the kernel leaves quick-ACK mode again by itself, so it is set every time).
`[tcp] quickack = false` turns this off (to show the stall: bench/sdk_latency_sweep.py).

Per connection, the stored-batch bytes sent each way are logged at DEBUG when it closes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import deque

from iggy_fast._log import FileRegion
from iggy_fast.config import split_address
from iggy_fast.server.connection import Connection
from iggy_fast.server.core import StartupError
from iggy_fast.server.transports import Endpoint, tls
from iggy_fast.server.transports.sockets import BACKLOG, bind, os_reason

log = logging.getLogger("iggy_fast.tcp")

READ_CHUNK = 256 * 1024      # the reused read buffer: large enough to amortise a write call
HIGH_WATER = 1024 * 1024     # write buffer bytes above which a connection stops reading
LOW_WATER = 0
QUICKACK = getattr(socket, "TCP_QUICKACK", None)    # Linux only


class TcpConnection(asyncio.BufferedProtocol):
    """The asyncio protocol of one TCP connection, and the driver's Transport."""

    def __init__(self, server, transport_name: str = "TCP"):
        self.server = server
        self.transport_name = transport_name
        self.transport = None
        self.driver = None
        self.full = False            # the event loop asked us to pause writing
        self.pending = deque()       # reply pieces not yet given to the transport (regions
                                     # wait here unread while the buffer is full)
        self.socket = None           # the TCP socket (under TLS too), for TCP_QUICKACK
        self.sendfile_fd = None      # the socket's fd when sendfile(2) can be used
        self.read_buffer = None      # reused for stored batches that cannot be sendfile()d
        self.sent_by_sendfile = 0    # bytes of stored batches sent each way
        self.sent_by_copy = 0

    # -- asyncio protocol ----------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.driver = Connection(self.server, self, self.transport_name, self._adopt(transport))

    def _adopt(self, transport) -> str:
        """Take the accepted transport: write limits, no Nagle, quick ACKs and sendfile where
        the socket allows them; returns the peer's address."""
        self.transport = transport
        transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if QUICKACK is not None and self.server.cfg["tcp"]["quickack"]:
                self.socket = sock
            if (transport.get_extra_info("ssl_object") is None
                    and self.server.cfg["tcp"]["sendfile"]):
                self.sendfile_fd = sock.fileno()
        peer = transport.get_extra_info("peername")
        return f"{peer[0]}:{peer[1]}" if peer else "unknown"

    def get_buffer(self, sizehint: int):
        return self.driver.frames.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        driver = self.driver
        driver.buffer_updated(nbytes)
        if (driver.frames.pending and self.socket is not None
                and not self.transport.is_closing()):
            self.socket.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)

    def pause_writing(self) -> None:
        self.full = True

    def resume_writing(self) -> None:
        self.full = False
        self._flush()
        if not self.full:
            self.driver.resume_writing()

    def eof_received(self):
        return False

    def connection_lost(self, exc) -> None:
        log.debug("connection %s closed: stored batches sent %d bytes by sendfile, %d bytes "
                  "by copy", self.driver.address, self.sent_by_sendfile, self.sent_by_copy)
        self.pending.clear()         # lets go of the files the regions held open
        self.driver.connection_lost()
        # Break the cycles through this protocol (with the driver, and with uvloop's TLS
        # transport, whose protocol keeps our bound methods), so the connection's memory goes
        # back at once rather than at the collector's next full pass.
        self.driver = None
        self.transport = None

    # -- the driver's Transport ----------------------------------------------------------

    def write_buffer_full(self) -> bool:
        return self.full

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()

    def close(self) -> None:
        self.transport.close()

    def abort(self) -> None:
        self.transport.abort()

    def shrink(self) -> int:
        freed = len(self.read_buffer) if self.read_buffer is not None else 0
        self.read_buffer = None      # the next copy allocates one again
        return freed

    def write(self, pieces) -> None:
        if not self.pending:
            for piece in pieces:
                if type(piece) is FileRegion:
                    break
            else:
                self.transport.writelines(pieces)
                return
        self.pending.extend(pieces)
        self._flush()

    def _flush(self) -> None:
        """Hand pending pieces to the transport in order, until its buffer is full.

        A region goes by sendfile while the transport buffer is empty, otherwise READ_CHUNK at
        a time by copy; what is left waits here as a region (an open file, not bytes) until
        resume_writing(), so a reply far larger than the buffer costs no more than it.
        """
        transport = self.transport
        pending = self.pending
        queued = []
        while pending:
            piece = pending[0]
            if type(piece) is not FileRegion:
                queued.append(pending.popleft())
                continue
            if queued:
                transport.writelines(queued)
                queued = []
            if self.full or transport.is_closing():
                break
            sent = 0
            if self.sendfile_fd is not None and transport.get_write_buffer_size() == 0:
                sent = self._sendfile(piece)
                self.sent_by_sendfile += sent
            if sent < piece.length:
                sent += self._copy(piece, sent)
            if sent == piece.length:
                pending.popleft()
            else:
                pending[0] = FileRegion(piece.file, piece.offset + sent, piece.length - sent)
        if queued:
            transport.writelines(queued)

    def _copy(self, region, skip: int) -> int:
        """Write one chunk of the region after its first `skip` bytes, pread into the reused
        buffer; returns its size."""
        transport = self.transport
        n = min(region.length - skip, READ_CHUNK)
        if self.read_buffer is None:
            self.read_buffer = bytearray(READ_CHUNK)
        view = memoryview(self.read_buffer)[:n]
        if os.preadv(region.fd, [view], region.offset + skip) != n:
            raise OSError(f"short read of {n} bytes at {region.offset + skip}")
        transport.write(view)
        if transport.get_write_buffer_size():
            self.read_buffer = None    # the transport may still hold the view: let it
        self.sent_by_copy += n
        return n

    def _sendfile(self, region) -> int:
        """Send as much of the region as the socket takes now; returns the bytes sent."""
        sent = 0
        while sent < region.length:
            try:
                n = os.sendfile(self.sendfile_fd, region.fd, region.offset + sent,
                                region.length - sent)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                # The peer is gone (EPIPE, ECONNRESET): this connection ends here.
                log.info("connection %s: %s", self.driver.address, e)
                self.transport.close()
                return region.length
            if n == 0:
                break
            sent += n
        return sent


class TcpEndpoint(Endpoint):
    """The TCP listener (TLS when `[tcp.tls] enabled`): sockets bound in __init__. The
    WebSocket listener is this one with another section and protocol (websocket.py)."""

    section, name = "tcp", "TCP"
    log = log

    def __init__(self, cfg: dict):
        super().__init__(cfg)
        tls_cfg = cfg[self.section]["tls"]
        self.tls = tls_cfg["enabled"]
        self.ssl_context = (tls.configured_context(tls_cfg, f"{self.section}.tls") if self.tls
                            else None)
        self.sockets = bind(self.name, cfg[self.section]["address"])
        self.listeners: list = []    # asyncio Servers, or TlsListeners

    def connection(self, server) -> TcpConnection:
        """The protocol of one accepted connection."""
        return TcpConnection(server, "TCP")

    async def start(self, server) -> None:
        if self.tls and self.ssl_context is None:
            self.ssl_context = tls.self_signed_context_or_stop(server.data_dir)
        address = self.cfg[self.section]["address"]
        try:
            for sock in self.sockets:
                sock.listen(BACKLOG)
        except OSError as e:
            raise StartupError(f"{self.name} cannot listen on {address}: {os_reason(e)}"
                               ) from None

        def factory():
            return self.connection(server)

        loop = asyncio.get_running_loop()
        for sock in self.sockets:
            if self.ssl_context is None:
                self.listeners.append(await loop.create_server(factory, sock=sock,
                                                               backlog=BACKLOG))
            else:
                # The login deadline starts once the handshake is done: bound the handshake
                # alike.
                self.listeners.append(tls.TlsListener(
                    sock, self.ssl_context, factory, server.connections.login_timeout / 1e6))
        port = self.sockets[0].getsockname()[1]
        server.listen_ports[self.section] = port
        self.log.info("%s%s listening on %s:%d", self.name, " (TLS)" if self.tls else "",
                      split_address(address)[0], port)

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()
        if not self.listeners:
            for sock in self.sockets:
                sock.close()

    async def wait_closed(self) -> None:
        for listener in self.listeners:
            await listener.wait_closed()
