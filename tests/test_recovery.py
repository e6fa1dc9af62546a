"""Faults on disk: a torn tail, a lost or short index, a flipped bit in a sealed segment, a full
disk, and fsync'd sends from many producers at once. Nothing acknowledged is lost, nothing
corrupt is served, and the server keeps serving."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest
from apache_iggy import Consumer, IggyClient, PollingStrategy
from apache_iggy import SendMessage as Message

from conftest import ServerProcess, wait_for
from iggy_fast import _wire
from iggy_fast.client import BlockingClient
from iggy_fast.protocol.errors import IggyError

SMALL = {"IGGY_SYSTEM_SEGMENT_SIZE": "8 KiB"}


def pdir(srv):
    return srv.data_path(0, 0, 0)


def segment_files(srv):
    return sorted(n for n in os.listdir(pdir(srv)) if n.endswith((".log", ".index")))


def setup_topic(srv, options=b""):
    c = BlockingClient(srv.address)
    c.login()
    c.call(202, _wire.Writer().name("s").getvalue())
    c.call(302, _wire.Writer().identifier("s").u32(1).name("t").raw(options).getvalue())
    return c


def send(c, n_batches, per_batch=10, size=500, start=0):
    for b in range(start, start + n_batches):
        msgs = [(b * 1000 + i + 1, b"%06d-%03d|" % (b, i) + b"x" * size, b"", i)
                for i in range(per_batch)]
        c.send_batch("s", "t", 0, _wire.build_batch(msgs, 1), per_batch)


def offsets_and_payloads(c):
    msgs = c.poll_messages("s", "t", 0, 3, 0, 100_000)
    return [m[0] for m in msgs], [m[4] for m in msgs]


def flip_bit(path, position):
    """Corrupt one stored bit in place, as a failing disk would."""
    with open(path, "r+b") as f:
        f.seek(position)
        byte = f.read(1)
        f.seek(position)
        f.write(bytes([byte[0] ^ 0x01]))


def test_torn_tail_is_truncated_and_logged(tmp_path):
    srv = ServerProcess(tmp_path / "torn").start()
    c = setup_topic(srv)
    send(c, 5)
    before = offsets_and_payloads(c)
    c.close()
    assert srv.stop() == 0
    with open(os.path.join(pdir(srv), f"{0:020d}.log"), "ab") as f:
        f.write(os.urandom(700))            # half-written batch after a crash
    srv.start()
    c = BlockingClient(srv.address)
    c.login()
    assert offsets_and_payloads(c) == before
    assert "torn or corrupt tail" in srv.log()
    send(c, 1, start=5)
    assert offsets_and_payloads(c)[0] == list(range(60))
    c.close()
    assert srv.stop() == 0


def test_missing_and_short_indexes_are_rebuilt(tmp_path):
    srv = ServerProcess(tmp_path / "index", env=SMALL).start()
    c = setup_topic(srv)
    send(c, 6)
    before = offsets_and_payloads(c)
    c.close()
    assert srv.stop() == 0
    indexes = sorted(n for n in os.listdir(pdir(srv)) if n.endswith(".index"))
    os.unlink(os.path.join(pdir(srv), indexes[0]))           # a sealed segment's index gone
    with open(os.path.join(pdir(srv), indexes[-1]), "r+b") as f:
        f.truncate(10)                                         # the active one cut short
    srv.start()
    c = BlockingClient(srv.address)
    c.login()
    assert offsets_and_payloads(c) == before
    assert c.poll_messages("s", "t", 0, 1, 35, 3)[0][0] == 35  # lookups work again
    c.close()
    assert srv.stop() == 0


def test_flipped_bit_in_a_sealed_segment_is_never_served(tmp_path):
    srv = ServerProcess(tmp_path / "flip", env=SMALL).start()
    c = setup_topic(srv)
    send(c, 6)
    c.close()
    assert srv.stop() == 0
    sealed = sorted(n for n in os.listdir(pdir(srv)) if n.endswith(".log"))[1]   # offsets 10..19
    flip_bit(os.path.join(pdir(srv), sealed), 256 + 48 + 20)   # inside message 10's payload
    srv.start()
    c = BlockingClient(srv.address)
    c.login()
    offsets, payloads = offsets_and_payloads(c)
    assert offsets == list(range(10)) + list(range(20, 60))
    for off, payload in zip(offsets, payloads):
        assert payload.startswith(b"%06d-%03d|" % (off // 10, off % 10))
    assert "corrupt batch at byte 0" in srv.log() and sealed in srv.log()
    assert c.poll_messages("s", "t", 0, 1, 12, 5)[0][0] == 20  # reads skip the bad batch
    send(c, 1, start=6)
    assert offsets_and_payloads(c)[0][-1] == 69
    c.close()
    assert srv.stop() == 0


def test_flipped_bit_in_the_unindexed_tail_keeps_the_batches_after_it(tmp_path, spawn):
    # kill -9 leaves the active segment's index unwritten (entries go out in groups of 64), so
    # recovery verifies every batch from the log; one bad batch in the middle must not take the
    # acknowledged batches after it down with it (only a tail with nothing valid after it is torn).
    srv = spawn(tmp_path / "fliptail")
    c = setup_topic(srv)
    send(c, 6)
    c.close()
    srv.kill()
    log_path = os.path.join(pdir(srv), f"{0:020d}.log")
    assert os.path.getsize(os.path.join(pdir(srv), f"{0:020d}.index")) == 0
    batch_len = os.path.getsize(log_path) // 6
    flip_bit(log_path, 2 * batch_len + 256 + 48 + 20)      # inside message 20's payload
    srv.start()
    c = BlockingClient(srv.address)
    c.login()
    offsets, payloads = offsets_and_payloads(c)
    assert offsets == list(range(20)) + list(range(30, 60))
    for off, payload in zip(offsets, payloads):
        assert payload.startswith(b"%06d-%03d|" % (off // 10, off % 10))
    assert f"corrupt batch at byte {2 * batch_len} (offsets 20..29)" in srv.log()
    assert "torn or corrupt tail" not in srv.log()
    send(c, 1, start=6)                                      # appends continue at 60
    assert offsets_and_payloads(c)[0] == list(range(20)) + list(range(30, 70))
    c.close()
    assert srv.stop() == 0
    srv.start()                                              # and the repaired index holds
    c = BlockingClient(srv.address)
    c.login()
    assert offsets_and_payloads(c)[0] == list(range(20)) + list(range(30, 70))
    assert c.poll_messages("s", "t", 0, 1, 25, 10)[0][0] == 30
    c.close()
    assert srv.stop() == 0


def mount_tmpfs(path, options):
    """A small tmpfs at `path` (root only): a disk that really fills up."""
    path.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)]).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    return path


@pytest.fixture
def tiny_filesystem(tmp_path):
    yield mount_tmpfs(tmp_path / "tiny", "size=2m")
    subprocess.run(["umount", "-l", str(tmp_path / "tiny")])


@pytest.fixture
def few_inodes(tmp_path):
    yield mount_tmpfs(tmp_path / "inodes", "size=4m,nr_inodes=200")
    subprocess.run(["umount", "-l", str(tmp_path / "inodes")])


def test_full_disk_fails_the_send_and_appends_resume_when_space_returns(tiny_filesystem, spawn):
    srv = spawn(tiny_filesystem / "data")
    c = setup_topic(srv)
    send(c, 3)
    acked = 3
    filler = tiny_filesystem / "filler"
    free = os.statvfs(tiny_filesystem).f_bavail * os.statvfs(tiny_filesystem).f_frsize
    with open(filler, "wb") as f:
        f.write(b"\0" * (free - 2048))
    with pytest.raises(IggyError) as e:
        for b in range(3, 8):
            send(c, 1, start=b)
            acked += 1
    assert e.value.code == 4006
    c.ping()
    # What is stored is exactly what was acknowledged: no failed send was kept.
    offsets, _ = offsets_and_payloads(c)
    assert offsets == list(range(acked * 10))
    filler.unlink()
    send(c, 2, start=acked)
    offsets, payloads = offsets_and_payloads(c)
    assert offsets == list(range((acked + 2) * 10))
    assert payloads[-1].startswith(b"%06d-009|" % (acked + 1))
    assert "disk full" in srv.log()
    c.close()
    assert srv.stop() == 0


def test_full_disk_while_writing_the_index_does_not_fail_a_stored_send(tiny_filesystem, spawn):
    # The batch reaches the log, then the index write (every 64th batch) finds the disk full.
    # The index is rebuildable, so the send must succeed: failing it while the batch stays
    # stored and served would make the client's retry a duplicate.
    srv = spawn(tiny_filesystem, env={"IGGY_SYSTEM_PARTITION_SYNC_INTERVAL": "1 h"})
    c = setup_topic(srv)
    send(c, 512, per_batch=1, size=100)          # index: 512 entries = 3 whole pages
    log_path = os.path.join(pdir(srv), f"{0:020d}.log")
    index_path = os.path.join(pdir(srv), f"{0:020d}.index")
    assert os.path.getsize(index_path) == 512 * 24 == 3 * 4096
    size = os.path.getsize(log_path)
    pages = -(-(size + 64 * size // 512) // 4096) - -(-size // 4096)
    st = os.statvfs(tiny_filesystem)
    with open(tiny_filesystem / "filler", "wb") as f:       # room for the log, not the index
        f.write(b"\0" * ((st.f_bavail - pages) * st.f_frsize))
    send(c, 64, per_batch=1, size=100, start=512)            # the 64th flushes the index
    assert os.path.getsize(index_path) == 512 * 24           # that write failed
    assert "index write failed" in srv.log()
    offsets, payloads = offsets_and_payloads(c)
    assert offsets == list(range(576))
    assert payloads[-1].startswith(b"%06d-000|" % 575)
    # A failed log write leaves the log exactly as it was.
    size = os.path.getsize(log_path)
    with pytest.raises(IggyError) as e:
        send(c, 5, per_batch=10, size=2000, start=576)
    assert e.value.code == 4006
    assert os.path.getsize(log_path) == size
    (tiny_filesystem / "filler").unlink()
    send(c, 1, per_batch=1, size=100, start=576)             # retries the pending entries
    assert os.path.getsize(index_path) == 577 * 24
    assert "index writes resumed" in srv.log()
    c.close()
    srv.kill()
    srv.start()
    c = BlockingClient(srv.address)
    c.login()
    offsets, payloads = offsets_and_payloads(c)
    assert offsets == list(range(577))
    assert [p[:11] for p in payloads] == [b"%06d-000|" % b for b in range(577)]
    assert "inconsistent" not in srv.log()
    c.close()
    assert srv.stop() == 0


def test_rollover_out_of_inodes_fails_cleanly_and_appends_resume(few_inodes, spawn):
    # Creating the next segment fails (no inode left): the send gets 4006 and nothing changes,
    # so a send that still fits the active segment succeeds, and rollover works once inodes
    # return. (Sealing before opening left a sealed last segment: "segment is sealed" forever.)
    srv = spawn(few_inodes, env=SMALL)
    c = setup_topic(srv)
    send(c, 1)                                               # ~5.6 KB of an 8 KiB segment
    fillers = few_inodes / "fillers"
    fillers.mkdir()
    n = 0
    with pytest.raises(OSError):
        while True:
            (fillers / str(n)).touch()
            n += 1
    for _ in range(2):
        with pytest.raises(IggyError) as e:
            send(c, 1, start=1)                              # needs a new segment
        assert e.value.code == 4006
    send(c, 1, per_batch=1, size=100, start=1)               # fits: offset 10
    assert segment_files(srv) == [f"{0:020d}.index", f"{0:020d}.log"]
    for i in range(n):
        (fillers / str(i)).unlink()
    send(c, 1, start=2)                                      # offsets 11..20, new segment
    sealed = [f"{0:020d}-{10:020d}.index", f"{0:020d}-{10:020d}.log",
              f"{11:020d}.index", f"{11:020d}.log"]
    assert wait_for(lambda: segment_files(srv) == sealed), segment_files(srv)  # named by the
    # sync worker, a moment after the send
    expected = [b"%06d-%03d|" % (0, i) for i in range(10)] + [b"000001-000|"] + [
        b"%06d-%03d|" % (2, i) for i in range(10)]
    for _ in range(2):
        offsets, payloads = offsets_and_payloads(c)
        assert offsets == list(range(21))
        assert [p[:11] for p in payloads] == expected
        c.close()
        assert srv.stop() == 0
        srv.start()
        c = BlockingClient(srv.address)
        c.login()
    c.close()
    assert srv.stop() == 0


def test_a_last_segment_left_sealed_gets_a_new_active_one_at_start(tmp_path, spawn):
    # A crash between sealing the last segment and creating the next one (or data from a
    # version that sealed first) leaves the last segment sealed; appends must go on after it.
    srv = spawn(tmp_path / "sealed", env=SMALL)
    c = setup_topic(srv)
    send(c, 3)                                               # one batch per segment
    c.close()
    assert srv.stop() == 0
    for ext in ("log", "index"):
        os.rename(os.path.join(pdir(srv), f"{20:020d}.{ext}"),
                  os.path.join(pdir(srv), f"{20:020d}-{29:020d}.{ext}"))
    srv.start()
    c = BlockingClient(srv.address)
    c.login()
    send(c, 1, per_batch=1, size=100, start=3)               # would fit the sealed one
    send(c, 1, start=4)                                      # fits the new one too
    assert "the last segment is sealed" in srv.log()
    assert offsets_and_payloads(c)[0] == list(range(41))
    c.close()
    assert srv.stop() == 0
    srv.start()
    c = BlockingClient(srv.address)
    c.login()
    offsets, payloads = offsets_and_payloads(c)
    assert offsets == list(range(41)) and payloads[30].startswith(b"000003-000|")
    assert sorted(n for n in os.listdir(pdir(srv)) if n.endswith(".log"))[2:] == [
        f"{20:020d}-{29:020d}.log", f"{30:020d}.log"]
    c.close()
    assert srv.stop() == 0


async def test_fsync_enforced_concurrent_producers_all_acknowledged(tmp_path):
    srv = ServerProcess(tmp_path / "fsync").start()
    c = IggyClient(srv.address)
    await c.connect()
    await c.login_user("iggy", "iggy")
    await c.create_stream("s")
    await c.create_topic(stream="s", name="t", partitions_count=1,
                         options={"enforce_fsync": "true"})
    topic = await c.get_topic("s", "t")
    assert topic.options.to_scalar_dict()["enforce_fsync"] is True     # shown typed

    async def producer(k):
        p = IggyClient(srv.address)
        await p.connect()
        await p.login_user("iggy", "iggy")
        for i in range(20):
            await p.send_messages("s", "t", 0, [Message(f"{k}-{i}")])

    await asyncio.gather(*(producer(k) for k in range(8)))
    msgs = await c.poll_messages(stream="s", topic="t", consumer=Consumer.Single(1),
                                 partition_id=0, polling_strategy=PollingStrategy.First(),
                                 count=1000, auto_commit=False)
    assert sorted(m.payload().decode() for m in msgs) == sorted(
        f"{k}-{i}" for k in range(8) for i in range(20))
    assert [m.offset() for m in msgs] == list(range(160))
    assert srv.stop() == 0


async def test_offsets_of_persisted_topics_survive_kill_9(tmp_path):
    from apache_iggy import Durability
    srv = ServerProcess(tmp_path / "offsets").start()
    c = IggyClient(srv.address)
    await c.connect()
    await c.login_user("iggy", "iggy")
    await c.create_stream("s")
    await c.create_topic(stream="s", name="t", partitions_count=1,
                         consumer_offset_durability=Durability.PERSISTED)
    await c.send_messages("s", "t", 0, [Message(f"m{i}") for i in range(10)])
    got = await c.poll_messages(stream="s", topic="t", consumer=Consumer.Single(3),
                                partition_id=0, polling_strategy=PollingStrategy.Next(),
                                count=6, auto_commit=True)
    assert len(got) == 6
    srv.kill()
    srv.start()
    c = IggyClient(srv.address)
    await c.connect()
    await c.login_user("iggy", "iggy")
    got = await c.poll_messages(stream="s", topic="t", consumer=Consumer.Single(3),
                                partition_id=0, polling_strategy=PollingStrategy.Next(),
                                count=10, auto_commit=True)
    assert [m.offset() for m in got] == [6, 7, 8, 9]
    assert srv.stop() == 0
