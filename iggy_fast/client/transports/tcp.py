"""TcpLink: the async client's TCP and TLS-over-TCP transport (PROTOCOL.md §1).

An asyncio BufferedProtocol reads straight into the memory ClientCore hands out: the 256-byte
header into the core's header buffer, then the body into a buffer of exactly its size, which
becomes the answer (a poll reply is never copied). Writes go out as the core's pieces: small
ones joined, a large one (a batch) written as it is, never copied. TLS is asyncio's (it hands
BufferedProtocols decrypted bytes the same way); `tls_ca_file` is the CA to verify the server
against, and without it the certificate is not verified (fine on loopback, not beyond).
"""

from __future__ import annotations

import asyncio
import socket
import ssl

from iggy_fast.client.transports import FramedLink

_JOIN_BELOW = 16 * 1024     # pieces smaller than this are joined with their neighbours


class _Protocol(asyncio.BufferedProtocol):
    __slots__ = ("link",)

    def __init__(self, link: "TcpLink"):
        self.link = link

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.link._get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.link._buffer_updated(nbytes)

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

    @classmethod
    def from_config(cls, address: str, config) -> "TcpLink":
        return cls(address, config.timeout, tls=config.tls, tls_ca_file=config.tls_ca_file,
                   tls_domain=config.tls_domain, nodelay=config.nodelay)

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        kwargs = {}
        if self.tls:
            kwargs = {"ssl": tls_context(self.tls_ca_file),
                      "server_hostname": self.tls_domain or self.host}
        self.transport, _ = await loop.create_connection(
            lambda: _Protocol(self), self.host, self.port, **kwargs)
        sock = self.transport.get_extra_info("socket")
        if self.nodelay and sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _write(self, pieces: list) -> None:
        # Small pieces are joined (one write, one syscall); a large one goes out as it is,
        # so a batch is never copied on its way to the socket.
        transport = self.transport
        run: list = []
        for piece in pieces:
            if (piece.nbytes if isinstance(piece, memoryview) else len(piece)) < _JOIN_BELOW:
                run.append(piece)
                continue
            if run:
                transport.write(b"".join(run))
                run = []
            transport.write(piece)
        if run:
            transport.write(b"".join(run))

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()
