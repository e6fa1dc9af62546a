"""Bounded resources per connection ([connections]): what an idle, silent or hostile peer may cost.

Against the real server process: 2000 idle connections cost a few KiB each and give their
memory back when they close; connections that never log in are closed at the login deadline
(pinging or not) while a logged-in client is served; an idle connection is closed at the idle
timeout while one that pings (our client, or the SDK's heartbeat) stays; a frame announcing
64 MiB before any login is refused at its header without the server reserving it, while a
logged-in client still sends a 10 MB batch; connections over the total and per-address limits
are closed at once and logged once, and the others keep working. Deadlines are configured short
(through IGGY_* variables) to keep the module quick; the FrameReader's own part is checked
directly first.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import select
import socket
import time

import pytest

from iggy_fast import _wire
from iggy_fast.client import BlockingClient
from iggy_fast.client.core import ClientCore
from iggy_fast.protocol.errors import ProtocolViolation

KIB, MIB = 1024, 1024 * 1024
IDLE_CONNECTIONS = 2000
IDLE_BOUND = 16 * KIB        # server RSS per idle connection (measured: about 7 KiB; was 259)


def rss(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * KIB
    raise KeyError(field)


def reset_peak_rss(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def ping_frame() -> bytes:
    return b"".join(bytes(p) for p in ClientCore().request(1)[1])


def announcing(size: int) -> bytes:
    """A request header (Ping) whose size field announces `size` bytes."""
    header = bytearray(ping_frame()[:256])
    header[48:52] = size.to_bytes(4, "little")
    return bytes(header)


def connect(srv, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", srv.tcp_port))
    return sock


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """True when the server ends the connection within `timeout` (replies are skipped)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([sock], [], [], left)[0]:
            break
        try:
            if not sock.recv(65536):
                return True
        except ConnectionResetError:
            return True
    return False


def pong(sock: socket.socket) -> bool:
    """Ping over a raw socket; True when the 256-byte reply came back with status 0."""
    sock.sendall(ping_frame())
    reply = b""
    sock.settimeout(10)
    while len(reply) < 256:
        chunk = sock.recv(256 - len(reply))
        if not chunk:
            return False
        reply += chunk
    return int.from_bytes(reply[216:220], "little") == 0


def log_lines(srv, pattern: str) -> list[str]:
    return [line for line in srv.log().splitlines() if re.search(pattern, line)]


@pytest.fixture
def limited(tmp_path, spawn):
    """Start a server with IGGY_* settings; its log must show no traceback at the end."""
    started = []

    def start(name: str, **env: str):
        srv = spawn(tmp_path / name, env=env)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        assert "Traceback" not in srv.log(), srv.log()


# -- the receive buffer ------------------------------------------------------------------------

def test_frame_reader_starts_small_gives_its_buffer_back_and_obeys_a_lowered_limit():
    reader = _wire.FrameReader()
    assert reader.capacity == 0                     # nothing before the first read
    login = _wire.request_header(1, 0, 0, 0, b"\x01" * 16, 1032) + bytes(1032)
    reader.feed(login)
    header, body = reader.next_frame()
    assert body.nbytes == 1032 and reader.capacity == 4 * KIB     # a login fits: no growth
    reader.feed(login[:300])                        # a frame in progress is never dropped
    assert reader.shrink() == 0 and reader.capacity == 4 * KIB
    reader.feed(login[300:])
    assert bytes(reader.next_frame()[1]) == bytes(1032)
    assert reader.shrink() == 4 * KIB and reader.capacity == 0
    assert bytes(body) == bytes(1032)               # views cut earlier stay valid

    reader.max_frame = 2048                         # what the driver sets until a login
    reader.feed(announcing(64 * MIB))
    with pytest.raises(ProtocolViolation, match="67108864 outside 256..2048"):
        reader.next_frame()
    assert reader.capacity == 4 * KIB


# -- idle connections --------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_2000_idle_connections_cost_a_few_kib_each_and_give_it_back(limited):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < IDLE_CONNECTIONS + 200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is too low")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))   # the server inherits it too
    srv = limited("idle", IGGY_CONNECTIONS_MAX_PER_ADDRESS="0")
    pid = srv.proc.pid
    ping = ping_frame()
    warm = [connect(srv) for _ in range(50)]        # first-use allocations out of the baseline
    for sock in warm:
        assert pong(sock)
        sock.close()
    time.sleep(1.5)
    base = rss(pid)

    socks = []
    try:
        for _ in range(IDLE_CONNECTIONS):           # as clients do: connect, then a request
            sock = connect(srv)
            sock.sendall(ping)
            socks.append(sock)
        for sock in socks:
            assert len(sock.recv(256, socket.MSG_WAITALL)) == 256
        time.sleep(2.5)                             # idle for more than a second: shrunk
        held = rss(pid) - base
        per_connection = held / IDLE_CONNECTIONS
        assert per_connection < IDLE_BOUND, f"{per_connection / KIB:.1f} KiB per idle connection"
        assert pong(socks[0]) and pong(socks[-1])   # idle, not dead
    finally:
        for sock in socks:
            sock.close()

    # Closed: the objects are freed at once (no cycles) and the heap is trimmed.
    deadline = time.monotonic() + 10
    while (left := rss(pid) - base) > held / 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left <= held / 2, f"{left / MIB:.1f} MiB of {held / MIB:.1f} MiB kept after closing"
    print(f"\n{IDLE_CONNECTIONS} idle connections: {per_connection / KIB:.1f} KiB each "
          f"({held / MIB:.1f} MiB); {left / MIB:.1f} MiB kept after they closed")


@pytest.mark.timeout(60)
def test_connections_not_logged_in_are_closed_at_the_login_deadline(limited):
    srv = limited("login", IGGY_CONNECTIONS_LOGIN_TIMEOUT="1500ms")
    busy = BlockingClient(srv.address, timeout=10)
    busy.login()
    started = time.monotonic()
    silent = [connect(srv) for _ in range(10)]
    pinging = [connect(srv) for _ in range(10)]     # activity does not replace a login
    closed_at = {}
    while len(closed_at) < 20 and time.monotonic() - started < 15:
        busy.ping()                                 # the logged-in client keeps being served
        for sock in pinging:
            if sock not in closed_at:
                try:
                    sock.sendall(ping_frame())
                except OSError:
                    pass
        for sock in silent + pinging:
            if sock not in closed_at and closed_by_server(sock, 0.01):
                closed_at[sock] = time.monotonic() - started
        time.sleep(0.1)
    assert len(closed_at) == 20, f"{20 - len(closed_at)} connections outlived the deadline"
    assert min(closed_at.values()) >= 1.4, sorted(closed_at.values())
    busy.ping()
    time.sleep(1)                                   # a logged-in client has no deadline
    busy.ping()
    assert len(log_lines(srv, r"not logged in in time \(connections\.login_timeout\)")) == 20
    for sock in silent + pinging:
        sock.close()


@pytest.mark.timeout(60)
def test_an_idle_connection_is_closed_and_one_that_pings_stays(limited):
    from apache_iggy import IggyClient

    srv = limited("idle-timeout", IGGY_CONNECTIONS_IDLE_TIMEOUT="1500ms")
    idle = BlockingClient(srv.address, timeout=10)
    idle.login()
    idle_port = idle.sock.getsockname()[1]
    pinger = BlockingClient(srv.address, timeout=10)
    pinger.login()

    async def sdk_client_idles_with_its_heartbeat():
        # The SDK pings by itself (every 5 s by default; here every 300 ms): it stays.
        sdk = IggyClient.from_connection_string(
            f"iggy://iggy:iggy@{srv.address}?heartbeat_interval=300ms")
        await sdk.connect()
        await sdk.login_user("iggy", "iggy")
        started = time.monotonic()
        while time.monotonic() - started < 4:
            pinger.ping()
            await asyncio.sleep(0.3)
        await sdk.get_streams()

    started = time.monotonic()
    asyncio.run(sdk_client_idles_with_its_heartbeat())
    assert closed_by_server(idle.sock, 1)
    pinger.ping()
    closes = log_lines(srv, r"closing connection .*connections\.idle_timeout")
    # Only the idle one (the SDK would reconnect after a close, so the log is what tells).
    assert len(closes) == 1 and f":{idle_port}:" in closes[0], closes
    assert time.monotonic() - started >= 1.5


# -- request size before login -----------------------------------------------------------------

@pytest.mark.timeout(60)
def test_a_large_frame_before_login_is_refused_without_reserving_it(limited):
    srv = limited("prelogin")
    pid = srv.proc.pid
    time.sleep(1)
    before = rss(pid)
    reset_peak_rss(pid)
    peers = []
    for _ in range(40):
        sock = connect(srv)
        try:
            sock.sendall(announcing(64 * MIB) + bytes(MIB))
        except OSError:
            pass                                    # refused while we were still sending
        peers.append(sock)
    for sock in peers:
        assert closed_by_server(sock, 10)
        sock.close()
    grown = rss(pid, "VmHWM") - before
    # The older server reserved the announced 64 MiB (or grew with the 1 MiB that arrived).
    assert grown < 8 * MIB, f"peak RSS grew {grown / MIB:.1f} MiB"
    refused = log_lines(srv, r"\(not logged in\): frame size 67108864 outside 256\.\.2048")
    assert len(refused) == 40

    # After a login the protocol's limit applies: a 10 MB batch goes through.
    c = BlockingClient(srv.address, timeout=30)
    c.login()
    c.call(202, _wire.Writer().name("s").getvalue())
    c.call(302, _wire.Writer().identifier("s").u32(1).name("t").getvalue())
    messages = [(i + 1, os.urandom(1_000_000), b"", 0) for i in range(10)]
    c.send_batch("s", "t", 0, _wire.build_batch(messages, 1), 10)
    got = c.poll_messages("s", "t", 0, 3, 0, 10)
    assert len(got) == 10
    # A buffer grown for a large batch is given back once the connection is idle.
    messages = [(i + 11, os.urandom(1_000_000), b"", 0) for i in range(5)]
    c.send_batch("s", "t", 0, _wire.build_batch(messages, 1), 5)
    busy = rss(pid)
    deadline = time.monotonic() + 10
    while busy - rss(pid) < 4 * MIB and time.monotonic() < deadline:
        time.sleep(0.2)
    assert busy - rss(pid) >= 4 * MIB, "the 5 MB receive buffer was kept while idle"
    # And after a logout the small limit is back.
    c.call(39)
    c.sock.sendall(announcing(64 * MIB))
    assert closed_by_server(c.sock, 10)
    assert len(log_lines(srv, r"\(not logged in\): frame size 67108864")) == 41
    c.close()


# -- connection counts -------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_connections_over_the_limits_are_closed_at_once_and_logged_once(limited):
    srv = limited("counts", IGGY_CONNECTIONS_MAX_PER_ADDRESS="3",
                  IGGY_CONNECTIONS_MAX_TOTAL="5")
    first = [connect(srv, "127.0.0.1") for _ in range(3)]
    assert all(pong(sock) for sock in first)
    over = [connect(srv, "127.0.0.1") for _ in range(2)]
    for sock in over:
        assert closed_by_server(sock, 5)
    assert all(pong(sock) for sock in first)        # the others are unaffected
    others = [connect(srv, "127.0.0.2") for _ in range(2)]
    assert all(pong(sock) for sock in others)       # another address has its own count
    total = connect(srv, "127.0.0.3")
    assert closed_by_server(total, 5)               # five open in all
    assert all(pong(sock) for sock in first + others)

    per_address = log_lines(srv, r"refused a connection from 127\.0\.0\.1:\d+: 3 connections "
                                 r"open from it \(connections\.max_per_address\)")
    assert len(per_address) == 1, per_address       # once, however many are refused
    assert len(log_lines(srv, r"refused a connection from 127\.0\.0\.3:\d+: 5 connections "
                              r"open \(connections\.max_total\)")) == 1

    first.pop().close()                             # a slot frees: 127.0.0.1 may connect again
    deadline = time.monotonic() + 10
    while True:
        again = connect(srv, "127.0.0.1")
        try:
            if pong(again):
                break
        except OSError:
            pass
        again.close()
        assert time.monotonic() < deadline, "the freed slot was not given back"
        time.sleep(0.1)
    assert log_lines(srv, r"refused 1 further connection\(s\) from 127\.0\.0\.1")
    for sock in [*first, *over, *others, total, again]:
        sock.close()


@pytest.mark.timeout(60)
def test_a_tls_handshake_that_never_comes_is_cut_at_the_login_deadline(limited):
    # The driver's deadline starts once TLS is up; the handshake has the same bound before it.
    srv = limited("tls", IGGY_TCP_TLS_ENABLED="true", IGGY_CONNECTIONS_LOGIN_TIMEOUT="1s")
    started = time.monotonic()
    silent = connect(srv)                           # TCP only: no ClientHello
    assert closed_by_server(silent, 15)
    assert time.monotonic() - started >= 0.9
    served = BlockingClient(srv.address, tls=True, timeout=10)
    served.login()
    served.ping()
    served.close()
    silent.close()


@pytest.mark.timeout(60)
def test_limits_turned_off_with_0_never_and_an_unlimited_size(limited):
    srv = limited("off", IGGY_CONNECTIONS_LOGIN_TIMEOUT="0 s",
                  IGGY_CONNECTIONS_IDLE_TIMEOUT="never",
                  IGGY_CONNECTIONS_MAX_REQUEST_SIZE_BEFORE_LOGIN="unlimited",
                  IGGY_CONNECTIONS_MAX_TOTAL="0")
    silent = connect(srv)
    assert pong(silent)
    assert not closed_by_server(silent, 2)          # no deadline: still open
    # "unlimited" means the protocol's 64 MiB: a 64 KB frame before login is framed and
    # answered (a ping with a body is InvalidCommand, 3), one over 64 MiB is still refused.
    big = bytearray(announcing(256 + 65536))
    silent.sendall(bytes(big) + bytes(65536))
    silent.settimeout(10)
    reply = silent.recv(256, socket.MSG_WAITALL)
    assert len(reply) == 256 and int.from_bytes(reply[216:220], "little") == 3
    silent.sendall(announcing(64 * MIB + 1))
    assert closed_by_server(silent, 10)
    assert log_lines(srv, r"\(not logged in\): frame size 67108865 outside 256\.\.67108864")
    silent.close()
