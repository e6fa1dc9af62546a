"""A poll for 2^32-1 messages gets a bounded reply: `[system.partition] max_poll_size` caps the
bytes of stored batches one reply carries (the count is cut to whole batches), and the next
poll goes on where it stopped. Before the cap one such poll built a reply as large as the log."""

from __future__ import annotations

from iggy_fast import _wire
from iggy_fast.client.blocking import BlockingClient

PER_BATCH, PAYLOAD = 1000, 1000


def test_a_poll_for_every_message_is_cut_to_the_cap_and_resumes(spawn, tmp_path):
    srv = spawn(tmp_path / "cap", env={"IGGY_SYSTEM_PARTITION_MAX_POLL_SIZE": "4 MiB"})
    c = BlockingClient(srv.address)
    c.login()
    c.call(202, _wire.Writer().name("s").getvalue())
    c.call(302, _wire.Writer().identifier("s").u32(1).name("t").getvalue())
    batches = 12                                   # ~12 MB stored: three caps' worth
    for b in range(batches):
        msgs = [(b * PER_BATCH + i + 1, b"%08d" % (b * PER_BATCH + i) + b"x" * (PAYLOAD - 8),
                 b"", i) for i in range(PER_BATCH)]
        c.send_batch("s", "t", 0, _wire.build_batch(msgs, 1), PER_BATCH)
    offset, polls = 0, 0
    while offset < batches * PER_BATCH:
        reply = c.poll("s", "t", 0, 1, offset, 2**32 - 1)      # by offset, all of them
        assert len(reply.body) <= 4 * 1024 * 1024 + 16
        messages = _wire.iter_messages(memoryview(reply.body)[16:])
        assert messages and len(messages) % PER_BATCH == 0    # whole batches
        assert [m[0] for m in messages] == list(range(offset, offset + len(messages)))
        assert messages[0][4].startswith(b"%08d" % offset)
        offset += len(messages)
        polls += 1
    assert polls >= 3
    c.close()
