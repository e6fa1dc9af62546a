"""Error replies that say what they refuse, on the real server: a refused topic option is
logged with its key and value (the reply carries only the code), topic-level and
server-level segment sizes obey one rule, and a full disk answers Iggy's specific code for
the operation (1006 stream, 2006 topic, 3023 consumer offset), never the generic 1, while the
server keeps serving.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid

import pytest

from conftest import ServerProcess
from iggy_fast import _wire
from iggy_fast.client import BlockingClient
from iggy_fast.protocol.errors import IggyError

STRING, UINT64 = 2, 12


def option(name: str, kind: int, value: bytes) -> bytes:
    """One topic option as the SDK's typed TLV entry (STRING key)."""
    return (b"\x02" + len(name).to_bytes(4, "little") + name.encode()
            + bytes([kind]) + len(value).to_bytes(4, "little") + value)


def create_topic(c, stream, name, options=b"", partitions=1):
    return c.call(302, _wire.Writer().identifier(stream).u32(partitions).name(name)
                  .raw(options).getvalue())


def code_of(fn) -> int:
    with pytest.raises(IggyError) as e:
        fn()
    return e.value.code


def test_topic_option_refusals_name_the_key_and_value(server):
    with BlockingClient(server.address) as c:
        c.login()
        s = f"opts-{uuid.uuid4().hex[:8]}"
        c.call(202, _wire.Writer().name(s).getvalue())
        # Valid server-wide, so valid for a topic: typed and as text (the tester's report:
        # refused with an empty key name in the message, and nothing logged).
        create_topic(c, s, "typed",
                     option("segment_size", UINT64, (100000000).to_bytes(8, "little")))
        create_topic(c, s, "text", option("segment_size", STRING, b"100000000"))
        cases = [
            ("tiny", option("segment_size", UINT64, (100).to_bytes(8, "little")), 4042,
             "'segment_size': 100 must be"),
            ("words", option("message_expiry", STRING, b"someday"), 4042,
             "'message_expiry': 'someday' is not a valid value"),
            ("nokind", option("enforce_fsync", STRING, b"perhaps"), 4042,
             "'enforce_fsync': 'perhaps' is not a valid value"),
            ("small", option("max_topic_size", STRING, b"4 KiB")
             + option("segment_size", STRING, b"8 KiB"), 1019,
             "'max_topic_size': 4096 is smaller than one segment (8192 bytes)"),
        ]
        for name, options, expected, message in cases:
            assert code_of(lambda: create_topic(c, s, name, options)) == expected, name
        body = (_wire.Writer().identifier(s).identifier("typed").name("typed")
                .raw(option("segment_size", STRING, b"8 MiB")).getvalue())
        assert code_of(lambda: c.call(304, body)) == 4041
        c.ping()
    log = server.log()
    for _, _, _, message in cases:
        assert f"topic options refused: option {message}" in log, message
    assert "option 'segment_size' cannot be updated" in log


def test_a_server_wide_segment_size_a_topic_could_not_have_is_refused(tmp_path):
    srv = ServerProcess(tmp_path / "small", env={"IGGY_SYSTEM_SEGMENT_SIZE": "1 KiB"})
    with pytest.raises(RuntimeError) as e:
        srv.start()
    assert "system.segment.size: '1 KiB' must be 4096 bytes" in str(e.value)


# -- a full disk ---------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (root only): a file filling it makes every write fail with ENOSPC."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to mount a tmpfs")
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                        capture_output=True, text=True)
    if ok.returncode != 0:
        pytest.skip(f"mount tmpfs: {ok.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(mount) -> None:
    st = os.statvfs(mount)
    with open(mount / "filler", "wb") as f:
        try:
            f.write(b"\0" * (st.f_bavail * st.f_frsize))
            f.flush()
        except OSError:
            pass
    assert os.statvfs(mount).f_bavail == 0


def test_a_full_disk_answers_the_specific_code_and_the_server_serves_on(small_disk, spawn):
    srv = spawn(small_disk / "data")
    with BlockingClient(srv.address) as c:
        c.login()
        c.call(202, _wire.Writer().name("s").getvalue())
        create_topic(c, "s", "t")
        c.send_batch("s", "t", 0, _wire.build_batch([(1, b"x" * 100, b"", 0)], 1), 1)
        fill(small_disk)
        store = (_wire.Writer().u8(1).identifier(7).identifier("s").identifier("t").u8(1)
                 .u32(0).u64(0).getvalue())
        assert code_of(lambda: c.call(202, _wire.Writer().name("s2").getvalue())) == 1006
        assert code_of(lambda: create_topic(c, "s", "t2")) == 2006
        assert code_of(lambda: c.call(121, store)) == 3023
        c.ping()
        assert c.call(201).body.nbytes > 0                   # and reads are served
        (small_disk / "filler").unlink()
        # With room again, the same requests succeed.
        c.call(202, _wire.Writer().name("s2").getvalue())
        create_topic(c, "s", "t2")
        c.call(121, store)
    log = srv.log()
    assert "Traceback" not in log, log
    assert re.search(r"cannot create stream 's2': .*full", log), log
    assert "cannot store consumer offset 1.7" in log
