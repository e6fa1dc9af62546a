"""Golden bytes: the requests our SDK sends equal the captures of the official SDK in
PROTOCOL.md (§3, §5, §7), byte for byte, and their headers follow §1.2.

Encoders are checked directly, and the frames IggyClient puts on the wire are recorded by a
listener that answers every request with an empty success, so the bytes checked are the ones
that really leave the client."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from iggy_fast import Consumer, IggyClient, Partitioning, PollingStrategy, SendMessage, _wire
from iggy_fast.client.types import encode_headers
from iggy_fast.protocol import client_codec as codec
from iggy_fast.protocol.codes import HEADER_SIZE, PROTOCOL_VERSION
from iggy_fast.protocol.models import (GlobalPermissions, Permissions, StreamPermissions,
                                       TopicPermissions)

pytestmark = pytest.mark.timeout(60)


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("|", ""))


# The §3.1 example: global read_streams, stream 0 read_stream, topic 1 poll_messages.
EXAMPLE_PERMISSIONS = Permissions(
    GlobalPermissions(read_streams=True),
    {0: StreamPermissions(read_stream=True, topics={1: TopicPermissions(poll_messages=True)})})


def test_permissions_block():
    block = EXAMPLE_PERMISSIONS.encode()
    assert block == h("00000000000100000000 01 00000000 000100000000 01 01000000 00000100 00 00")
    assert Permissions.decode(block) == EXAMPLE_PERMISSIONS


def test_login_body():
    assert codec.login_body("iggy", "iggy", "rust-sdk", "0.11.0") == h(
        "002c0000 08 727573742d73646b 06 302e31312e30 04 69676779 04 69676779 00000000")


def test_create_user_body():
    block = EXAMPLE_PERMISSIONS.encode()
    assert codec.create_user("bob", "secret123", 1, EXAMPLE_PERMISSIONS) == h(
        "03 626f62 09 736563726574313233 01 01 20000000") + block


def test_store_offset_body():
    assert codec.store_consumer_offset(2, "grp", "cs", "ct", 0, 2) == h(
        "02 02 03 677270 | 02 02 6373 | 02 02 6374 | 01 00000000 | 0200000000000000 | 01")


def test_send_messages_metadata():
    assert codec.send_messages("s1", "t1", 2, (0).to_bytes(4, "little"), 2) == h(
        "12000000 | 02 02 7331 | 02 02 7431 | 02 04 00000000 | 02000000")


def test_poll_body_is_34_bytes():
    body = codec.poll_messages(1, 1, "s1", "t1", 0, 5, 0, 10, True)
    assert len(body) == 34
    assert body == h("01 01 04 01000000 | 02 02 7331 | 02 02 7431 | 01 00000000 | 05 "
                     "0000000000000000 | 0a000000 | 01")


def test_user_headers():
    assert encode_headers({"k": "v", "n": 7, "b": True}) == h(
        "02 01000000 62  03 01000000 01 | 02 01000000 6b  02 01000000 76 | "
        "02 01000000 6e  0c 08000000 0700000000000000")


def test_create_topic_body():
    options = codec.topic_options(compression_algorithm="gzip", message_expiry=10_000_000,
                                  max_topic_size=10_000_000, durability="replicated",
                                  consumer_offset_durability="replicated")
    body = codec.create_topic("s1", "t1", 3, options)

    def entry(key: str, kind: int, value: bytes) -> bytes:
        return (bytes([2]) + len(key).to_bytes(4, "little") + key.encode() + bytes([kind])
                + len(value).to_bytes(4, "little") + value)
    assert body == h("02 02 7331 | 03000000 | 02 7431") + b"".join([
        entry("compression_algorithm", 2, b"gzip"),
        entry("consumer_offset_durability", 2, b"replicated"),
        entry("durability", 2, b"replicated"),
        entry("max_topic_size", 12, (10_000_000).to_bytes(8, "little")),
        entry("message_expiry", 12, (10_000_000).to_bytes(8, "little"))])


def test_digit_strings_are_numeric_ids():
    assert codec.stream_ref("123") == codec.stream_ref(123) == h("01 04 7b000000")
    assert codec.stream_ref("s1") == h("02 02 7331")


# -- the frames on the wire ---------------------------------------------------------------

class Recorder:
    """Answers every request with an empty success (a session for a login) and records it."""

    def __init__(self):
        self.frames: list[tuple[bytes, bytes]] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        conn, _ = self.sock.accept()
        with conn:
            while True:
                header = self._recv(conn, HEADER_SIZE)
                if header is None:
                    return
                body = self._recv(conn, int.from_bytes(header[48:52], "little") - HEADER_SIZE)
                self.frames.append((header, body))
                req = _wire.parse_request_header(header)
                payload = b""
                if req.operation == 1:          # login: result section, then the session
                    payload = (bytes(4) + (0).to_bytes(4, "little") + (7).to_bytes(8, "little")
                               + PROTOCOL_VERSION.to_bytes(4, "little") + b"\x060.11.0")
                elif 128 <= req.operation <= 149 or req.operation in (161, 162):
                    payload = bytes(4)          # an empty result section
                elif req.code == 100:
                    payload = bytes(16)
                conn.sendall(_wire.reply_header(req, req.operation, len(payload)) + payload)

    @staticmethod
    def _recv(conn, n):
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data


async def test_headers_on_the_wire():
    rec = Recorder()
    async with IggyClient(f"iggy://iggy:iggy@{rec.address}", heartbeat_interval=None) as c:
        await c.get_streams()
        await c.delete_stream("s1")
        await c.store_consumer_offset("s1", "t1", 2, partition_id=0,
                                      consumer=Consumer.group("grp"))
        await c.send_messages("s1", "t1", Partitioning.partition_id(0),
                              [SendMessage(b"hello", id=5)])
        await c.poll_messages("s1", "t1", partition_id=0, count=10, auto_commit=True,
                              polling_strategy=PollingStrategy.Next())
    await asyncio.sleep(0)
    login, get_streams, delete, store, send, poll = rec.frames[:6]
    fields = [_wire.parse_request_header(f[0]) for f in rec.frames[:6]]
    for (header, body), f in zip(rec.frames, fields):
        assert header[60] == 5 and f.size == HEADER_SIZE + len(body)
        assert header[128:144] != bytes(16)                    # a client id
        assert header[0:48] == bytes(48)
    lg, gs, dl, st, sd, pl = fields
    # Login: Register, session 0, request 0, checksummed body (§5.2.1).
    assert (lg.operation, lg.session, lg.request) == (1, 0, 0)
    assert login[1] == codec.login_body("iggy", "iggy")
    assert int.from_bytes(login[0][144:160], "little") == _wire.xxh3_64(login[1])
    # A read: operation 2, the code at 196..200, no checksum.
    assert gs.operation == 2 and int.from_bytes(get_streams[0][196:200], "little") == 201
    assert get_streams[0][144:160] == bytes(16) and get_streams[1] == b""
    # A metadata write: its operation names it, checksummed, session and request numbered.
    assert dl.operation == 130 and dl.session == 7 and dl.request == 1
    assert delete[0][196:200] == bytes(4)
    assert int.from_bytes(delete[0][144:160], "little") == _wire.xxh3_64(delete[1])
    assert delete[1] == h("02 02 7331")
    # Partition ops: numbered, not checksummed.
    assert (st.operation, st.request) == (161, 2) and store[0][144:160] == bytes(16)
    assert store[1] == codec.store_consumer_offset(2, "grp", "s1", "t1", 0, 2)
    assert (sd.operation, sd.request) == (160, 3)
    meta = h("12000000 | 02 02 7331 | 02 02 7431 | 02 04 00000000 | 01000000")
    assert send[1][:len(meta)] == meta
    batch = send[1][len(meta):]
    assert _wire.validate_batch(batch, 1) == 0
    (message,) = _wire.iter_messages(batch)
    assert message[3] == 5 and message[4] == b"hello"
    assert pl.operation == 2 and poll[1] == codec.poll_messages(1, 1, "s1", "t1", 0, 5, 0,
                                                                 10, True)
