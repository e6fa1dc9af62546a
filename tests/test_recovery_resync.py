"""Recovery when the active segment's index is lost (it is not fsynced, so after a crash it can
lag the log by any number of batches) and the log is damaged: a bit flipped in a batch's
length, count or base offset, a zeroed page, garbage after the end, a last batch cut short.

What must hold: damage anywhere but the end is corruption, kept out of service and logged with
its position, and every intact batch after it is still served (the scan resynchronises on the
next batch that verifies); only what follows the last verifiable batch is cut; and the next
send never gets an offset that was handed out before (a gap is fine, reuse is not). Each test
polls every offset, one by one too, and compares payloads."""

from __future__ import annotations

import os

import pytest
from conftest import wait_for

from iggy_fast import _wire
from iggy_fast.client import BlockingClient
from test_recovery import flip_bit, pdir, setup_topic

BATCHES, PER_BATCH = 10, 100
TOTAL = BATCHES * PER_BATCH


def payload(offset):
    return b"%06d|" % offset + bytes([offset % 251]) * 400


def fill(srv):
    """Send offsets 0..999 in 10 batches of 100, every batch the same size."""
    c = setup_topic(srv)
    for b in range(BATCHES):
        first = b * PER_BATCH
        msgs = [(first + i + 1, payload(first + i), b"", i) for i in range(PER_BATCH)]
        assert c.send_batch("s", "t", 0, _wire.build_batch(msgs, 1), PER_BATCH) == first
    c.close()


def fill_one_segment(srv):
    """fill(); returns the one segment's log and the size of a batch."""
    fill(srv)
    log_path = os.path.join(pdir(srv), f"{0:020d}.log")
    assert os.path.getsize(log_path) % BATCHES == 0
    return log_path, os.path.getsize(log_path) // BATCHES


def crash_and_lose_the_index(srv, kill=True):
    if kill:
        srv.kill()
    else:
        assert srv.stop() == 0
    os.unlink(os.path.join(pdir(srv), f"{0:020d}.index"))


def restart(srv):
    """Start again; returns a logged-in client and the log written by this run only."""
    seen = len(srv.log())
    srv.start()
    c = BlockingClient(srv.address)
    c.login()
    return c, srv.log()[seen:]


def check_served(c, missing):
    """Every offset but `missing` is served, each with its own payload, whether polled all at
    once or one by one; a poll that starts on a missing one gets the next one served."""
    served = [o for o in range(TOTAL) if o not in missing]
    msgs = c.poll_messages("s", "t", 0, 1, 0, TOTAL)
    assert [m[0] for m in msgs] == served
    assert all(m[4] == payload(m[0]) for m in msgs)
    for offset in range(TOTAL):
        got = [(m[0], m[4]) for m in c.poll_messages("s", "t", 0, 1, offset, 1)]
        following = [o for o in served if o >= offset][:1]
        if following:
            assert got == [(following[0], payload(following[0]))], offset
        else:
            assert all(o >= TOTAL for o, _ in got), offset


def send_one(c, tag=b"after"):
    return c.send_batch("s", "t", 0, _wire.build_batch([(10**9, tag, b"", 0)], 1), 1)


def batches_hit(first_byte, last_byte, batch_len):
    return range(first_byte // batch_len, last_byte // batch_len + 1)


# (field, byte in the batch header, bit): each makes the scan unable to take the batch; the
# high length bit makes it claim more than the file holds, which used to look like a torn tail.
HEADER_FLIPS = {
    "length low bit": (32, 0x01),
    "length beyond the file": (34, 0x80),
    "count": (48, 0x02),
    "base offset": (8, 0x04),
}


@pytest.mark.parametrize("field", list(HEADER_FLIPS))
def test_a_flipped_header_bit_mid_log_keeps_every_batch_after_it(tmp_path, spawn, field):
    srv = spawn(tmp_path / "flip")
    log_path, batch_len = fill_one_segment(srv)
    crash_and_lose_the_index(srv)
    where, bit = HEADER_FLIPS[field]
    with open(log_path, "r+b") as f:
        f.seek(5 * batch_len + where)
        byte = f.read(1)[0]
        f.seek(5 * batch_len + where)
        f.write(bytes([byte ^ bit]))
    c, log = restart(srv)
    check_served(c, missing=range(500, 600))
    assert f"corrupt batch at byte {5 * batch_len} (offsets 500..599)" in log
    assert "torn or corrupt tail" not in log
    assert os.path.getsize(log_path) == BATCHES * batch_len     # nothing discarded
    assert send_one(c) == TOTAL                                  # nothing handed out twice
    c.close()
    srv.kill()                                                   # the rebuilt index holds
    c, log = restart(srv)
    check_served(c, missing=range(500, 600))
    assert c.poll_messages("s", "t", 0, 1, TOTAL, 1)[0][4] == b"after"
    assert send_one(c) == TOTAL + 1
    c.close()


def test_a_zeroed_page_mid_log_loses_only_the_batches_it_hits(tmp_path, spawn):
    srv = spawn(tmp_path / "page")
    log_path, batch_len = fill_one_segment(srv)
    crash_and_lose_the_index(srv)
    page = (4 * batch_len + batch_len - 1000) // 4096 * 4096   # across the start of batch 5
    with open(log_path, "r+b") as f:
        f.seek(page)
        f.write(bytes(4096))
    hit = batches_hit(page, page + 4095, batch_len)
    assert list(hit) == [4, 5]
    c, log = restart(srv)
    check_served(c, missing=range(400, 600))
    assert f"corrupt batch at byte {4 * batch_len} (offsets 400..599)" in log
    assert "torn or corrupt tail" not in log
    assert send_one(c) == TOTAL
    c.close()


def test_garbage_after_the_last_batch_is_cut_as_a_torn_tail(tmp_path, spawn):
    srv = spawn(tmp_path / "garbage")
    log_path, batch_len = fill_one_segment(srv)
    crash_and_lose_the_index(srv, kill=False)
    with open(log_path, "ab") as f:
        f.write(os.urandom(3000))
    c, log = restart(srv)
    check_served(c, missing=())
    assert f"torn or corrupt tail at byte {BATCHES * batch_len} (3000 bytes) truncated" in log
    assert os.path.getsize(log_path) == BATCHES * batch_len
    assert send_one(c) == TOTAL       # a clean stop left the mark exact: no gap either
    c.close()


def test_a_last_batch_cut_short_is_cut_and_its_offsets_not_reused(tmp_path, spawn):
    # The last batch was acknowledged, then lost its end (as a power loss can do to unsynced
    # pages): cut, but its offsets were handed out, so the next send comes after them.
    srv = spawn(tmp_path / "short")
    log_path, batch_len = fill_one_segment(srv)
    crash_and_lose_the_index(srv, kill=False)
    with open(log_path, "r+b") as f:
        f.truncate(9 * batch_len + batch_len // 2)
    c, log = restart(srv)
    check_served(c, missing=range(900, 1000))
    assert f"torn or corrupt tail at byte {9 * batch_len}" in log
    assert send_one(c) == TOTAL
    c.close()


def test_a_write_stopped_by_a_crash_is_cut_and_offsets_stay_dense(tmp_path, spawn):
    # kill -9 in the middle of write(2) leaves the first pages of a batch that was never
    # acknowledged: cut, and its offsets are given out again (no gap after a process crash).
    srv = spawn(tmp_path / "stopped")
    log_path, batch_len = fill_one_segment(srv)
    crash_and_lose_the_index(srv)
    msgs = [(TOTAL + i + 1, payload(TOTAL + i), b"", i) for i in range(PER_BATCH)]
    batch = _wire.build_batch(msgs, 1)
    _wire.stamp_batch(batch, 0, TOTAL, 1 << 62)
    with open(log_path, "ab") as f:
        f.write(bytes(batch[:8192]))
    c, log = restart(srv)
    check_served(c, missing=())
    assert (f"torn or corrupt tail at byte {BATCHES * batch_len} (8192 bytes) truncated: "
            f"a write cut short") in log
    assert send_one(c) == TOTAL
    c.close()


def test_a_corrupt_last_batch_after_a_crash_is_cut_and_its_offsets_not_reused(tmp_path,
                                                                             spawn):
    # kill -9 keeps every written byte in the page cache, so the log's end is trusted after a
    # crash; not when the last batch is complete but fails verification: it was acknowledged
    # and its offsets may be anything, so offsets continue after the reserved mark.
    srv = spawn(tmp_path / "lastflip")
    log_path, batch_len = fill_one_segment(srv)
    crash_and_lose_the_index(srv)
    flip_bit(log_path, 9 * batch_len + 32)                      # the last batch's length
    c, log = restart(srv)
    check_served(c, missing=range(900, 1000))
    assert f"torn or corrupt tail at byte {9 * batch_len}" in log
    assert "may have been handed out" in log
    after = send_one(c)
    assert after >= TOTAL
    got = c.poll_messages("s", "t", 0, 1, 900, 10)                # polls skip the gap
    assert [(m[0], m[4]) for m in got] == [(after, b"after")]
    c.close()


def test_after_a_reboot_lost_batches_do_not_have_their_offsets_reused(tmp_path, spawn):
    # Without fsync a power loss can drop whole acknowledged batches and leave a log that
    # ends cleanly. The mark was written by another boot, so it counts, not the log's end.
    srv = spawn(tmp_path / "reboot")
    log_path, batch_len = fill_one_segment(srv)
    crash_and_lose_the_index(srv)
    mark = os.path.join(pdir(srv), "offsets.mark")
    offset, boot = open(mark).read().split()
    assert int(offset) >= TOTAL
    with open(mark, "w") as f:
        f.write(f"{offset} {'0' * 8}-0000-0000-0000-{'0' * 12}\n")  # another boot's mark
    with open(log_path, "r+b") as f:
        f.truncate(8 * batch_len)                                  # batches 8 and 9 gone
    c, log = restart(srv)
    check_served(c, missing=range(800, 1000))
    assert "torn or corrupt tail" not in log
    assert send_one(c) >= TOTAL
    c.close()


@pytest.mark.parametrize("field", ["length low bit", "length beyond the file"])
def test_a_flipped_length_in_a_sealed_segment_with_its_index_lost(tmp_path, spawn, field):
    # Sealed segments are verified lazily, so their headers are trusted at open: a wrong
    # length shows only at the next header, and the batch before it must be the one blamed.
    srv = spawn(tmp_path / "sealed", env={"IGGY_SYSTEM_SEGMENT_SIZE": "200 KiB"})
    fill(srv)                                  # segments 0-399 and 400-799 sealed, 800..
    stem = f"{400:020d}-{799:020d}"
    log_path = os.path.join(pdir(srv), stem + ".log")
    # Sealed segments are named by the sync worker, a moment after the send.
    assert wait_for(lambda: os.path.exists(log_path)), os.listdir(pdir(srv))
    srv.kill()
    batch_len = os.path.getsize(log_path) // 4
    os.unlink(os.path.join(pdir(srv), stem + ".index"))
    where, bit = HEADER_FLIPS[field]
    with open(log_path, "r+b") as f:                             # the batch of offsets 500..599
        f.seek(batch_len + where)
        byte = f.read(1)[0]
        f.seek(batch_len + where)
        f.write(bytes([byte ^ bit]))
    c, log = restart(srv)
    check_served(c, missing=range(500, 600))
    assert f"{stem}.log: corrupt batch at byte {batch_len} (offsets 500..599)" in log
    assert os.path.getsize(log_path) == 4 * batch_len
    assert send_one(c) == TOTAL
    c.close()
