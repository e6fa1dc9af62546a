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
  parts of one reply, and the receive buffer (FrameReader: 4 KiB, or the largest frame
  received), plus what the kernel's socket buffers hold. Its further requests wait in those
  socket buffers and then in the client.
- Two reasons pause reading (a waiting reply, a full write buffer); reading resumes only when
  neither holds, and frames already buffered are dispatched first: they may be all there is.

Limits (`[connections]`, kept by `Connections`, one per server over every transport):
- A connection over `max_total`, or over `max_per_address` from its IP address, is closed as
  soon as it is made, before it is a client. The first refusal is logged with the address;
  later ones are only counted until a slot frees, so a flood does not flood the log.
- Until it logs in, a connection's frames may not exceed `max_request_size_before_login`
  (a login needs at most 1288 bytes), so an unauthenticated peer cannot make the receive
  buffer grow: it is refused at the header of a larger frame. After a login the limit is the
  protocol's 64 MiB; after a logout the small limit applies again.
- A sweep on the event loop (a periodic task: it is given `now`) closes a connection that has
  not logged in within `login_timeout` of connecting (or of logging out), and one that has
  sent no complete request (pings count) for `idle_timeout`; a partly sent frame is not
  activity, so a peer that trickles bytes is closed too. These closes abort: what is queued
  for a peer that does not read is dropped rather than waited for.
- The same sweep gives back the buffers of a connection that has sent nothing for
  SHRINK_AFTER: the receive buffer, and the transport's (the TCP adapter's pread buffer).
  An idle connection then costs its objects, a few KiB (and the kernel's socket buffers).
  Once a MiB or more was freed (idle buffers, ended connections) the sweep asks the C
  allocator to return its free pages (glibc's malloc_trim): otherwise the heap keeps what
  2000 closed connections used, ready for reuse but counted against the process.
"""

from __future__ import annotations

import asyncio
import ctypes
import inspect
import logging
import time
from typing import Protocol

from iggy_fast._log import FileRegion
from iggy_fast._wire import FrameReader
from iggy_fast.config import NEVER, parse_duration_us, parse_size
from iggy_fast.protocol.codes import MAX_FRAME_SIZE
from iggy_fast.protocol.errors import ProtocolViolation

log = logging.getLogger("iggy_fast.connection")

SHRINK_AFTER = 1_000_000     # µs without a request after which a connection's buffers go back
# What the allocator keeps of freed memory goes back to the system once this much was freed:
# buffers given back by idle connections, and ended connections (counted at ENDED each plus
# their receive buffer: objects, handles and kernel socket state of a few KiB).
TRIM_ABOVE = 1024 * 1024
ENDED = 8 * 1024
try:
    # glibc keeps freed heap memory for reuse; malloc_trim returns its free pages to the OS.
    _malloc_trim = ctypes.CDLL(None).malloc_trim
except (OSError, AttributeError):     # pragma: no cover - not glibc
    _malloc_trim = None


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
        """End the connection once what is queued is sent; `connection_lost()` follows."""

    def abort(self) -> None:
        """End the connection now, dropping what is queued; `connection_lost()` follows."""

    def shrink(self) -> int:
        """The connection is idle: let go of buffers only worth keeping while it is busy.
        Returns the bytes given back."""


def reply_bytes(pieces: list) -> bytes:
    """One reply as one bytes object, stored batches (FileRegion) read in: for transports that
    carry each reply as one message (QUIC streams) and cannot sendfile."""
    return b"".join([p.read() if type(p) is FileRegion else p for p in pieces])


class Connections:
    """Every client connection of one server, over all transports, and its `[connections]`
    limits: admission by count, the login deadline, the idle timeout, idle buffer shrinking.
    """

    def __init__(self, server):
        cfg = server.cfg["connections"]
        self.max_total = cfg["max_total"]                  # 0: no limit
        self.max_per_address = cfg["max_per_address"]
        # A timeout of 0 is none, as a count of 0 is (and as `never` is).
        self.login_timeout = parse_duration_us(cfg["login_timeout"]) or NEVER
        self.idle_timeout = parse_duration_us(cfg["idle_timeout"]) or NEVER
        self.max_request_before_login = min(
            parse_size(cfg["max_request_size_before_login"]), MAX_FRAME_SIZE)
        self.active: set[Connection] = set()
        self.per_address: dict[str, int] = {}
        # Refusals since the one logged, by address ("" for the total limit).
        self.refused: dict[str, int] = {}
        self.freed = 0              # bytes given back since the allocator was last trimmed
        # A deadline is met within a quarter of it (at most a second late).
        interval = min(1.0, self.login_timeout / 4e6, self.idle_timeout / 4e6)
        server.periodic_tasks.append((max(0.05, interval), self.sweep))

    def admit(self, conn: Connection) -> bool:
        """Count the connection in, or return False (and log the first refusal of a run)."""
        host = conn.host
        count = self.per_address.get(host, 0)
        if self.max_total and len(self.active) >= self.max_total:
            key, why = "", f"{len(self.active)} connections open (connections.max_total)"
        elif self.max_per_address and count >= self.max_per_address:
            key, why = host, f"{count} connections open from it (connections.max_per_address)"
        else:
            self.active.add(conn)
            self.per_address[host] = count + 1
            return True
        if key in self.refused:
            self.refused[key] += 1
        else:
            self.refused[key] = 0
            log.warning("refused a connection from %s: %s; further refusals are counted until "
                        "a connection closes", conn.address, why)
        return False

    def release(self, conn: Connection) -> None:
        self.active.discard(conn)
        self.freed += ENDED + conn.frames.capacity
        host = conn.host
        left = self.per_address.pop(host) - 1
        if left:
            self.per_address[host] = left
        for key in (host, "") if self.refused else ():
            more = self.refused.pop(key, None)
            if more:
                log.warning("refused %d further connection(s) %s", more,
                            f"from {host}" if key else "over connections.max_total")

    def sweep(self, now: int) -> None:
        """Close connections past their login deadline or idle timeout; shrink idle ones."""
        idle_timeout = self.idle_timeout
        for conn in list(self.active):
            if not conn.open:
                continue
            client = conn.client
            if (client.user_id is not None) is not conn.authenticated:
                conn.login_changed()
            quiet = now - client.last_seen
            if not conn.authenticated and now >= conn.login_by:
                conn.abort("not logged in in time (connections.login_timeout)")
            elif quiet >= idle_timeout:
                conn.abort(f"no request for {quiet / 1e6:.1f} s (connections.idle_timeout)")
            elif quiet >= SHRINK_AFTER:
                self.freed += conn.frames.shrink() + conn.transport.shrink()
        if self.freed >= TRIM_ABOVE and _malloc_trim is not None:
            _malloc_trim(0)
            self.freed = 0


class Connection:
    """One client connection's frames, replies and flow control (see the module docstring)."""

    def __init__(self, server, transport: Transport, transport_name: str, address: str):
        """`address` is "host:port" (the host alone counts towards max_per_address). A
        connection over a limit is closed here, never becoming a client: check `open`."""
        self.server = server
        self.transport = transport
        self.address = address
        self.host = address.rpartition(":")[0] or address
        self.frames = FrameReader()
        self.waiting = None          # the future of a reply being awaited
        self.reading = True          # the transport is reading (not paused by us)
        self.processing = False      # inside _process (a transport callback may re-enter)
        self.client = None
        self.connections = server.connections
        self.open = self.connections.admit(self)
        if not self.open:
            transport.close()
            return
        self.client = server.connect(transport_name, address)
        server.metrics.connected(transport_name)
        self.client.close = transport.close
        # Not logged in yet: small frames only, and a deadline (both follow the login state).
        self.authenticated = False
        self.frames.max_frame = self.connections.max_request_before_login
        self.client.last_seen = time.time_ns() // 1000   # idle since it connected
        self.login_by = self.client.last_seen + self.connections.login_timeout

    # -- called by the transport adapter -------------------------------------------------

    def get_buffer(self, sizehint: int):
        return self.frames.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.frames.buffer_updated(nbytes)
        self._process()

    def feed(self, data) -> None:
        """Take received bytes that arrived as a chunk (a QUIC stream's data) rather than
        read into get_buffer(): copied into the receive buffer, then cut into
        frames as a read would be."""
        view = memoryview(data).cast("B")
        frames = self.frames
        while view:
            buffer = frames.get_buffer(len(view))
            n = min(len(buffer), len(view))
            buffer[:n] = view[:n]
            frames.buffer_updated(n)
            view = view[n:]
        self._process()

    def resume_writing(self) -> None:
        if not self.processing:      # else the loop in _process sees the room itself
            self._process()

    def connection_lost(self) -> None:
        if self.client is None:
            return                   # refused: it was never counted in
        self.open = False
        # A reply being awaited can no longer be delivered, but its work (an fsync) may end.
        self.waiting = None
        self.connections.release(self)
        self.server.disconnect(self.client)
        self.client.close = None     # no cycle through the transport: freed when it ends

    # -- called by the limits' sweep -------------------------------------------------------

    def login_changed(self) -> None:
        """The client logged in or out: the frame limit and the login deadline follow."""
        self.authenticated = not self.authenticated
        limits = self.connections
        self.frames.max_frame = (MAX_FRAME_SIZE if self.authenticated
                                 else limits.max_request_before_login)
        self.login_by = self.client.last_seen + limits.login_timeout

    def abort(self, reason: str) -> None:
        log.info("closing connection %s: %s", self.address, reason)
        self.open = False
        self.waiting = None          # a reply still being worked on is not written
        self.transport.abort()

    # -- the driver ------------------------------------------------------------------------

    def _process(self) -> None:
        transport = self.transport
        dispatcher = self.server.dispatcher
        client = self.client
        self.processing = True
        try:
            while self.waiting is None and self.open and not transport.write_buffer_full():
                if (client.user_id is not None) is not self.authenticated:
                    self.login_changed()
                try:
                    frame = self.frames.next_frame()
                except ProtocolViolation as e:
                    log.warning("closing connection %s%s: %s", self.address,
                                "" if self.authenticated else " (not logged in)", e)
                    transport.close()
                    return
                if frame is None:
                    break
                now = time.time_ns() // 1000
                client.last_seen = now
                out = dispatcher.handle(client, frame[0], frame[1], now)
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
