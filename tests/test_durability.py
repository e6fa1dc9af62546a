"""What reaches the disk, and when: observed on the real server's system calls (strace) or on
a real failing disk, never on mocks.

Covered: directory entries made durable (new partitions, new segments, seals), fsync'd topics'
metadata committed durably, group commit sharing one fdatasync between concurrent sends, the
count / bytes / time rules of background syncs, a failed fdatasync never followed by a false
success (fsyncgate), and polls over plain TCP leaving by sendfile(2).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time

import pytest
from conftest import wait_for

from iggy_fast import _wire
from iggy_fast.client import BlockingClient
from iggy_fast.protocol.errors import IggyError

SMALL = {"IGGY_SYSTEM_SEGMENT_SIZE": "8 KiB"}
NO_TIMER = {"IGGY_SYSTEM_PARTITION_SYNC_INTERVAL": "1 h"}


def option(name: str, kind: int, value: bytes) -> bytes:
    """One topic option as the SDK's typed TLV entry (STRING key)."""
    return (b"\x02" + len(name).to_bytes(4, "little") + name.encode()
            + bytes([kind]) + len(value).to_bytes(4, "little") + value)


FSYNC = option("enforce_fsync", 3, b"\x01")


def connect(srv) -> BlockingClient:
    c = BlockingClient(srv.address)
    c.login()
    return c


def create_topic(c, stream, name, options=b"", partitions=1):
    c.call(302, _wire.Writer().identifier(stream).u32(partitions).name(name).raw(options)
           .getvalue())


def send(c, topic, n_batches, per_batch=10, size=500, start=0, stream="s"):
    for b in range(start, start + n_batches):
        msgs = [(b * 1000 + i + 1, b"%06d-%03d|" % (b, i) + b"x" * size, b"", i)
                for i in range(per_batch)]
        c.send_batch(stream, topic, 0, _wire.build_batch(msgs, 1), per_batch)


def partition_dir(srv, sid=0, tid=0, pid=0):
    return srv.data_path(sid, tid, pid)


class Strace:
    """strace attached to the running server: its file system calls, as they happen."""

    CALLS = "openat,fsync,fdatasync,rename,renameat,renameat2,sendfile,pread64,preadv"
    LINE = re.compile(r"^(\d+)\s+(\w+)\((.*)\)\s+=\s+(-?\d+)")

    def __init__(self, pid: int, out: str):
        if shutil.which("strace") is None:
            pytest.skip("needs strace")
        self.out = out
        self.proc = subprocess.Popen(["strace", "-f", "-p", str(pid), "-e",
                                      f"trace={self.CALLS}", "-o", out],
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        if "attached" not in line:
            self.proc.kill()
            pytest.skip(f"cannot trace the server: {line.strip()}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGINT)     # detaches; the server runs on
        self.proc.wait(10)

    def calls(self) -> list[tuple[int, str, str, int]]:
        """(thread, call, arguments, result), joining calls that other threads interrupted."""
        pending, calls = {}, []
        with open(self.out) as f:
            for raw in f:
                raw = raw.rstrip("\n")
                tid = raw.split(None, 1)[0]
                if raw.endswith("<unfinished ...>"):
                    pending[tid] = raw[:-len("<unfinished ...>")].rstrip()
                    continue
                m = re.match(r"^(\d+)\s+<\.\.\. \w+ resumed>(.*)$", raw)
                if m:
                    raw = pending.pop(tid, "") + m.group(2)
                m = self.LINE.match(raw)
                if m:
                    calls.append((int(m.group(1)), m.group(2), m.group(3), int(m.group(4))))
        return calls

    def count(self, call: str, fds: set[int]) -> int:
        """How many times `call` was made on one of the descriptors `fds`."""
        return sum(1 for _, name, args, _ in self.calls()
                   if name == call and int(args.split(",")[0]) in fds)


def open_fds(pid: int, suffix: str) -> set[int]:
    fds = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").endswith(suffix):
                fds.add(int(fd))
        except OSError:
            pass
    return fds



# -- directory entries ---------------------------------------------------------------------

def test_new_partitions_segments_and_seals_are_made_durable(tmp_path, spawn):
    srv = spawn(tmp_path / "dirs", env=SMALL)
    c = connect(srv)
    c.call(202, _wire.Writer().name("s").getvalue())
    with Strace(srv.proc.pid, str(tmp_path / "trace")) as st:
        create_topic(c, "s", "t", FSYNC)
        send(c, "t", 1)                                       # ~5.6 KB of an 8 KiB segment
        send(c, "t", 1, start=1)                              # rolls over to offset 10
    calls = st.calls()
    fds, synced = {}, []
    for i, (tid, name, args, result) in enumerate(calls):
        if name == "openat":
            fds[result] = (args.split('"')[1], "O_DIRECTORY" in args)
        elif name == "fsync" and fds.get(int(args))[1]:
            synced.append((i, tid, fds[int(args)][0]))
    pdir = partition_dir(srv)
    paths = {path for _, _, path in synced}
    # Every directory that got a new entry: the topic's new directories and the first segment.
    for path in (os.path.join(srv.data_dir, "streams"), os.path.dirname(pdir), pdir,
                 os.path.dirname(os.path.dirname(pdir))):
        assert path in paths, f"{path} was not fsynced"
    # Rollover: the send's thread (the event loop) creates the new segment; the sync worker
    # then renames the old one by its seal and fsyncs the directory, before the fsync'd send
    # that rolled over is answered.
    new = next((i, tid) for i, (tid, name, args, _) in enumerate(calls)
               if name == "openat" and args.split('"')[1].endswith(f"{10:020d}.log")
               and "O_CREAT" in args)
    sealed = next((i, tid) for i, (tid, name, args, _) in enumerate(calls)
                  if name.startswith("rename") and f"{0:020d}-{9:020d}.log" in args)
    dir_sync = next((i, tid) for i, tid, path in synced if path == pdir and i > sealed[0])
    assert new[0] < sealed[0] < dir_sync[0]
    assert new[1] != sealed[1] == dir_sync[1]
    c.close()
    assert srv.stop() == 0


def test_fsync_topics_commit_their_metadata_durably(tmp_path, spawn):
    srv = spawn(tmp_path / "meta")
    c = connect(srv)
    c.call(202, _wire.Writer().name("s").getvalue())
    wal = os.path.join(srv.data_dir, "metadata.db-wal")

    def wal_syncs(action) -> int:
        with Strace(srv.proc.pid, str(tmp_path / "trace")) as st:
            action()
        fds = open_fds(srv.proc.pid, "metadata.db-wal")
        assert fds, f"{wal} is not open"
        return sum(1 for _, name, args, _ in st.calls()
                   if name in ("fsync", "fdatasync") and int(args) in fds)

    assert wal_syncs(lambda: create_topic(c, "s", "plain")) == 0
    assert wal_syncs(lambda: create_topic(c, "s", "durable", FSYNC)) >= 1
    assert wal_syncs(lambda: c.call(402, _wire.Writer().identifier("s")
                                    .identifier("durable").u32(2).getvalue())) >= 1
    c.close()
    assert srv.stop() == 0


# -- group commit and the background rules -------------------------------------------------

def test_group_commit_shares_one_sync_between_concurrent_sends(tmp_path, spawn):
    # Eight sends wait in their sockets while the server is stopped, so they all arrive at
    # once: they are acknowledged by about two fdatasyncs (the first may start as soon as the
    # first send is appended), not eight. Asserted with room: at most half as many as sends.
    from iggy_fast.client.core import send_messages_body
    srv = spawn(tmp_path / "gc", env=NO_TIMER)
    admin = connect(srv)
    admin.call(202, _wire.Writer().name("s").getvalue())
    create_topic(admin, "s", "t", FSYNC)
    producers = [connect(srv) for _ in range(8)]
    rounds = 10
    for r in range(rounds):
        os.kill(srv.proc.pid, signal.SIGSTOP)
        try:
            sent = []
            for k, p in enumerate(producers):
                batch = _wire.build_batch([(r * 100 + k + 1, b"%d-%d" % (r, k), b"", 0)], 1)
                sent.append(p.send_request(101, send_messages_body("s", "t", 0, 1), (batch,)))
        finally:
            os.kill(srv.proc.pid, signal.SIGCONT)
        for p, pending in zip(producers, sent):
            p.wait(pending)                                   # raises on an error status
    got = admin.poll_messages("s", "t", 0, 3, 0, 1000)
    assert sorted(m[4] for m in got) == sorted(b"%d-%d" % (r, k) for r in range(rounds)
                                               for k in range(8))
    for p in producers + [admin]:
        p.close()
    assert srv.stop() == 0
    m = re.search(r"durability: (\d+) fdatasyncs by the sync worker, (\d+) fsync-enforced sends",
                  srv.log())
    assert m, srv.log()
    syncs, sends = int(m.group(1)), int(m.group(2))
    assert sends == 8 * rounds
    assert syncs <= sends // 2, f"{syncs} fdatasyncs for {sends} concurrent sends"


def test_count_and_size_rules_sync_in_the_background(tmp_path, spawn):
    srv = spawn(tmp_path / "rules", env=NO_TIMER)
    c = connect(srv)
    c.call(202, _wire.Writer().name("s").getvalue())
    create_topic(c, "s", "count", option("messages_required_to_save", 11,
                                         (10).to_bytes(4, "little")))
    create_topic(c, "s", "size", option("size_of_messages_required_to_save", 12,
                                        (20_000).to_bytes(8, "little")))
    count_log = open_fds(srv.proc.pid, os.path.join(partition_dir(srv, tid=0), f"{0:020d}.log"))
    size_log = open_fds(srv.proc.pid, os.path.join(partition_dir(srv, tid=1), f"{0:020d}.log"))
    assert len(count_log) == len(size_log) == 1
    with Strace(srv.proc.pid, str(tmp_path / "trace")) as st:
        send(c, "count", 9, per_batch=1, size=10)
        send(c, "size", 3, per_batch=10, size=500)           # ~16.8 KB
        time.sleep(0.5)
        assert st.count("fdatasync", count_log) == 0
        assert st.count("fdatasync", size_log) == 0
        send(c, "count", 1, per_batch=1, size=10, start=9)    # the 10th message
        assert wait_for(lambda: st.count("fdatasync", count_log) >= 1)
        send(c, "size", 1, per_batch=10, size=500, start=3)   # past 20,000 bytes
        assert wait_for(lambda: st.count("fdatasync", size_log) >= 1)
    c.close()
    assert srv.stop() == 0


def test_time_rule_syncs_what_was_left_unsynced(tmp_path, spawn):
    srv = spawn(tmp_path / "timer", env={"IGGY_SYSTEM_PARTITION_SYNC_INTERVAL": "300 ms"})
    c = connect(srv)
    c.call(202, _wire.Writer().name("s").getvalue())
    create_topic(c, "s", "t")
    log_path = open_fds(srv.proc.pid, os.path.join(partition_dir(srv), f"{0:020d}.log"))
    assert len(log_path) == 1
    with Strace(srv.proc.pid, str(tmp_path / "trace")) as st:
        time.sleep(0.7)
        assert st.count("fdatasync", log_path) == 0           # nothing to sync yet
        send(c, "t", 1, per_batch=1, size=10)
        assert wait_for(lambda: st.count("fdatasync", log_path) >= 1)
    c.close()
    assert srv.stop() == 0


# -- reads ---------------------------------------------------------------------------------

def test_plain_tcp_polls_are_served_by_sendfile(tmp_path, spawn):
    srv = spawn(tmp_path / "sendfile")
    c = connect(srv)
    c.call(202, _wire.Writer().name("s").getvalue())
    create_topic(c, "s", "t")
    send(c, "t", 20, per_batch=50, size=1000)                 # ~1 MB
    log_path = os.path.join(partition_dir(srv), f"{0:020d}.log")
    size = os.path.getsize(log_path)
    with Strace(srv.proc.pid, str(tmp_path / "trace")) as st:
        reply = c.poll("s", "t", 0, 3, 0, 1000)
    assert bytes(reply.body[16:]) == open(log_path, "rb").read()
    fds = open_fds(srv.proc.pid, log_path)
    sent = copied = 0
    for _, name, args, result in st.calls():
        if name == "sendfile" and int(args.split(",")[1]) in fds and result > 0:
            sent += result
        elif name in ("pread64", "preadv") and int(args.split(",")[0]) in fds:
            copied += result
    # Nothing but the poll touched the file: it all left by sendfile, none of it copied.
    assert sent == size and copied == 0, (sent, copied, size)
    c.close()
    assert srv.stop() == 0


# -- a disk that fails a sync --------------------------------------------------------------

@pytest.fixture
def fragile_disk(tmp_path):
    """ext4 on a loop device whose sparse backing file lives on a small tmpfs (root only).

    Filling the tmpfs makes the loop device fail writes into holes of its backing file: the
    next fdatasync on the ext4 answers EIO, and (the kernel having dropped those dirty pages)
    a later one may answer success: the fsyncgate sequence, on a real kernel.
    """
    back, mount = tmp_path / "back", tmp_path / "disk"
    back.mkdir()
    mount.mkdir()
    undo = []

    def run(*cmd, undo_cmd=None):
        ok = subprocess.run(cmd, capture_output=True, text=True)
        if ok.returncode != 0:
            pytest.skip(f"{' '.join(cmd)}: {ok.stderr.strip()}")
        if undo_cmd:
            undo.append(undo_cmd(ok.stdout.strip()))
        return ok.stdout.strip()

    if os.geteuid() != 0 or not shutil.which("losetup") or not shutil.which("mkfs.ext4"):
        pytest.skip("needs root, losetup and mkfs.ext4")
    try:
        run("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(back),
            undo_cmd=lambda _: ["umount", "-l", str(back)])
        image = back / "image"
        with open(image, "wb") as f:
            f.truncate(64 << 20)
        run("mkfs.ext4", "-q", str(image))
        loop = run("losetup", "-f", "--show", str(image),
                   undo_cmd=lambda dev: ["losetup", "-d", dev])
        run("mount", "-o", "errors=continue", loop, str(mount),
            undo_cmd=lambda _: ["umount", "-l", str(mount)])
        yield back, mount
    finally:
        for cmd in reversed(undo):
            subprocess.run(cmd, capture_output=True)


def test_a_failed_fdatasync_is_never_followed_by_an_acknowledgement(fragile_disk, spawn):
    back, mount = fragile_disk
    srv = spawn(mount, env=NO_TIMER)
    c = connect(srv)
    c.call(202, _wire.Writer().name("s").getvalue())
    create_topic(c, "s", "t", FSYNC)
    send(c, "t", 1)                                           # durable and acknowledged
    st = os.statvfs(back)
    with open(back / "filler", "wb") as f:
        try:
            f.write(b"\0" * (st.f_bavail * st.f_frsize))
        except OSError:
            pass
    with pytest.raises(IggyError) as e:
        send(c, "t", 1, start=1)                              # its fdatasync fails: EIO
    assert e.value.code == 4006
    (back / "filler").unlink()
    flush = _wire.Writer().identifier("s").identifier("t").u32(0).u8(1).getvalue()
    # The kernel may now report a sync as successful, but the failed data is not on disk:
    # neither an explicit flush nor a new fsync'd send may be acknowledged.
    with pytest.raises(IggyError) as e:
        c.call(102, flush)
    assert e.value.code == 4006
    with pytest.raises(IggyError) as e:
        send(c, "t", 1, start=2)
    assert e.value.code == 4006
    c.ping()                                                  # the server serves on
    assert "fdatasync failed" in srv.log()
    c.close()
    srv.stop()
