"""What a replicated send's acknowledgement promises on a topic that enforces fsync: the batch
is on the disk of every in-sync replica, the follower's included (cluster/replication.py),
observed on real node processes and a real failing disk. Also the durable offset a follower
reports (PartitionLog.durable_offset), on a real log. Skipped without etcd; the failing disk
needs root, losetup and mkfs.ext4.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time

import pytest

from cluster_helpers import connect
from conftest import wait_for
from iggy_fast import _wire
from iggy_fast.server.cluster.dev import EtcdProcess, find_etcd, node
from iggy_fast.server.storage.log import PartitionLog
from test_cluster import live, status

ETCD = find_etcd()


@contextlib.contextmanager
def fragile_disk(where):
    """ext4 on a loop device whose sparse backing file lives on a small tmpfs, as in
    test_durability: once the tmpfs is full, the next fdatasync of new data answers EIO while
    writes into the page cache still succeed. Yields (the tmpfs, the mount point)."""
    back, mount = where / "back", where / "disk"
    back.mkdir(parents=True)
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
        run("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(back),
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


def fill(back) -> None:
    """Fill the tmpfs under a fragile disk (unbuffered: a buffered file would raise ENOSPC
    again from its close)."""
    with open(back / "filler", "wb", buffering=0) as f:
        chunk = b"\0" * (1 << 20)
        try:
            while f.write(chunk):
                pass
        except OSError:
            pass


@pytest.mark.skipif(ETCD is None, reason="no etcd binary on PATH")
async def test_an_fsync_send_is_acknowledged_only_once_the_follower_has_synced_it(tmp_path):
    """A follower whose disk fails its fdatasync holds back the acknowledgement of every
    fsync-enforced send (it has them only in its page cache) until the leader drops it from
    the in-sync set; a topic without enforce_fsync is acknowledged from the page cache at once,
    as before."""
    with fragile_disk(tmp_path / "a") as (back_a, disk_a), \
            fragile_disk(tmp_path / "b") as (back_b, disk_b):
        etcd = EtcdProcess(ETCD).start()
        lag = {"IGGY_CLUSTER_REPLICA_LAG_MAX": "4 s",
               "IGGY_SYSTEM_PARTITION_SYNC_INTERVAL": "1 h"}
        nodes = {"node1": node("node1", etcd.endpoint, cluster="dur", lease_ttl="3 s",
                               data_dir=str(disk_a), env=lag),
                 "node2": node("node2", etcd.endpoint, cluster="dur", lease_ttl="3 s",
                               data_dir=str(disk_b), env=lag)}
        # Each node's data on its own disk (its log file beside it, off the disk that fails).
        backs = {"node1": back_a, "node2": back_b}
        try:
            for n in nodes.values():
                n.start()
            assert wait_for(lambda: len(live(etcd, "dur")) == 2, 30)
            admin = await connect(nodes["node1"], timeout=30)
            await admin.create_stream("s")
            synced = (await admin.create_topic("s", "synced",
                                               options={"enforce_fsync": "true"})).id
            cached = (await admin.create_topic("s", "cached")).id

            def record(topic: int) -> dict:
                return next(p for p in status(etcd, "dur")["partitions"] if p["topic"] == topic)
            assert wait_for(lambda: len(status(etcd, "dur")["partitions"]) == 2
                            and len(record(synced)["isr"]) == 2
                            and len(record(cached)["isr"]) == 2, 30)
            leader = record(synced)["leader"]
            follower = next(n for n in nodes if n != leader)
            client = await connect(nodes[leader], nodes[follower], timeout=30)
            await client.send_messages("s", "synced", 0, [b"before"])  # both disks healthy
            await client.send_messages("s", "cached", 0, [b"before"])

            fill(backs[follower])               # the follower's next fdatasync fails: EIO
            started = time.monotonic()
            await client.send_messages("s", "cached", 0, [b"page cache only"])
            assert time.monotonic() - started < 2      # no fsync asked: as fast as ever
            started = time.monotonic()
            await client.send_messages("s", "synced", 0, [b"on disk"])
            waited = time.monotonic() - started
            # Held until the follower, which could not sync it, left the in-sync set
            # (replica_lag_max, 4 s): then the leader's copy, synced, is all there is.
            assert waited > 3, waited
            assert record(synced)["isr"] == [leader]
            assert len(record(cached)["isr"]) == 2
            assert "cannot be synced" in nodes[follower].log()
            await client.close()
            await admin.close()
        finally:
            logs = {}
            for name, n in nodes.items():
                n.stop()
                logs[name] = n.log()
            etcd.cleanup()
        for name, text in logs.items():
            assert "Traceback" not in text, (name, text[-5000:])


def test_the_durable_offset_is_what_the_last_sync_covered(tmp_path):
    plog = PartitionLog(str(tmp_path / "p"), 0, segment_size=4096)

    def append(base: int, count: int = 2) -> None:
        msgs = [(base + i + 1, b"m%d" % (base + i) * 50, b"", i) for i in range(count)]
        batch = _wire.build_batch(msgs, 1)
        _wire.stamp_batch(batch, 0, base, 1000 + base)
        plog.append_replicated(batch)

    assert plog.durable_offset == 0
    append(0)
    append(2)
    assert plog.durable_offset == 0            # written, not synced
    plog.sync()
    assert plog.durable_offset == 4
    append(4)
    assert plog.durable_offset == 4
    while len(plog.segments) == 1:             # roll over: the synced part stays durable
        append(plog.next_offset)
    assert plog.durable_offset == 4
    plog.sync()
    assert plog.durable_offset == plog.next_offset
    end = plog.next_offset
    # A truncation replaces the active segment: what is written again at the same offsets
    # has not been synced, so nothing in it counts until the next sync.
    cut = plog.segments[-1].base_offset
    plog.truncate(cut)
    append(cut)
    assert plog.durable_offset < end and plog.durable_offset <= cut
    plog.sync()
    assert plog.durable_offset == cut + 2
    plog.purge()
    append(0)
    assert plog.durable_offset == 0
    plog.sync()
    assert plog.durable_offset == 2
    plog.close()
