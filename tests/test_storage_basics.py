"""A partition log on its own: offsets, reads at any offset across segments and batch edges,
timestamp lookup, a follower's append of batches that already carry their offsets, and what
rollover leaves to the next sync (sealing) and what deletes do at once."""

from __future__ import annotations

import pytest

from iggy_fast import _wire
from iggy_fast.protocol.errors import IggyError
from iggy_fast.server.storage.log import PartitionLog


def batch(n, tag=b"m", size=100):
    return _wire.build_batch([(i + 1, tag + b"%05d" % i + b"." * size, b"", i)
                              for i in range(n)], 1_000)


def payloads(chunks):
    return [m[4] for c in chunks for m in _wire.iter_messages(c)]


def test_offsets_reads_and_rollover(tmp_path):
    log = PartitionLog(str(tmp_path / "p0"), 0, segment_size=4096)
    expected = []
    for k in range(20):
        b = batch(7, b"b%02d-" % k)
        expected += [m[4] for m in _wire.iter_messages(b)]
        assert log.append(b, 7, now_us=1_000 + k) == 7 * k
    assert log.next_offset == 140 and log.current_offset == 139
    assert len(log.segments) > 3                     # rolled over at 4 KiB
    for start, count in [(0, 140), (3, 10), (6, 2), (50, 90), (139, 5), (10, 1)]:
        chunks, got, after = log.read(start, count)
        assert got == min(count, 140 - start)
        assert payloads(chunks) == expected[start:start + got]
    assert log.read(140, 10) == ([], 0, 140)
    assert log.offset_for_timestamp(1_005) == 35
    # Every timestamp, in every segment (found by bisection over segments, then the index).
    for k in range(20):
        assert log.offset_for_timestamp(1_000 + k) == 7 * k
    assert log.offset_for_timestamp(0) == 0
    assert log.offset_for_timestamp(10**12) is None
    log.close()
    reopened = PartitionLog(str(tmp_path / "p0"), 0, segment_size=4096)
    assert reopened.next_offset == 140
    assert payloads(reopened.read(0, 140)[0]) == expected


def test_follower_append_continues_the_log_exactly(tmp_path):
    leader = PartitionLog(str(tmp_path / "leader"), 3, segment_size=1 << 20)
    follower = PartitionLog(str(tmp_path / "follower"), 3, segment_size=1 << 20)
    for k in range(3):
        leader.append(batch(5), 5, now_us=10 + k)
    stored, _, _ = leader.read(0, 15)
    whole = bytes(b"".join(bytes(c) for c in stored))
    pos = 0
    while pos < len(whole):
        length = int.from_bytes(whole[pos + 32:pos + 40], "little")
        follower.append_replicated(bytearray(whole[pos:pos + length]))
        pos += length
    assert follower.next_offset == 15
    assert b"".join(bytes(c) for c in follower.read(0, 15)[0]) == whole
    # A batch that does not continue the log, or that was altered, is refused.
    first = bytearray(whole[:int.from_bytes(whole[32:40], "little")])
    with pytest.raises(IggyError):
        follower.append_replicated(first)
    tail = bytearray(leader.read(10, 5)[0][0])
    tail[-1] ^= 1
    other = PartitionLog(str(tmp_path / "other"), 3, segment_size=1 << 20)
    for k in range(2):
        other.append(batch(5), 5, now_us=1)
    with pytest.raises(IggyError):
        other.append_replicated(tail)
    assert other.next_offset == 10


def test_rollover_leaves_the_slow_part_to_the_next_sync(tmp_path):
    # Rollover only opens the next segment (the event loop appends on at once); the full
    # segment's fdatasync, its renaming and the directory fsync wait for sync() (run by the
    # durability worker). Reads of the old segment work before, during and after.
    directory = tmp_path / "p0"
    log = PartitionLog(str(directory), 0, segment_size=4096)
    for k in range(2):
        log.append(batch(7, size=600), 7, now_us=1_000 + k)  # ~4.8 KB: the second one rolls
    logs = sorted(p.name for p in directory.glob("*.log"))
    assert logs == [f"{0:020d}.log", f"{7:020d}.log"] and log.seal_pending
    first = payloads(log.read(0, 14)[0])
    assert log.sync() == log.appended and log.durable == log.appended
    assert not log.seal_pending
    logs = sorted(p.name for p in directory.glob("*.log"))
    assert logs == [f"{0:020d}-{6:020d}.log", f"{7:020d}.log"]
    assert payloads(log.read(0, 14)[0]) == first and len(first) == 14
    # Deleting unlinks at once (here, with no event loop, the close happens at once too).
    assert log.delete_oldest_segments(5) == [f"{0:020d}-{6:020d}.log"]
    assert sorted(p.name for p in directory.iterdir()) == [
        f"{7:020d}.index", f"{7:020d}.log", "offsets.mark"]
    assert log.first_offset == 7 and payloads(log.read(0, 14)[0]) == first[7:]
    log.purge()
    assert log.next_offset == 0 and sorted(p.name for p in directory.iterdir()) == [
        f"{0:020d}.index", f"{0:020d}.log", "offsets.mark"]
    log.destroy()
    assert not directory.exists()


def test_reads_are_capped_in_bytes_but_never_split_a_batch_by_size(tmp_path):
    log = PartitionLog(str(tmp_path / "p0"), 0, segment_size=4096)
    expected = []
    for k in range(20):
        b = batch(7, b"b%02d-" % k)
        expected += [m[4] for m in _wire.iter_messages(b)]
        log.append(b, 7, now_us=1_000 + k)
    size = len(batch(7))
    # A cap of two and a half batches gives two whole batches, across segment edges too.
    for start in (0, 7, 21, 35):
        chunks, got, after = log.read(start, 2**32 - 1, max_bytes=size * 5 // 2)
        assert got == 14 and after == start + 14
        assert sum(len(c) for c in chunks) <= size * 5 // 2
        assert payloads(chunks) == expected[start:start + 14]
    # A cap below one batch still gives one batch (sliced only by count, from mid-batch too).
    assert log.read(3, 100, max_bytes=10)[1:] == (4, 7)
    assert log.read(0, 3, max_bytes=10)[1:] == (3, 3)
    # Uncapped, the whole log.
    assert log.read(0, 2**32 - 1)[1] == 140
    log.close()
