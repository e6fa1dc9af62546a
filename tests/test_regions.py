"""A poll reply in flight keeps the segment files it reads from open, whatever happens to them.

A slow reader's poll reply waits in the server as file regions (not bytes) while its write
buffer is full. Meanwhile the topic is purged, deleted, or retention deletes the segments, and
new data is written (new files, which get the lowest free fd numbers: the ones a region would
read if it held a bare fd). The reply must still arrive intact, every batch verifying and
holding the old messages, never bytes of another file; the server keeps serving; and once the
reply is read the deleted files' descriptors are closed.
"""

from __future__ import annotations

import os
import socket
import time

import pytest

from iggy_fast import _wire
from iggy_fast._log import verify_batches
from iggy_fast.client import BlockingClient
from iggy_fast.client.core import poll_body

BATCHES = 16                          # of ~1 MB each: far more than the socket buffers hold
PER_BATCH = 1000
OLD, NEW = b"old:", b"new:"


def create(c, topic="t"):
    c.call(302, _wire.Writer().identifier("s").u32(1).name(topic).getvalue())


def fill(c, marker: bytes, batches: int = BATCHES, topic="t") -> None:
    for b in range(batches):
        msgs = [(b * PER_BATCH + i + 1, marker + os.urandom(996), b"", i)
                for i in range(PER_BATCH)]
        c.send_batch("s", topic, 0, _wire.build_batch(msgs, 1), PER_BATCH)


def topic_ident(name="t"):
    return _wire.Writer().identifier("s").identifier(name).getvalue()


def deleted_logs_open(pid: int) -> list[str]:
    """The server's descriptors of segment logs whose file was removed."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.endswith(".log (deleted)"):
            found.append(target)
    return found


def recv_exactly(sock, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    while view.nbytes:
        got = sock.recv_into(view)
        assert got, "the server closed the connection"
        view = view[got:]
    return buf


def purge(c, srv):
    c.call(305, topic_ident())
    fill(c, NEW, 4)


def delete(c, srv):
    c.call(303, topic_ident())
    create(c)
    fill(c, NEW, 4)


def retention(c, srv):
    # Every batch filled its own segment; all but the active one expire and are deleted.
    deadline = time.monotonic() + 30
    partition = os.path.join(srv.data_dir, "streams", "0", "topics", "0", "partitions", "0")
    while len([n for n in os.listdir(partition) if n.endswith(".log")]) > 1:
        assert time.monotonic() < deadline, os.listdir(partition)
        time.sleep(0.1)
    fill(c, NEW, 4)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("action", [purge, delete, retention], ids=lambda f: f.__name__)
@pytest.mark.parametrize("sendfile", [True, False], ids=["sendfile", "copy"])
def test_reply_in_flight_outlives_its_segments(tmp_path, spawn, action, sendfile):
    srv = spawn(tmp_path / "srv", env={
        "IGGY_SYSTEM_SEGMENT_SIZE": "1 MiB", "IGGY_TCP_SENDFILE": str(sendfile).lower(),
        "IGGY_SYSTEM_TOPIC_MESSAGE_EXPIRY": "3 s" if action is retention else "never",
        "IGGY_DATA_MAINTENANCE_MESSAGES_INTERVAL": "200 ms"})
    admin = BlockingClient(srv.address)
    admin.login()
    admin.call(202, _wire.Writer().name("s").getvalue())
    create(admin)
    fill(admin, OLD)

    slow = BlockingClient(srv.address)
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    slow.login()
    slow.sock.sendall(b"".join(bytes(p) for p in slow.core.request(
        100, poll_body("s", "t", 0, 3, 0, BATCHES * PER_BATCH, False))[1]))
    time.sleep(0.5)                      # the reply fills the socket; the rest waits unread

    action(admin, srv)
    held = deleted_logs_open(srv.proc.pid)
    assert held, "no deleted segment is held open: the reply was not in flight"
    admin.ping()                         # the server keeps serving meanwhile
    stored = admin.poll_messages("s", "t", 0, 3, 0, 100_000)
    assert stored and stored[-1][4].startswith(NEW)

    header = recv_exactly(slow.sock, 256)
    size = int.from_bytes(header[48:52], "little")
    [reply] = slow.core.receive_data(header + recv_exactly(slow.sock, size - 256))
    batches = memoryview(reply.body)[16:]
    count = int.from_bytes(reply.body[12:16], "little")
    assert verify_batches(batches) == (len(batches), BATCHES)
    messages = _wire.iter_messages(batches)
    assert len(messages) == count == BATCHES * PER_BATCH
    assert [m[0] for m in messages] == list(range(count))
    assert all(m[4].startswith(OLD) for m in messages)

    # The last reference went with the reply: the removed files are closed now.
    deadline = time.monotonic() + 10
    while deleted_logs_open(srv.proc.pid):
        assert time.monotonic() < deadline, deleted_logs_open(srv.proc.pid)
        time.sleep(0.05)
    slow.ping()
    slow.close()
    admin.close()
    assert "Traceback" not in srv.log(), srv.log()
    assert srv.stop() == 0
