"""Hostile and broken clients: each gets the right error or loses only its own connection,
and the server keeps serving everyone else with nothing acknowledged lost."""

from __future__ import annotations

import socket
import time

import pytest

from iggy_fast import _wire
from iggy_fast.client import BlockingClient
from iggy_fast.client.core import send_messages_body
from iggy_fast.protocol.errors import IggyError

CLIENT_ID = b"\x07" * 16


def raw_request(op, code=0, body=b"", session=0, request=1, checksum=None, client=CLIENT_ID):
    if checksum is None:
        checksum = _wire.xxh3_64(body) if op == 3 or 128 <= op <= 149 else 0
    return _wire.request_header(op, code, session, request, client, len(body), checksum) + body


def read_reply(sock):
    header = b""
    while len(header) < 256:
        chunk = sock.recv(256 - len(header))
        if not chunk:
            return None
        header += chunk
    size, command, operation, status, reason = _wire.parse_reply_header(header)
    body = b""
    while len(body) < size - 256:
        body += sock.recv(size - 256 - len(body))
    return command, operation, status, reason, body


@pytest.fixture
def healthy(server):
    """A logged-in client with a stream/topic holding acknowledged messages."""
    c = BlockingClient(server.address)
    c.login()
    name = f"bad-{time.monotonic_ns()}"
    c.call(202, _wire.Writer().name(name).getvalue())
    c.call(302, _wire.Writer().identifier(name).u32(1).name("t").getvalue())
    batch = _wire.build_batch([(i + 1, b"keep-%d" % i, b"", i) for i in range(10)], 1)
    assert c.send_batch(name, "t", 0, batch, 10) == 0
    yield c, name
    msgs = c.poll_messages(name, "t", 0, 3, 0, 100)
    assert [m[4] for m in msgs] == [b"keep-%d" % i for i in range(10)]
    c.close()


def connect(server):
    return socket.create_connection(("127.0.0.1", server.tcp_port), timeout=10)


def test_frame_size_too_small_closes_only_that_connection(server, healthy):
    with connect(server) as s:
        header = bytearray(256)
        header[48:52] = (100).to_bytes(4, "little")
        s.sendall(header)
        assert s.recv(1) == b""
    healthy[0].ping()


def test_frame_size_too_large_closes_only_that_connection(server, healthy):
    with connect(server) as s:
        header = bytearray(raw_request(2, 1))
        header[48:52] = (64 * 1024 * 1024 + 1).to_bytes(4, "little")
        s.sendall(header)
        assert s.recv(1) == b""
    healthy[0].ping()


def vm_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_announcing_huge_frames_costs_only_what_arrives(server, healthy):
    # Unauthenticated peers announce the largest frame allowed (64 MiB) and send 1000 bytes:
    # the server must not set 64 MiB aside for each of them, and serves everyone else.
    before = vm_rss(server.proc.pid)
    socks = []
    try:
        for _ in range(8):
            s = connect(server)
            frame = bytearray(raw_request(2, 1))
            frame[48:52] = (64 * 1024 * 1024).to_bytes(4, "little")
            s.sendall(bytes(frame) + b"x" * 1000)
            socks.append(s)
        healthy[0].ping()
        for s in socks:              # the next read is where a buffer for the frame is sought
            s.sendall(b"y" * 1000)
        for _ in range(5):           # the server has read them by the time it answers these
            healthy[0].ping()
            time.sleep(0.05)
        grown = vm_rss(server.proc.pid) - before
        assert grown < 32 * 1024 * 1024, f"RSS grew by {grown >> 20} MiB"
        msgs = healthy[0].poll_messages(healthy[1], "t", 0, 3, 0, 100)
        assert len(msgs) == 10
    finally:
        for s in socks:
            s.close()


def test_client_disconnecting_mid_frame(server, healthy):
    with connect(server) as s:
        frame = raw_request(2, 1, body=b"x" * 1000)
        s.sendall(frame[:600])
    with connect(server) as s:
        s.sendall(raw_request(2, 1)[:100])
    healthy[0].ping()


def test_body_shorter_than_announced_waits_then_serves_others(server, healthy):
    with connect(server) as s:
        frame = bytearray(raw_request(2, 1, body=b"x" * 100))
        s.sendall(frame[:-50])
        s.settimeout(0.3)
        with pytest.raises(socket.timeout):
            s.recv(1)
        healthy[0].ping()
        s.sendall(frame[-50:])
        s.settimeout(10)
        assert read_reply(s)[2] == 3       # answered once whole (a ping's body must be empty)


def test_unknown_command_and_unbuilt_command(server, healthy):
    c = healthy[0]
    with pytest.raises(IggyError) as e:
        c.call(9999)
    assert e.value.code == 3
    with pytest.raises(IggyError) as e:
        c.call(11, b"\x01\x01\x64")     # snapshot: known to Iggy, not built here
    assert e.value.code == 5


def test_request_before_login(server, healthy):
    with connect(server) as s:
        s.sendall(raw_request(2, 1))                       # ping works
        assert read_reply(s)[2] == 0
        s.sendall(raw_request(2, 201))                     # a read: status 40
        assert read_reply(s)[2] == 40
        body = _wire.Writer().name("nope").getvalue()
        s.sendall(raw_request(128, body=body, session=0))  # a write: eviction, reason 1
        command, _, _, reason, _ = read_reply(s)
        assert (command, reason) == (13, 1)


def test_wrong_request_checksum(server, healthy):
    c = healthy[0]
    body = _wire.Writer().name("checksum-test").getvalue()
    pending, _ = c.core.request(202, body)            # numbered as the core numbers it
    frame = raw_request(128, body=body, session=c.core.session,
                        request=pending.request, checksum=12345,
                        client=c.core.client_id)
    with pytest.raises(IggyError) as e:
        c.wait(c.send_frame(pending, [frame]))
    assert e.value.code == 4


def test_forged_session_is_refused(server, healthy):
    c = healthy[0]
    c.core.session += 1000
    with pytest.raises(IggyError) as e:
        c.call(201)
    assert e.value.code == 40
    c.core.session -= 1000
    c.ping()


def send_raw_batch(c, stream, batch, count):
    body = send_messages_body(stream, "t", 0, count)
    return c.call(101, body, (bytes(batch),))


def test_bad_batches_get_their_codes_and_change_nothing(server, healthy):
    c, stream = healthy
    good = _wire.build_batch([(1, b"payload", b"", 0), (2, b"payload", b"", 1)], 1)
    cases = []
    bad = bytearray(good)
    bad[256 + 48] ^= 0xFF
    cases.append((bad, 2, 4027))
    bad = bytearray(good)
    bad[40] ^= 1
    cases.append((bad, 2, 4039))
    cases.append((good, 3, 4009))
    cases.append((good[:-3], 2, 3))
    bad = bytearray(good)
    bad[32:40] = (len(good) + 5).to_bytes(8, "little")
    cases.append((bad + b"\0" * 5, 2, 3))
    for batch, count, code in cases:
        with pytest.raises(IggyError) as e:
            send_raw_batch(c, stream, batch, count)
        assert e.value.code == code


def test_names_and_ids_out_of_range(server, healthy):
    c, stream = healthy
    with pytest.raises(IggyError) as e:
        c.call(202, b"\x00")                           # empty name
    assert e.value.code == 3
    with pytest.raises(IggyError) as e:
        c.call(202, b"\x05ab")                         # name shorter than announced
    assert e.value.code == 3
    with pytest.raises(IggyError) as e:
        c.call(203, _wire.Writer().identifier(123456).getvalue())
    assert e.value.code == 1009
    with pytest.raises(IggyError) as e:
        c.call(302, _wire.Writer().identifier(stream).u32(1001).name("x").getvalue())
    assert e.value.code == 2015
    with pytest.raises(IggyError) as e:
        c.call(303, _wire.Writer().identifier(stream).identifier(99).getvalue())
    assert e.value.code == 2010
    with pytest.raises(IggyError) as e:
        c.poll(stream, "t", 7, 3, 0, 10)
    assert e.value.code == 3007
    with pytest.raises(IggyError) as e:
        c.call(202, b"\x01\xff")                       # not UTF-8
    assert e.value.code == 3


def test_legacy_login_codes_are_evicted(server):
    with connect(server) as s:
        s.sendall(raw_request(2, 38, body=b"\x04iggy\x04iggy"))
        command, _, _, reason, _ = read_reply(s)
        assert (command, reason) == (13, 15)


def test_bad_login_shapes(server):
    with connect(server) as s:
        s.sendall(raw_request(1, body=b"\x00\x2c\x00\x00\x08rust-sdk", request=0))
        assert read_reply(s)[0::3] == (13, 15)
        old = (1 << 20).to_bytes(4, "little") + b"\x04test\x04test\x04iggy\x04iggy" + bytes(4)
        s.sendall(raw_request(1, body=old, request=0))
        command, _, _, reason, _ = read_reply(s)
        assert (command, reason) == (13, 14)


def test_bytes_after_a_fixed_layout_are_refused(server, healthy):
    # Every request body must be exactly its layout (PROTOCOL.md §5): a valid body answers,
    # the same body with a byte after it is InvalidCommand (3) and changes nothing.
    c, stream = healthy
    w = _wire.Writer
    st = w().identifier(stream).getvalue()
    stt = w().identifier(stream).identifier("t").getvalue()
    c.call(602, stt + w().name("g").getvalue())
    bodies = {
        1: b"", 10: b"", 12: b"", 20: b"", 22: b"", 32: b"", 41: b"", 201: b"",
        13: b"\x01", 21: (1).to_bytes(4, "little"), 31: w().identifier(0).getvalue(),
        200: st, 300: stt, 301: st, 601: stt, 600: stt + w().identifier("g").getvalue(),
        606: stt + w().identifier("g").getvalue(),
        120: b"\x01" + w().identifier(1).getvalue() + stt + b"\x01" + bytes(4),
        100: b"\x01" + w().identifier(1).getvalue() + stt + b"\x01" + bytes(4)
             + b"\x03" + bytes(8) + (10).to_bytes(4, "little") + b"\x00",
        203: w().identifier(stream).getvalue(), 205: st, 303: stt, 305: stt,
        402: stt + (1).to_bytes(4, "little"), 403: stt + (1).to_bytes(4, "little"),
    }
    for code, body in bodies.items():
        with pytest.raises(IggyError) as e:
            c.call(code, body + b"\x00")
        assert e.value.code == 3, code
    for code, body in bodies.items():
        if code not in (203, 205, 303, 305, 402, 403):     # (the fixture checks nothing changed)
            c.call(code, body)
    assert c.call(200, st).body                              # the stream is still there
    missing = w().identifier("no-such-stream").identifier("t").getvalue()
    assert c.call(300, missing).body == b""                  # not found: empty, whole body read
    with pytest.raises(IggyError) as e:
        c.call(300, missing + b"\x00")
    assert e.value.code == 3


def test_empty_names_are_invalid_commands(server, healthy):
    # Iggy's WireName is 1..255 bytes: an empty one fails to decode, InvalidCommand (3).
    c, stream = healthy
    for code, body in ((202, b"\x00"),
                       (204, _wire.Writer().identifier(stream).getvalue() + b"\x00"),
                       (302, _wire.Writer().identifier(stream).u32(1).getvalue() + b"\x00"),
                       (200, b"\x02\x00")):                  # an empty name as identifier
        with pytest.raises(IggyError) as e:
            c.call(code, body)
        assert e.value.code == 3, code


def test_a_malformed_user_header_block_is_stored_as_sent(server, healthy):
    # Real Iggy checks a batch's layout and checksums on send, not the TLV inside a message's
    # user-header block (clients decode it when they read it). So does iggy-fast: the bytes
    # are kept and served verbatim.
    c, stream = healthy
    c.call(302, _wire.Writer().identifier(stream).u32(1).name("odd").getvalue())
    batch = _wire.build_batch([(77, b"odd headers", b"\x02\x01", 0)], 1)
    base = c.send_batch(stream, "odd", 0, batch, 1)
    msg = c.poll_messages(stream, "odd", 0, 1, base, 1)[0]
    assert msg[4] == b"odd headers" and msg[5] == b"\x02\x01"
