"""PartitionLog.truncate across segments and PartitionLog.restart_at, on real segment files: what a
cluster follower does when its tail diverged from its new leader's over a segment boundary, and
when its leader's log no longer starts at offset 0 (retention deleted the early segments).

Segments are 2 KiB here, so one partition has many. After every change the log must read as
the leader's log up to that point, its files must hold exactly that (the later segments and
their indexes gone, the cut segment back under its active name), its facts (next and first
offset, message count, size, last timestamp) must agree, and a reopen (recovery) must find the
same log with nothing to repair."""

from __future__ import annotations

import os

import pytest

from iggy_fast import _wire
from iggy_fast.server.storage.files import OpenFiles
from iggy_fast.server.storage.log import PartitionLog

SEGMENT = 2048


def batch(n: int, tag: str) -> bytearray:
    return _wire.build_batch([(i + 1, f"{tag}-{i}".encode().ljust(100, b"."), b"", i)
                              for i in range(n)], 1_000)


def payloads(plog: PartitionLog, start: int = 0) -> list[bytes]:
    chunks = plog.read(start, 1 << 30)[0]
    return [m[4].rstrip(b".") for m in _wire.iter_messages(b"".join(bytes(c) for c in chunks))]


def stored_batches(plog: PartitionLog, start: int = 0) -> list[bytes]:
    """The log's batches as stored (stamped), one bytes each."""
    chunks = plog.read(start, 1 << 30)[0]
    data = b"".join(bytes(c) for c in chunks)
    out, at = [], 0
    while at < len(data):
        length = _wire.batch_info(data[at:])[2]
        out.append(data[at:at + length])
        at += length
    return out


def files(plog: PartitionLog) -> list[str]:
    return sorted(n for n in os.listdir(plog.directory) if n.endswith((".log", ".index")))


def disk_bytes(plog: PartitionLog) -> bytes:
    """Every segment's log file, in offset order: what a replica compares byte for byte."""
    return b"".join(open(os.path.join(plog.directory, n), "rb").read()
                    for n in files(plog) if n.endswith(".log"))


def leader_log(tmp_path, batches: int = 30) -> PartitionLog:
    leader = PartitionLog(str(tmp_path / "leader"), 0, SEGMENT)
    for k in range(batches):
        leader.append(batch(3, f"L{k}"), 3, 10_000 + k)
    leader.sync()            # seals pending: sealed segments get their range names
    assert len(leader.segments) >= 6
    return leader


def copy(leader: PartitionLog, follower: PartitionLog) -> None:
    for b in stored_batches(leader, follower.next_offset):
        follower.append_replicated(bytearray(b))


def check_facts(plog: PartitionLog) -> None:
    """The log's facts agree with its segments and files."""
    assert plog.size_bytes == sum(os.path.getsize(os.path.join(plog.directory, n))
                                  for n in files(plog) if n.endswith(".log"))
    assert plog.messages_count == plog.next_offset - plog.first_offset
    assert len(payloads(plog, plog.first_offset)) == plog.messages_count
    assert [s.base_offset for s in plog.segments] == plog._bases
    assert plog.last_timestamp == max((s.last_timestamp for s in plog.segments), default=0)
    # Every segment has its log and index, named by base (the last) or by range (sealed).
    logs = [n for n in files(plog) if n.endswith(".log")]
    assert len(logs) == len(plog.segments)
    assert sorted(n[:-4] for n in logs) == sorted(n[:-6] for n in files(plog)
                                                  if n.endswith(".index"))
    assert logs[-1] == f"{plog.segments[-1].base_offset:020d}.log"
    assert plog.unsynced_bytes == 0      # a truncation is durable when it returns


def reopen(plog: PartitionLog) -> PartitionLog:
    plog.close()
    again = PartitionLog(plog.directory, plog.partition_id, SEGMENT)
    assert not [p for s in again.segments for p in s.problems], "recovery had to repair"
    return again


@pytest.mark.parametrize("where", ["mid-segment", "segment start", "first segment"])
def test_a_divergent_tail_over_several_segments_is_cut_and_the_leaders_log_follows(
        tmp_path, where):
    leader = leader_log(tmp_path)
    follower = PartitionLog(str(tmp_path / "follower"), 0, SEGMENT)
    mine = stored_batches(leader)
    # The follower copied the leader's first batches, then (as a leader of an older epoch)
    # appended batches of its own over several segments that no later leader has.
    bases = [_wire.batch_info(b)[0] for b in mine]
    seg_bases = [s.base_offset for s in leader.segments]
    cut = {"mid-segment": next(b for b in bases if b not in seg_bases and b > seg_bases[2]),
           "segment start": seg_bases[3], "first segment": bases[1]}[where]
    for b in mine:
        if _wire.batch_info(b)[0] >= cut:
            break
        follower.append_replicated(bytearray(b))
    for k in range(20):
        follower.append(batch(3, f"F{k}"), 3, 20_000 + k)
    follower.sync()
    before = len(follower.segments)
    assert before >= 4 and follower.segments[0].base_offset < cut
    sealed_names = [n for n in files(follower) if "-" in n]
    assert sealed_names                       # the cut falls in a sealed, renamed segment

    follower.truncate(cut)
    assert follower.next_offset == cut
    assert payloads(follower) == payloads(leader)[:cut]
    assert len(follower.segments) < before
    check_facts(follower)
    assert not follower.segments[-1].sealed

    # Appends go on at the cut: the leader's batches, which leave it byte-identical.
    copy(leader, follower)
    assert follower.next_offset == leader.next_offset
    assert stored_batches(follower) == mine
    follower.sync()
    leader.sync()
    assert disk_bytes(follower) == disk_bytes(leader)
    check_facts(follower)

    again = reopen(follower)
    assert again.next_offset == leader.next_offset
    assert stored_batches(again) == mine
    assert again.append(batch(1, "after"), 1, 99_000) == leader.next_offset
    again.close()
    leader.close()


def test_a_cut_then_a_reopen_before_anything_else_is_appended(tmp_path):
    leader = leader_log(tmp_path)
    cut = leader.segments[2].base_offset + 3             # the second batch of segment 2
    assert _wire.batch_info(stored_batches(leader, cut)[0])[0] == cut
    expect = payloads(leader)[:cut]
    leader.truncate(cut)
    again = reopen(leader)
    assert again.next_offset == cut and payloads(again) == expect
    assert len(again.segments) == 3
    check_facts(again)
    # A producer append after the cut is stamped there and not before the last timestamp.
    assert again.append(batch(2, "new"), 2, 1) == cut
    assert again.last_timestamp == 10_000 + cut // 3 - 1
    again.close()


def test_a_cut_inside_a_batch_changes_nothing(tmp_path):
    leader = leader_log(tmp_path)
    names, data = files(leader), disk_bytes(leader)
    end = leader.next_offset
    for offset in (leader.segments[1].base_offset + 1, 4):
        with pytest.raises(ValueError):
            leader.truncate(offset)
        assert files(leader) == names and disk_bytes(leader) == data
        assert leader.next_offset == end
    leader.truncate(end + 5)            # past the end: nothing to cut
    assert files(leader) == names
    leader.close()


def test_a_cut_in_a_segment_closed_by_the_open_files_budget(tmp_path):
    """With a budget of few descriptors most segments are closed: the one cut is reopened."""
    budget = OpenFiles(8)
    plog = PartitionLog(str(tmp_path / "p"), 0, SEGMENT, files=budget)
    for k in range(30):
        plog.append(batch(3, f"L{k}"), 3, 10_000 + k)
    plog.sync()
    assert not plog.segments[1].is_open
    cut = plog.segments[1].base_offset + 3
    expect = payloads(plog)[:cut]
    plog.truncate(cut)
    assert payloads(plog) == expect
    check_facts(plog)
    plog.close()


def test_truncating_to_before_the_log_start_empties_it_there(tmp_path):
    """A follower whose early segments retention deleted, cut below its first offset."""
    plog = leader_log(tmp_path)
    plog.delete_oldest_segments(3)
    first = plog.first_offset
    assert first > 6
    plog.truncate(first - 3)
    assert plog.next_offset == plog.first_offset == first - 3 and plog.messages_count == 0
    check_facts(plog)
    again = reopen(plog)
    assert again.next_offset == first - 3
    again.close()


def test_restart_at_begins_a_copy_at_the_leaders_log_start(tmp_path):
    """The leader's early segments were deleted: a new replica's log starts where the
    leader's does, reads as the leader's from there, and keeps that start after a reopen."""
    leader = leader_log(tmp_path)
    leader.delete_oldest_segments(2)
    start = leader.first_offset
    assert start > 0
    follower = PartitionLog(str(tmp_path / "follower"), 0, SEGMENT)
    follower.append(batch(2, "stale"), 2, 5)      # whatever it held before goes
    follower.restart_at(start)
    assert follower.next_offset == follower.first_offset == start
    assert follower.messages_count == 0 and follower.last_timestamp == 0
    assert follower.read(0, 100)[:2] == ([], 0)        # nothing below its start
    assert files(follower) == [f"{start:020d}.index", f"{start:020d}.log"]
    copy(leader, follower)
    assert payloads(follower, start) == payloads(leader, start)
    assert stored_batches(follower, 0) == stored_batches(leader, 0)
    follower.sync()
    leader.sync()
    assert disk_bytes(follower) == disk_bytes(leader)
    check_facts(follower)
    again = reopen(follower)
    assert again.first_offset == start and again.next_offset == leader.next_offset
    assert stored_batches(again) == stored_batches(leader)
    again.close()

    # An empty copy started at the leader's start, closed before anything came: it reopens
    # empty at that start (not at 0), so the follower fetches from there.
    empty = PartitionLog(str(tmp_path / "empty"), 0, SEGMENT)
    empty.restart_at(start)
    empty.close()
    empty = PartitionLog(str(tmp_path / "empty"), 0, SEGMENT)
    assert empty.next_offset == empty.first_offset == start
    empty.close()
    leader.close()


def test_a_cut_in_a_gap_of_offsets_goes_back_to_where_the_gap_starts(tmp_path):
    """A follower restarted after a reboot: its offset mark (a reservation of the old boot)
    leaves a gap of offsets after its log end. Cut anywhere in the gap, the log goes on from
    the gap's start, so it can fetch what it lacks from there and stay a copy."""
    leader = leader_log(tmp_path)
    follower = PartitionLog(str(tmp_path / "follower"), 0, SEGMENT)
    mine = stored_batches(leader)
    for b in mine[:12]:
        follower.append_replicated(bytearray(b))
    data_end = follower.next_offset
    follower.close()
    with open(os.path.join(follower.directory, "offsets.mark"), "w") as f:
        f.write(f"{data_end + 500:020d} {'another-boot':<36}\n")
    follower = PartitionLog(str(tmp_path / "follower"), 0, SEGMENT)
    assert follower.next_offset == data_end + 500          # the gap
    follower.truncate(data_end + 20)
    assert follower.next_offset == data_end
    check_facts(follower)
    copy(leader, follower)
    assert stored_batches(follower) == mine
    follower.sync()
    assert disk_bytes(follower) == disk_bytes(leader)
    again = reopen(follower)
    assert again.next_offset == leader.next_offset
    again.close()
    leader.close()
