"""The QUIC transport: aioquic over one UDP socket, each request on its own bidirectional stream.

As Iggy's QUIC clients do (PROTOCOL.md §11.1), a client opens a new bidirectional stream per
request, writes one frame (header + body) and finishes the stream; the reply is one frame on the
same stream, then FIN. TLS 1.3 always (QUIC has no plain mode), no ALPN asked for.

Per QUIC connection there is ONE driver (server/connection.py), so a QUIC client is one Iggy
client whatever the number of streams: a stream's bytes are buffered until its FIN, checked to
be exactly one frame (the header's size field equals the stream's length, so the streams and
the replies cannot drift apart) and fed to the driver whole. The ids of the streams fed wait in
a FIFO; the driver answers strictly in request order, so each reply goes on the next id there,
with end_stream. A stream that is not one frame, or larger than the driver accepts now (before
a login: connections.max_request_size_before_login), closes the connection (one line logged).

Flow control and backpressure (what was chosen): aioquic grants the peer more receive window as
data arrives, not as it is consumed, so the bound on what a client can make the server hold is
the number of streams it may open (aioquic's 128 at a time, renewed as streams end) times the
frame limit above. Received requests are fed only while the driver reads: when it pauses
(a reply being awaited, an fsync'd send; or replies not yet acknowledged above HIGH_WATER
bytes), completed requests wait here (by stream id) and are fed when it resumes, so the
driver's receive buffer is never reused under an awaited request. The write side is measured
as the reply bytes aioquic still holds unacknowledged on our streams; once above HIGH_WATER the
driver stops dispatching, and each datagram received (carrying ACKs) checks whether it fell to
LOW_WATER. Windows are large (WINDOW) so one 1 MB batch is not throttled by credit round trips.

Order: requests are fed in stream-id order (0, 4, 8, ...: the order the client opened its
streams, which QUIC keeps), not in the order their FINs happen to arrive, so a client that
pipelines requests on several streams has them served as sent, as on TCP. A stream opened but
never finished therefore holds back the later ones of its connection (only), until the idle
timeout closes it.

Failures: a connection that ends with an error (a failed handshake, a protocol error, a peer
that closed with an error code) is logged as one line with the peer's address; a datagram that
is not QUIC is dropped by aioquic's endpoint without disturbing anyone (an unexpected
exception while handling one is logged as one line, never a traceback per packet).
Keep-alive: every `keep_alive_interval` the server PINGs each connection, so a quiet client's
NAT binding and the idle timer (`max_idle_timeout`) are refreshed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import QuicErrorCode

from iggy_fast._log import FileRegion
from iggy_fast.config import ConfigError, parse_duration_us, parse_size, split_address
from iggy_fast.server.connection import Connection
from iggy_fast.server.transports import Endpoint, tls
from iggy_fast.server.transports.sockets import bind

log = logging.getLogger("iggy_fast.quic")
# aioquic logs a few INFO lines per connection (version, ALPN, close) and a WARNING per
# protocol error to "quic": our own line per failed connection (with the peer) says it once.
logging.getLogger("quic").setLevel(logging.ERROR)

HEADER_SIZE = 256
HIGH_WATER = 4 * 1024 * 1024     # unacknowledged reply bytes above which the driver waits
LOW_WATER = 1024 * 1024
WINDOW = 16 * 1024 * 1024        # initial connection and stream flow-control windows
MIN_DATAGRAM, MAX_DATAGRAM = 1200, 65527     # QUIC's bounds on a UDP payload (RFC 9000 §14)


class QuicClientConnection(QuicConnectionProtocol):
    """One QUIC connection: its streams in, the driver's replies out; the driver's Transport."""

    def __init__(self, quic, server, connections: set, stream_handler=None):
        super().__init__(quic, stream_handler)
        self.server = server
        self.connections = connections          # the endpoint's, for keep-alive pings
        connections.add(self)
        self.driver = None
        self.address = None          # "host:port" of the peer, from its first datagram
        self.incoming: dict[int, list] = {}      # stream id -> chunks until its FIN
        self.incoming_size: dict[int, int] = {}
        self.held: dict[int, bytes] = {}         # stream id -> complete request not fed yet
        self.next_sid = 0            # the stream whose request is fed next (ids 0, 4, 8, ...)
        self.awaiting = deque()      # stream ids fed to the driver, in order, not answered
        self.unacked: list = []      # our reply streams aioquic may still hold data of
        self.reading = True          # the driver reads (not paused)
        self.full = False            # write side above HIGH_WATER
        self.ended = False

    # -- datagrams and QUIC events --------------------------------------------------------

    def datagram_received(self, data, addr) -> None:
        if self.address is None:
            self.address = f"{addr[0]}:{addr[1]}"
        super().datagram_received(data, addr)
        if self.full and self._unacked_bytes() <= LOW_WATER:
            self.full = False
            if self.driver is not None:
                self.driver.resume_writing()

    def quic_event_received(self, event) -> None:
        kind = type(event)
        if kind is events.StreamDataReceived:
            self._stream_data(event)
        elif kind is events.HandshakeCompleted and self.driver is None:
            self._connect()
        elif kind is events.ConnectionTerminated:
            self._terminated(event)
        elif kind is events.StreamReset:
            self._fail(f"the client reset stream {event.stream_id}")

    def _connect(self) -> None:
        """The connection becomes a client (or is refused, over a connection limit)."""
        self.driver = Connection(self.server, self, "QUIC", self.address or "unknown")

    def _stream_data(self, event) -> None:
        sid = event.stream_id
        if self.ended:
            return
        if self.driver is None:
            # 1-RTT data can be decrypted, and so arrive, just before the client's Finished.
            self._connect()
        if not self.driver.open:
            return
        if sid & 3:                  # not a client-initiated bidirectional stream
            self._fail(f"stream {sid} is not a client-initiated bidirectional stream")
            return
        chunks = self.incoming.get(sid)
        if chunks is None:
            chunks = self.incoming[sid] = []
            self.incoming_size[sid] = 0
        if event.data:
            chunks.append(event.data)
            size = self.incoming_size[sid] = self.incoming_size[sid] + len(event.data)
            if size > self.driver.frames.max_frame:
                self._fail(f"stream {sid} carries more than {self.driver.frames.max_frame} "
                           "bytes, the largest request accepted now")
                return
        if not event.end_stream:
            return
        del self.incoming[sid], self.incoming_size[sid]
        frame = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if (len(frame) < HEADER_SIZE
                or int.from_bytes(frame[48:52], "little") != len(frame)):
            self._fail(f"stream {sid} holds {len(frame)} bytes, not one request frame")
            return
        self.held[sid] = frame
        self._feed()

    def _feed(self) -> None:
        """Hand held requests to the driver in stream order, while it reads."""
        held, driver = self.held, self.driver
        while self.reading and self.next_sid in held and not self.ended:
            sid = self.next_sid
            self.next_sid += 4
            self.awaiting.append(sid)
            driver.feed(held.pop(sid))

    def _terminated(self, event) -> None:
        if not self.ended:
            self.ended = True
            self.connections.discard(self)
            if event.error_code != QuicErrorCode.NO_ERROR:
                log.warning("QUIC connection %s failed: %s (error 0x%x)",
                            self.address or "unknown",
                            event.reason_phrase or "no reason given", event.error_code)
        self.incoming.clear()
        self.held.clear()
        if self.driver is not None:
            self.driver.connection_lost()
            self.driver = None

    def _fail(self, reason: str) -> None:
        log.warning("closing QUIC connection %s: %s", self.address or "unknown", reason)
        self._quic.close(error_code=QuicErrorCode.PROTOCOL_VIOLATION, reason_phrase=reason)
        self.transmit()

    def _unacked_bytes(self) -> int:
        """Reply bytes aioquic still holds (unsent or unacknowledged) on our streams.

        aioquic has no public measure of this: it reads the connection's stream table and each
        sender's buffer, which drops a stream's bytes as the peer acknowledges them."""
        streams = self._quic._streams
        total = 0
        live = []
        for sid in self.unacked:
            stream = streams.get(sid)
            if stream is not None and not stream.sender.is_finished:
                live.append(sid)
                total += len(stream.sender._buffer)
        self.unacked = live
        return total

    # -- the driver's Transport -----------------------------------------------------------

    def write(self, pieces) -> None:
        if not self.awaiting:
            # The driver answered more often than it was fed: never happens with one frame per
            # stream, but a reply must not go out on the wrong stream.
            self._fail("a reply without a request stream")
            return
        sid = self.awaiting.popleft()
        send = self._quic.send_stream_data
        # Piece by piece: aioquic copies each into the stream's buffer, so joining them first
        # would copy a poll reply twice. Stored batches are read in (no sendfile into QUIC).
        for piece in pieces:
            send(sid, piece.read() if type(piece) is FileRegion else piece)
        send(sid, b"", end_stream=True)
        self.unacked.append(sid)
        self._transmit_soon()

    def write_buffer_full(self) -> bool:
        if not self.full and self.unacked and self._unacked_bytes() > HIGH_WATER:
            self.full = True
        return self.full

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True
        self._feed()

    def close(self) -> None:
        if not self.ended:
            self._quic.close(error_code=QuicErrorCode.NO_ERROR)
            self._transmit_soon()

    abort = close                    # QUIC closes at once either way: queued data is dropped

    def shrink(self) -> int:
        return 0


class _Endpoint(QuicServer):
    """aioquic's server endpoint for one socket: one line, not a traceback, when a datagram
    makes aioquic fail."""

    def datagram_received(self, data, addr) -> None:
        try:
            super().datagram_received(data, addr)
        except Exception as e:       # noqa: BLE001 - one bad datagram must not stop the others
            log.warning("QUIC datagram from %s:%d dropped: %s: %s", addr[0], addr[1],
                        type(e).__name__, e)


class QuicEndpoint(Endpoint):
    """The QUIC listener: its UDP socket(s) bound and its configured certificate loaded in
    __init__; a self-signed certificate kept in the data directory otherwise."""

    section, name = "quic", "QUIC"

    def __init__(self, cfg: dict):
        super().__init__(cfg)
        quic = cfg["quic"]
        cert_cfg = quic["certificate"]
        mtu = parse_size(quic["initial_mtu"])
        if not MIN_DATAGRAM <= mtu <= MAX_DATAGRAM:
            raise ConfigError(f"quic.initial_mtu {quic['initial_mtu']} is outside "
                              f"{MIN_DATAGRAM}..{MAX_DATAGRAM} bytes")
        self.configuration = QuicConfiguration(
            is_client=False, max_data=WINDOW, max_stream_data=WINDOW, max_datagram_size=mtu,
            idle_timeout=parse_duration_us(quic["max_idle_timeout"]) / 1e6)
        self.keep_alive = parse_duration_us(quic["keep_alive_interval"]) / 1e6
        # Checks the files (or that a self-signed one is allowed), naming what is wrong.
        self.self_signed = tls.configured_context(cert_cfg, "quic.certificate") is None
        if not self.self_signed:
            self._load(cert_cfg["cert_file"], cert_cfg["key_file"] or None)
        self.sockets = bind(self.name, quic["address"], socket.SOCK_DGRAM)
        self.servers: list[_Endpoint] = []
        self.transports: list = []
        self.connections: set[QuicClientConnection] = set()

    def _load(self, cert: str, key: str | None) -> None:
        try:
            self.configuration.load_cert_chain(cert, key)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"quic.certificate: {cert} is not a usable PEM certificate and "
                              f"key for QUIC: {e}") from None

    async def start(self, server) -> None:
        if self.self_signed:
            tls.self_signed_context_or_stop(server.data_dir)     # writes it, or stops
            self._load(*tls.self_signed(server.data_dir))
        loop = asyncio.get_running_loop()

        def connection(quic, stream_handler=None):
            return QuicClientConnection(quic, server, self.connections)

        for sock in self.sockets:
            transport, endpoint = await loop.create_datagram_endpoint(
                lambda: _Endpoint(configuration=self.configuration, create_protocol=connection),
                sock=sock)
            self.transports.append(transport)
            self.servers.append(endpoint)
        if self.keep_alive:
            server.periodic_tasks.append((self.keep_alive, self._ping))
        port = self.sockets[0].getsockname()[1]
        server.listen_ports["quic"] = port
        log.info("QUIC listening on %s:%d (UDP)", split_address(self.cfg["quic"]["address"])[0],
                 port)

    def _ping(self, now: int) -> None:
        """Keep-alive: a PING on every connection (an ACK of it counts as activity)."""
        for conn in self.connections:
            if not conn.ended:
                conn._quic.send_ping(0)
                conn.transmit()

    def close(self) -> None:
        for endpoint in self.servers:
            endpoint.close()
        if not self.servers:
            for sock in self.sockets:
                sock.close()

    async def wait_closed(self) -> None:
        await asyncio.sleep(0)       # the close datagrams were handed to the transports
