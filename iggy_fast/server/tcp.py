"""The TCP (and TLS-TCP) transport: asyncio BufferedProtocol feeding the dispatcher.

The event loop reads straight into the connection's FrameReader buffer; complete frames are
dispatched where they sit and replies leave with one writelines() of header + payload pieces.
Stored batches in a poll reply arrive as FileRegion pieces: on plain TCP they go from the page
cache to the socket with sendfile(2) when nothing is queued ahead of them in the transport, and
are pread otherwise (TLS, or a socket that is not keeping up), in chunks, into a buffer the
connection reuses. A transport may keep a reference to what it was given (the SSL transport's
backlog, a socket's pending writes), so the buffer is reused only when the transport reports
nothing pending after the write; otherwise the transport keeps it and a new one is made.
Per connection, the bytes sent each way are counted and logged at DEBUG when it closes.
Requests are answered strictly in order: when a reply must wait (an fsync'd send), reading is
paused until it is written, so the receive buffer is not reused under the waiting request.
A read that leaves a frame incomplete is acknowledged at once (TCP_QUICKACK, which Linux resets
by itself, so it is set again after each such read): a client with Nagle on (the official SDK's
default) holds the rest of a request written in two pieces until the first is ACKed, and a
delayed ACK would stall that request for 40 ms.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
import time

from iggy_fast._log import FileRegion
from iggy_fast._wire import FrameReader
from iggy_fast.protocol.errors import ProtocolViolation

log = logging.getLogger("iggy_fast.tcp")

READ_CHUNK = 256 * 1024      # the reused read buffer: large enough to amortise a write call


class Connection(asyncio.BufferedProtocol):
    def __init__(self, server, transport_name: str = "TCP"):
        self.server = server
        self.transport_name = transport_name
        self.frames = FrameReader()
        self.transport = None
        self.client = None
        self.waiting = None
        self.sendfile_fd = None      # the socket's fd when sendfile(2) can be used
        self.read_buffer = None      # reused for stored batches that cannot be sendfile()d
        self.sent_by_sendfile = 0    # bytes of stored batches sent each way
        self.sent_by_copy = 0
        self.quickack = None         # the socket, when incomplete frames are ACKed at once

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if hasattr(socket, "TCP_QUICKACK") and self.server.cfg["tcp"]["quickack"]:
                self.quickack = sock
            if (transport.get_extra_info("ssl_object") is None
                    and self.server.cfg["tcp"]["sendfile"]):
                self.sendfile_fd = sock.fileno()
        peer = transport.get_extra_info("peername")
        address = f"{peer[0]}:{peer[1]}" if peer else "unknown"
        self.client = self.server.connect(self.transport_name, address)
        self.client.close = transport.close

    def get_buffer(self, sizehint: int):
        return self.frames.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.frames.buffer_updated(nbytes)
        self._process()
        if self.quickack is not None and self.frames.pending:
            self.quickack.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)

    def _process(self) -> None:
        dispatcher = self.server.dispatcher
        while self.waiting is None and self.transport is not None:
            try:
                frame = self.frames.next_frame()
            except ProtocolViolation as e:
                log.warning("closing connection %s: %s", self.client.address, e)
                self.transport.close()
                return
            if frame is None:
                return
            now = time.time_ns() // 1000
            self.client.last_seen = now
            out = dispatcher.handle(self.client, frame[0], frame[1], now)
            if inspect.isawaitable(out):
                self.transport.pause_reading()
                self.waiting = asyncio.ensure_future(out)
                self.waiting.add_done_callback(self._finished)
                return
            self._write(out)

    def _write(self, pieces) -> None:
        transport = self.transport
        queued = []
        for piece in pieces:
            if type(piece) is not FileRegion:
                queued.append(piece)
                continue
            if self.sendfile_fd is not None:
                if queued:
                    transport.writelines(queued)
                    queued = []
                if transport.get_write_buffer_size() == 0:
                    sent = self._sendfile(piece)
                    self.sent_by_sendfile += sent
                    if sent == piece.length:
                        continue
                    piece = FileRegion(piece.fd, piece.offset + sent, piece.length - sent)
            self._copy(piece, queued)
            queued = []
        if queued:
            transport.writelines(queued)

    def _copy(self, region, queued: list) -> None:
        """Write `queued`, then the region pread chunk by chunk into the reused buffer."""
        transport = self.transport
        offset, left = region.offset, region.length
        self.sent_by_copy += left
        if not left and queued:
            transport.writelines(queued)
        while left:
            n = min(left, READ_CHUNK)
            if self.read_buffer is None:
                self.read_buffer = bytearray(READ_CHUNK)
            view = memoryview(self.read_buffer)[:n]
            if os.preadv(region.fd, [view], offset) != n:
                raise OSError(f"short read of {n} bytes at {offset}")
            queued.append(view)
            transport.writelines(queued)
            queued.clear()
            if transport.get_write_buffer_size():
                self.read_buffer = None    # the transport may still hold the view: let it
            offset += n
            left -= n

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
                log.info("connection %s: %s", self.client.address, e)
                self.transport.close()
                return region.length
            if n == 0:
                break
            sent += n
        return sent

    def _finished(self, fut) -> None:
        self.waiting = None
        if self.transport is None or fut.cancelled():
            return
        self._write(fut.result())
        self.transport.resume_reading()
        self._process()

    def eof_received(self):
        return False

    def connection_lost(self, exc) -> None:
        self.transport = None
        if self.client is not None:
            log.debug("connection %s closed: stored batches sent %d bytes by sendfile, %d "
                      "bytes by copy", self.client.address, self.sent_by_sendfile,
                      self.sent_by_copy)
        if self.waiting is not None:
            # The reply can no longer be delivered, but the work (an fsync) is allowed to end.
            self.waiting = None
        if self.client is not None:
            self.server.disconnect(self.client)


async def start_tcp(server, host: str, port: int, ssl_context=None):
    loop = asyncio.get_running_loop()
    name = "TCP"
    return await loop.create_server(lambda: Connection(server, name), host, port,
                                    ssl=ssl_context, reuse_address=True, backlog=1024)
