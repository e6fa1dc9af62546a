"""A blocking socket client over ClientProtocol: for tools, tests and the benchmark's actors.

Plain TCP or TCP over TLS (`tls=True`, as the server's `[tcp.tls]` listener expects). It
counts the bytes it writes and reads (`bytes_sent`, `bytes_received`, frames included) so the
benchmark can report wire throughput next to payload throughput.
"""

from __future__ import annotations

import socket
import ssl

from iggy_fast import _wire
from iggy_fast.client.protocol import ClientProtocol, Reply, poll_body, send_messages_body
from iggy_fast.protocol.errors import IggyError, ProtocolViolation


def _nbytes(piece) -> int:
    return piece.nbytes if isinstance(piece, memoryview) else len(piece)


class BlockingClient:
    def __init__(self, address: str = "127.0.0.1:8090", timeout: float | None = 30.0,
                 tls: bool = False, tls_ca_file: str | None = None,
                 tls_domain: str = "localhost"):
        """`tls_ca_file` is the CA to validate the server's certificate against; without it
        the certificate is not checked (acceptable for a benchmark on loopback, not more)."""
        host, _, port = address.rpartition(":")
        sock = socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.tls = tls
        if tls:
            if tls_ca_file:
                context = ssl.create_default_context(cafile=tls_ca_file)
            else:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(sock, server_hostname=tls_domain)
        self.sock = sock
        self.protocol = ClientProtocol()
        self._header = bytearray(256)
        self.bytes_sent = 0
        self.bytes_received = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _recv_into(self, view) -> None:
        while view.nbytes:
            n = self.sock.recv_into(view)
            if n == 0:
                raise ConnectionError("server closed the connection")
            view = view[n:]

    def _send(self, frame: list) -> None:
        total = sum(_nbytes(p) for p in frame)
        if self.tls:
            # SSLSocket has no sendmsg; one record per piece costs no copy of the batch.
            for piece in frame:
                self.sock.sendall(piece)
        else:
            sent = self.sock.sendmsg(frame)
            # A socket with a timeout is non-blocking underneath: sendmsg may write part of
            # a large frame, and the rest must follow or the stream is corrupt.
            if sent < total:
                for piece in frame:
                    size = _nbytes(piece)
                    if sent >= size:
                        sent -= size
                        continue
                    self.sock.sendall(memoryview(piece)[sent:])
                    sent = 0
        self.bytes_sent += total

    def roundtrip(self, frame: list) -> Reply:
        self._send(frame)
        header = memoryview(self._header)
        self._recv_into(header)
        size = int.from_bytes(self._header[48:52], "little")
        if size < 256:
            raise ProtocolViolation(f"reply size {size}")
        body = bytearray(size - 256)
        self._recv_into(memoryview(body))
        self.bytes_received += size
        return self.protocol.parse_reply(bytes(self._header), body)

    def call(self, code: int, body=b"", extra=()) -> Reply:
        return self.roundtrip(self.protocol.request_frame(code, body, extra))

    def login(self, username: str = "iggy", password: str = "iggy") -> int:
        reply = self.roundtrip(self.protocol.login_frame(username, password))
        return int.from_bytes(reply.body[:4], "little")

    def ping(self) -> None:
        self.call(1)

    def send_batch(self, stream, topic, partition_id: int, batch, count: int) -> int:
        """Send one encoded batch; returns its base offset."""
        body = send_messages_body(stream, topic, partition_id, count)
        reply = self.call(101, body, (batch,))
        if len(reply.body) < 24:
            raise IggyError.from_code(4, "short send confirmation")
        return int.from_bytes(reply.body[16:24], "little")

    def poll(self, stream, topic, partition_id, strategy: int, value: int, count: int,
             auto_commit: bool = False, consumer_id=1, consumer_kind: int = 1) -> Reply:
        return self.call(100, poll_body(stream, topic, partition_id, strategy, value, count,
                                        auto_commit, consumer_id, consumer_kind))

    def poll_messages(self, *args, **kwargs) -> list:
        """Poll and decode: [(offset, timestamp, origin_timestamp, id, payload, headers, checksum)]."""
        reply = self.poll(*args, **kwargs)
        return _wire.iter_messages(memoryview(reply.body)[16:])
