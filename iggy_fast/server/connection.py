"""The connection driver: what every transport does with a client connection, minus the socket.

One `Connection` per client connection, whatever carries it (TCP, TLS, later QUIC streams and
WebSocket). The transport adapter reads into the driver's FrameReader (`get_buffer`,
`buffer_updated`) and tells it when its write buffer has drained (`resume_writing`) and when
the connection ended (`connection_lost`); the driver cuts frames where they sit, stamps each
request with `now`, hands it to `server.dispatcher.handle()` and writes the reply pieces back
through the small `Transport` interface below. Resolving FileRegion pieces (stored batches,
sent by sendfile or read into a buffer) is the adapter's job: only it knows whether sendfile
can reach its socket.

Theory of operation:
- Replies leave strictly in request order. A reply that must wait (an fsync'd send: the
  dispatcher returns an awaitable) stops the processing of frames until it is written, and
  reading pauses meanwhile, so the receive buffer is never reused under the waiting request.
- Write backpressure: before each frame the driver asks whether the transport's write buffer is
  above its high-water mark; if it is, it stops dispatching and pauses reading until the
  adapter reports `resume_writing()`. So at most one reply is written past the mark, and the
  TCP adapter holds that reply's stored batches as file regions, read a chunk at a time as the
  buffer drains. A client that sends requests without reading replies therefore costs at
  most: the high-water mark plus one chunk (transports/tcp.py: 1 MiB + 256 KiB), the small
  parts of one reply, and the receive buffer (FrameReader: 256 KiB, or the largest frame
  received), plus what the kernel's socket buffers hold. Its further requests wait in those
  socket buffers and then in the client.
- Two reasons pause reading (a waiting reply, a full write buffer); reading resumes only when
  neither holds, and frames already buffered are dispatched first: they may be all there is.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import Protocol

from iggy_fast._wire import FrameReader
from iggy_fast.protocol.errors import ProtocolViolation

log = logging.getLogger("iggy_fast.connection")


class Transport(Protocol):
    """What the driver needs from a transport adapter."""

    def write(self, pieces: list) -> None:
        """Send reply pieces in order: bytes-like objects and FileRegion (stored batches).
        The adapter may keep some of them, unread, until its buffer has room again."""

    def write_buffer_full(self) -> bool:
        """The write buffer is above its high-water mark. Once this was True, the adapter must
        call the driver's `resume_writing()` when it has drained again."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None:
        """End the connection; `connection_lost()` follows."""


class Connection:
    """One client connection's frames, replies and flow control (see the module docstring)."""

    def __init__(self, server, transport: Transport, transport_name: str, address: str):
        self.server = server
        self.transport = transport
        self.frames = FrameReader()
        self.client = server.connect(transport_name, address)
        self.client.close = transport.close
        self.waiting = None          # the future of a reply being awaited
        self.reading = True          # the transport is reading (not paused by us)
        self.processing = False      # inside _process (a transport callback may re-enter)
        self.open = True

    # -- called by the transport adapter -------------------------------------------------

    def get_buffer(self, sizehint: int):
        return self.frames.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.frames.buffer_updated(nbytes)
        self._process()

    def resume_writing(self) -> None:
        if not self.processing:      # else the loop in _process sees the room itself
            self._process()

    def connection_lost(self) -> None:
        self.open = False
        # A reply being awaited can no longer be delivered, but its work (an fsync) may end.
        self.waiting = None
        self.server.disconnect(self.client)

    # -- the driver ------------------------------------------------------------------------

    def _process(self) -> None:
        transport = self.transport
        dispatcher = self.server.dispatcher
        self.processing = True
        try:
            while self.waiting is None and self.open and not transport.write_buffer_full():
                try:
                    frame = self.frames.next_frame()
                except ProtocolViolation as e:
                    log.warning("closing connection %s: %s", self.client.address, e)
                    transport.close()
                    return
                if frame is None:
                    break
                now = time.time_ns() // 1000
                self.client.last_seen = now
                out = dispatcher.handle(self.client, frame[0], frame[1], now)
                if inspect.isawaitable(out):
                    self.waiting = asyncio.ensure_future(out)
                    self.waiting.add_done_callback(self._replied)
                    break
                transport.write(out)
        finally:
            self.processing = False
        if not self.open:
            return
        blocked = self.waiting is not None or transport.write_buffer_full()
        if blocked == self.reading:
            self.reading = not blocked
            if blocked:
                transport.pause_reading()
            else:
                transport.resume_reading()

    def _replied(self, fut) -> None:
        if fut is not self.waiting or fut.cancelled():
            return                   # the connection ended while the reply was awaited
        self.waiting = None
        self.transport.write(fut.result())
        self._process()
