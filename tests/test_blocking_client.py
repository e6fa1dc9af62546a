"""The blocking driver when the server misbehaves: silence, a close mid-reply, garbage, lateness.

The peer is a scripted socket on a free port (a thread), not our server: these are the
answers a healthy server never gives. It reads whole request frames and answers with the
codec's own reply header, so the client sees real frames where a test wants them.
"""

from __future__ import annotations

import socket
import threading

import pytest

from iggy_fast import _wire
from iggy_fast.client import BlockingClient
from iggy_fast.protocol.errors import ProtocolViolation


def read_request(conn: socket.socket):
    header = conn.recv(256, socket.MSG_WAITALL)
    if len(header) < 256:
        return None
    h = _wire.parse_request_header(header)
    if h.size > 256:
        conn.recv(h.size - 256, socket.MSG_WAITALL)
    return h


class Peer:
    """Accepts one connection and runs `script(conn)` on it in a thread."""

    def __init__(self, script):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self.listener.getsockname()[1]
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(script,), daemon=True)
        self.thread.start()

    def _run(self, script):
        conn, _ = self.listener.accept()
        with conn:
            script(conn)
            self.done.wait(10)

    def close(self):
        self.done.set()
        self.thread.join(10)
        self.listener.close()


@pytest.fixture
def peer():
    made = []

    def start(script):
        made.append(Peer(script))
        return made[-1]

    yield start
    for p in made:
        p.close()


def test_silence_is_a_timeout_naming_the_request(peer):
    p = peer(lambda conn: read_request(conn))
    with BlockingClient(p.address, timeout=0.5) as c, pytest.raises(TimeoutError) as e:
        c.ping()
    assert "ping" in str(e.value) and "0.5" in str(e.value)


def test_a_close_mid_reply_is_a_connection_error_naming_the_request(peer):
    def script(conn):
        h = read_request(conn)
        conn.sendall(_wire.reply_header(h, 2, 100)[:200])       # part of a header, then gone
        conn.close()
    p = peer(script)
    with BlockingClient(p.address, timeout=5) as c, pytest.raises(ConnectionError) as e:
        c.call(201)
    assert "get_streams" in str(e.value)


def test_garbage_is_a_protocol_violation_and_closes_the_socket(peer):
    def script(conn):
        read_request(conn)
        conn.sendall(bytes(256))                                # size 0: cannot be framed
    p = peer(script)
    c = BlockingClient(p.address, timeout=5)
    with pytest.raises(ProtocolViolation):
        c.ping()
    assert c.sock.fileno() == -1


def test_a_late_answer_is_dropped_and_the_next_request_gets_its_own(peer):
    answered = threading.Event()

    def script(conn):
        first = read_request(conn)
        answered.wait(10)                       # the client has given up on the first ping
        body = b"late"
        conn.sendall(_wire.reply_header(first, 2, len(body)) + body)
        second = read_request(conn)
        body = b"on time"
        conn.sendall(_wire.reply_header(second, 2, len(body)) + body)
    p = peer(script)
    with BlockingClient(p.address, timeout=0.5) as c:
        with pytest.raises(TimeoutError):
            c.call(1)
        answered.set()
        c.sock.settimeout(5)
        assert c.call(1).body == b"on time"
        assert not c.core.pending
