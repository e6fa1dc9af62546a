"""PartitionLog.truncate, which a cluster follower uses to cut a tail its new leader does not
have: it cuts at a batch boundary (here of the active segment; across segments:
test_log_truncate.py), appends continue from there, and a reopen finds the same log; inside a
batch it refuses (the follower then copies the log anew)."""

from __future__ import annotations

import pytest

from iggy_fast import _wire
from iggy_fast.server.storage.log import PartitionLog


def payloads(plog: PartitionLog) -> list[bytes]:
    chunks = plog.read(0, 1000)[0]
    return [m[4] for m in _wire.iter_messages(b"".join(bytes(c) for c in chunks))]


def batch(*texts: str) -> bytearray:
    return _wire.build_batch([(i + 1, t.encode(), b"", 0) for i, t in enumerate(texts)], 0)


def test_truncate_cuts_at_a_batch_and_appends_continue_there(tmp_path):
    plog = PartitionLog(str(tmp_path / "p"), 0, 1 << 30)
    for i in range(4):
        plog.append(batch(f"a{i}", f"b{i}"), 2, 1_000 + i)
    assert plog.next_offset == 8
    plog.truncate(4)
    assert plog.next_offset == 4
    assert payloads(plog) == [b"a0", b"b0", b"a1", b"b1"]
    assert plog.append(batch("new"), 1, 2_000) == 4
    plog.truncate(99)                          # past the end: nothing to cut
    plog.close()
    again = PartitionLog(str(tmp_path / "p"), 0, 1 << 30)
    assert again.next_offset == 5
    assert payloads(again) == [b"a0", b"b0", b"a1", b"b1", b"new"]
    with pytest.raises(ValueError):
        again.truncate(3)                      # inside a batch
    again.truncate(0)
    assert again.next_offset == 0 and payloads(again) == []
    again.close()
