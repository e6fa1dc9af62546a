"""The client's QUIC transport: a FramedLink over aioquic, one bidirectional stream per request.

As the official clients do (PROTOCOL.md §11.1), each request frame goes on a new bidirectional
stream, finished at once, and its reply is the whole of that stream's data up to the server's
FIN. Several requests may be in flight (the FramedLink pipelines them) and their streams may
complete in any order, but the ClientCore matches replies to requests strictly in order: so
each stream's reply is buffered until it is complete and replies are handed to `_received()`
in the order their requests were sent.

TLS: QUIC always encrypts. The server's certificate is not verified unless `tls_ca_file` names
the CA (or certificate) to verify it against, as the official SDK's `validate_certificate`
defaults to off; `server_name` (SNI, and the name verified) defaults to localhost. No ALPN.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from iggy_fast.client.transports import FramedLink

WINDOW = 16 * 1024 * 1024        # flow-control windows: a 1 MB batch never waits for credit


class _Protocol(QuicConnectionProtocol):
    """aioquic's connection protocol, telling the link about stream data and the end."""

    def __init__(self, quic, link: QuicLink):
        super().__init__(quic)
        self.link = link

    def quic_event_received(self, event) -> None:
        kind = type(event)
        if kind is events.StreamDataReceived:
            self.link._stream_data(event.stream_id, event.data, event.end_stream)
        elif kind is events.ConnectionTerminated:
            self.link._terminated(event)
        elif kind is events.StreamReset:
            self.link._lost(ConnectionError(
                f"the server reset stream {event.stream_id} (error {event.error_code})"))


class QuicLink(FramedLink):
    """One QUIC connection to a server (see the module docstring)."""

    def __init__(self, address: str, timeout: float = 30.0, server_name: str = "localhost",
                 tls_ca_file: str | None = None, max_datagram_size: int = 1200):
        super().__init__(address, timeout)
        self.server_name = server_name
        self.max_datagram_size = max_datagram_size      # what we send; 1200 passes any path
        self.tls_ca_file = tls_ca_file
        self.protocol: _Protocol | None = None
        self.transport = None
        self.order: deque[int] = deque()        # stream ids of requests sent, not answered
        self.chunks: dict[int, list] = {}        # stream id -> its reply so far
        self.done: dict[int, bytes] = {}         # complete replies waiting for earlier ones

    async def _open(self) -> None:
        host, _, port = self.address.rpartition(":")
        host = host.strip("[]")
        loop = asyncio.get_running_loop()
        family, _, _, _, addr = (await loop.getaddrinfo(host, int(port),
                                                         type=socket.SOCK_DGRAM))[0]
        configuration = QuicConfiguration(
            is_client=True, server_name=self.server_name, max_data=WINDOW,
            max_stream_data=WINDOW, max_datagram_size=self.max_datagram_size,
            idle_timeout=max(self.timeout, 10.0))
        if self.tls_ca_file:
            configuration.load_verify_locations(self.tls_ca_file)
        else:
            configuration.verify_mode = ssl.CERT_NONE
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind(("::", 0, 0, 0) if family == socket.AF_INET6 else ("0.0.0.0", 0))
            self.transport, self.protocol = await loop.create_datagram_endpoint(
                lambda: _Protocol(QuicConnection(configuration=configuration), self),
                sock=sock)
        except BaseException:
            sock.close()
            raise
        self.protocol.connect(addr)
        try:
            await self.protocol.wait_connected()
        except ConnectionError:
            self.transport.close()
            raise ConnectionError(f"QUIC handshake with {self.address} failed: "
                                  f"{self.error or 'connection closed'}") from None

    def _write(self, pieces: list) -> None:
        quic = self.protocol._quic
        sid = quic.get_next_available_stream_id()
        self.order.append(sid)
        for piece in pieces:         # aioquic copies each into the stream's buffer: no join
            quic.send_stream_data(sid, piece)
        quic.send_stream_data(sid, b"", end_stream=True)
        self.protocol.transmit()

    def _stream_data(self, sid: int, data: bytes, end: bool) -> None:
        chunks = self.chunks.get(sid)
        if chunks is None:
            chunks = self.chunks[sid] = []
        if data:
            chunks.append(data)
        if not end:
            return
        del self.chunks[sid]
        self.done[sid] = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        order, done = self.order, self.done
        while order and order[0] in done:
            self._received(done.pop(order.popleft()))

    def _terminated(self, event) -> None:
        reason = event.reason_phrase or f"error 0x{event.error_code:x}"
        self.error = self.error or ConnectionError(f"QUIC connection closed: {reason}")
        self._lost(self.error)

    def _close(self) -> None:
        if self.protocol is not None:
            self.protocol.close()
            # The CONNECTION_CLOSE datagram is sent by close(); the socket goes after it.
            asyncio.get_running_loop().call_soon(self.transport.close)
            self.protocol = None
        self.order.clear()
        self.chunks.clear()
        self.done.clear()
