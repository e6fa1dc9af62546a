"""Write backpressure: a client that sends polls and never reads the replies costs the server a
bounded amount of memory, not one reply per request.

The bound (server/connection.py): the transport's write buffer, at most its high-water mark
plus one chunk of a stored batch being copied, plus the receive buffer; the requests beyond
that wait in the kernel's socket buffers and in the client. Measured on the real server
process (VmHWM, the peak resident set, reset just before the flood), over plain TCP with and
without sendfile and over TLS. Meanwhile other clients are served, and the flooding connection
works again, every reply intact, once it reads.
"""

from __future__ import annotations

import os
import select
import ssl
import time

import pytest

from iggy_fast import _wire
from iggy_fast.client import BlockingClient
from iggy_fast.client.core import Reply, poll_body
from iggy_fast.server.transports.tcp import HIGH_WATER, READ_CHUNK

REQUESTS = 2000
RECEIVE_BUFFER = 256 * 1024       # more than FrameReader holds for poll requests (4 KiB)
# What else may move the peak a little: the allocator, the interpreter, the other client.
SLACK = 16 * 1024 * 1024
BOUND = HIGH_WATER + READ_CHUNK + RECEIVE_BUFFER + SLACK

VARIANTS = {
    "sendfile": {},
    "copy": {"IGGY_TCP_SENDFILE": "false"},
    "tls": {"IGGY_TCP_TLS_ENABLED": "true"},
}


def status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def fill(c: BlockingClient) -> bytes:
    """~1 MB of stored batches in s/t partition 0; returns what a poll of it all carries."""
    c.call(202, _wire.Writer().name("s").getvalue())
    c.call(302, _wire.Writer().identifier("s").u32(1).name("t").getvalue())
    for b in range(20):
        msgs = [(b * 100 + i + 1, os.urandom(1000), b"", i) for i in range(50)]
        c.send_batch("s", "t", 0, _wire.build_batch(msgs, 1), 50)
    return bytes(c.poll("s", "t", 0, 3, 0, 1000).body)


def drain(sock, frames: bytes, replies: int, expected: bytes, core, deadline: float):
    """Send what is left of `frames` and read `replies` replies, each checked against
    `expected`, in one non-blocking loop (an SSL socket is not shared between threads)."""
    sent = 0
    got = 0
    while got < replies:
        assert time.monotonic() < deadline, f"{got} of {replies} replies"
        want_write = [sock] if sent < len(frames) else []
        readable, writable, _ = select.select([sock], want_write, [], 1.0)
        if writable:
            try:
                sent += sock.send(frames[sent:sent + 65536])
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                pass
        if readable or (isinstance(sock, ssl.SSLSocket) and sock.pending()):
            try:
                chunk = sock.recv(1 << 20)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                continue
            assert chunk, "the server closed the connection"
            for event in core.receive_data(chunk):
                assert isinstance(event, Reply), event
                assert bytes(event.body) == expected, f"reply {got} differs"
                got += 1
    assert sent == len(frames) and not core.pending


@pytest.mark.timeout(300)
@pytest.mark.parametrize("variant", VARIANTS)
def test_client_that_does_not_read_costs_bounded_memory(tmp_path, spawn, variant):
    tls = variant == "tls"
    srv = spawn(tmp_path / variant, env=VARIANTS[variant])
    pid = srv.proc.pid
    setup = BlockingClient(srv.address, tls=tls)
    setup.login()
    expected = fill(setup)
    assert len(expected) > 1_000_000

    flood = BlockingClient(srv.address, tls=tls)
    flood.login()
    frames = b"".join(b"".join(bytes(p) for p in flood.core.request(
        100, poll_body("s", "t", 0, 3, 0, 1000, False))[1]) for _ in range(REQUESTS))
    sock = flood.sock
    sock.setblocking(False)
    time.sleep(0.5)                     # let the setup's garbage settle before the baseline
    before = status_kib(pid, "VmRSS") * 1024
    reset_peak_rss(pid)

    # Send every request the sockets take, read nothing, until the server has stopped reading.
    sent, idle_since = 0, time.monotonic()
    while sent < len(frames) and time.monotonic() - idle_since < 3:
        try:
            n = sock.send(frames[sent:sent + 65536])
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            time.sleep(0.05)
            continue
        sent += n
        idle_since = time.monotonic()
    time.sleep(2)                        # the server works through what it has read

    # Others are served meanwhile, the stuck connection notwithstanding.
    other = BlockingClient(srv.address, tls=tls, timeout=10)
    other.login()
    other.ping()
    assert bytes(other.poll("s", "t", 0, 3, 0, 1000).body) == expected
    other.close()

    peak = status_kib(pid, "VmHWM") * 1024
    growth = peak - before
    print(f"{variant}: RSS before {before >> 20} MiB, peak growth {growth / 2**20:.1f} MiB "
          f"(bound {BOUND / 2**20:.1f} MiB; {REQUESTS} replies are "
          f"{REQUESTS * len(expected) / 2**20:.0f} MiB), {sent} of {len(frames)} request "
          f"bytes sent while not reading")
    assert growth < BOUND, (growth, BOUND)

    # Once it reads, everything arrives intact and the connection works as before.
    drain(sock, frames[sent:], REQUESTS, expected, flood.core, time.monotonic() + 240)
    sock.setblocking(True)
    sock.settimeout(10)
    flood.ping()
    assert bytes(flood.poll("s", "t", 0, 3, 0, 1000).body) == expected
    flood.close()
    setup.close()
    assert "Traceback" not in srv.log(), srv.log()
    assert srv.stop() == 0
