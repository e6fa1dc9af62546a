"""Consumer offsets live beside their partition's log (server/offsets.py), not in the metadata
store: a consumer's and a group's offsets survive a restart from there, a deleted one stays
deleted, a purge forgets them, and a topic that asks for persisted offsets has each one synced
before the reply."""

from __future__ import annotations

import os
import sqlite3

from iggy_fast import _wire
from iggy_fast.client import BlockingClient
from test_durability import Strace, option

NEXT = 5


def offset_body(kind, ident, partition):
    return _wire.Writer().u8(kind).identifier(ident).identifier("s").identifier("t") \
        .u8(1).u32(partition)


def stored(c, kind, ident, partition):
    body = c.call(120, offset_body(kind, ident, partition).getvalue()).body
    return int.from_bytes(body[12:20], "little") if body else None


def setup(srv, options=b"") -> BlockingClient:
    c = BlockingClient(srv.address)
    c.login()
    c.call(202, _wire.Writer().name("s").getvalue())
    c.call(302, _wire.Writer().identifier("s").u32(2).name("t").raw(options).getvalue())
    for pid in (0, 1):
        msgs = [(i + 1, b"m%d" % i, b"", 0) for i in range(10)]
        c.send_batch("s", "t", pid, _wire.build_batch(msgs, 1), 10)
    return c


def test_offsets_survive_a_restart_beside_their_partition(fresh_server):
    srv = fresh_server.start()
    c = setup(srv)
    c.call(121, offset_body(1, 7, 0).u64(4).getvalue())           # consumer 7, partition 0
    c.call(121, offset_body(1, "named", 1).u64(6).getvalue())     # a named consumer
    c.call(121, offset_body(1, 8, 1).u64(2).getvalue())
    c.call(122, offset_body(1, 8, 1).getvalue())                  # stored, then deleted
    group = _wire.Writer().identifier("s").identifier("t").identifier("g").getvalue()
    c.call(602, _wire.Writer().identifier("s").identifier("t").name("g").getvalue())
    c.call(604, group)
    polled = c.poll("s", "t", 1, NEXT, 0, 3, auto_commit=True, consumer_id="g",
                    consumer_kind=2)
    assert int.from_bytes(polled.body[12:16], "little") == 3      # group offset now 2
    p0, p1 = srv.data_path(0, 0, 0), srv.data_path(0, 0, 1)
    assert sorted(os.listdir(os.path.join(p0, "offsets"))) == ["1.7"]
    # Many consumers of one partition: every offset stored, few files kept open.
    for consumer in range(100, 120):
        c.call(121, offset_body(1, consumer, 0).u64(consumer % 10).getvalue())
    fds = [os.readlink(f"/proc/{srv.proc.pid}/fd/{fd}")
           for fd in os.listdir(f"/proc/{srv.proc.pid}/fd")]
    assert 0 < sum(1 for target in fds if target.startswith(os.path.join(p0, "offsets"))) <= 8
    named = f"1.{_wire.xxh32(b'named')}"
    assert sorted(os.listdir(os.path.join(p1, "offsets"))) == sorted([named, "2.0"])
    with open(os.path.join(p0, "offsets", "1.7"), "rb") as f:
        assert f.read() == (4).to_bytes(8, "little")
    c.close()
    assert srv.stop() == 0
    db = sqlite3.connect(os.path.join(srv.data_dir, "metadata.db"))
    assert not [k for (k,) in db.execute("SELECT key FROM kv") if "offset" in k]
    db.close()
    srv.start()
    c = BlockingClient(srv.address)
    c.login()
    assert stored(c, 1, 7, 0) == 4 and stored(c, 1, "named", 1) == 6
    assert [stored(c, 1, consumer, 0) for consumer in range(100, 120)] == list(range(10)) * 2
    assert stored(c, 1, 8, 1) is None                              # still deleted
    assert stored(c, 2, "g", 1) == 2
    c.call(604, group)
    polled = c.poll("s", "t", 1, NEXT, 0, 1, auto_commit=True, consumer_id="g",
                    consumer_kind=2)
    assert _wire.iter_messages(memoryview(polled.body)[16:])[0][0] == 3
    # A purge forgets every offset of the topic, on disk too.
    c.call(305, _wire.Writer().identifier("s").identifier("t").getvalue())
    assert stored(c, 1, 7, 0) is None and os.listdir(os.path.join(p0, "offsets")) == []
    c.close()


def test_persisted_offsets_are_synced_before_the_reply(fresh_server, tmp_path):
    srv = fresh_server.start()
    c = setup(srv, option("consumer_offset_durability", 2, b"persisted"))
    path = os.path.join(srv.data_path(0, 0, 0), "offsets", "1.7")
    with Strace(srv.proc.pid, str(tmp_path / "trace")) as st:
        c.call(121, offset_body(1, 7, 0).u64(4).getvalue())
        c.call(121, offset_body(1, 7, 0).u64(5).getvalue())
    opened, synced = {}, 0
    for _, name, args, result in st.calls():
        if name == "openat":
            opened[result] = args.split('"')[1]
        elif name in ("fsync", "fdatasync") and opened.get(int(args)) == path:
            synced += 1
    assert synced == 2
    assert stored(c, 1, 7, 0) == 5
    c.close()
