"""A blocking socket client over ClientProtocol: for tools, tests and the benchmark's actors."""

from __future__ import annotations

import socket

from iggy_fast import _wire
from iggy_fast.client.protocol import ClientProtocol, Reply, poll_body, send_messages_body
from iggy_fast.errors import IggyError, ProtocolViolation


class BlockingClient:
    def __init__(self, address: str = "127.0.0.1:8090", timeout: float | None = 30.0):
        host, _, port = address.rpartition(":")
        self.sock = socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.protocol = ClientProtocol()
        self._header = bytearray(256)

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

    def roundtrip(self, frame: list) -> Reply:
        self.sock.sendmsg(frame)
        header = memoryview(self._header)
        self._recv_into(header)
        size = int.from_bytes(self._header[48:52], "little")
        if size < 256:
            raise ProtocolViolation(f"reply size {size}")
        body = bytearray(size - 256)
        self._recv_into(memoryview(body))
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
