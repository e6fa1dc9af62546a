"""kill -9 at random moments under load, 20 times per mode: after each restart every
acknowledged message is present and byte-identical, offsets are dense, nothing is duplicated
and every batch served passes its checksums. The seed is printed; set CRASH_SEED to replay."""

from __future__ import annotations

import os
import random
import threading
import time

import pytest

from conftest import ServerProcess
from iggy_fast import _wire
from iggy_fast._log import verify_batches
from iggy_fast.client import BlockingClient

KILLS = 20


def produce(address, seed, acked, stop):
    """Send numbered batches until the server dies; record what was acknowledged."""
    rng = random.Random(seed)
    try:
        c = BlockingClient(address, timeout=5)
        c.login()
        while not stop.is_set():
            n = rng.randint(1, 50)
            tag = rng.getrandbits(48)
            msgs = [((tag << 16) | i, b"%012x:%04d:" % (tag, i) + os.urandom(rng.randint(1, 600)),
                     b"", i) for i in range(n)]
            batch = _wire.build_batch(msgs, 1)
            base = c.send_batch("s", "t", 0, batch, n)
            acked.append((base, [m[1] for m in msgs]))
    except (ConnectionError, OSError):
        return


def check(address, acked):
    c = BlockingClient(address)
    c.login()
    served: list = []
    while True:                 # a reply carries at most max_poll_size: read on until the end
        reply = c.poll("s", "t", 0, 1, len(served), 10_000_000)
        body = memoryview(reply.body)[16:]
        valid_bytes, _ = verify_batches(body)
        assert valid_bytes == len(body), f"corrupt batch served at byte {valid_bytes}"
        got = _wire.iter_messages(body)
        if not got:
            break
        served += got
    offsets = [m[0] for m in served]
    assert offsets == list(range(len(offsets))), "offsets are not dense"
    ids = [m[3] for m in served]
    assert len(set(ids)) == len(ids), "a message was stored twice"
    for base, payloads in acked:
        got = [m[4] for m in served[base:base + len(payloads)]]
        assert got == payloads, f"acknowledged batch at {base} lost or altered"
    c.close()
    return len(served)


@pytest.mark.parametrize("fsync", [True, False], ids=["fsync", "no-fsync"])
def test_kill_9_under_load_loses_nothing_acknowledged(tmp_path, fsync):
    seed = int(os.environ.get("CRASH_SEED", random.randrange(1 << 30)))
    print(f"crash test seed {seed} (fsync={fsync})")
    rng = random.Random(seed)
    srv = ServerProcess(tmp_path / "crash", env={"IGGY_SYSTEM_SEGMENT_SIZE": "256 KiB"}).start()
    c = BlockingClient(srv.address)
    c.login()
    c.call(202, _wire.Writer().name("s").getvalue())
    options = b""
    if fsync:
        options = (b"\x02" + (13).to_bytes(4, "little") + b"enforce_fsync"
                   + b"\x03" + (1).to_bytes(4, "little") + b"\x01")
    c.call(302, _wire.Writer().identifier("s").u32(1).name("t").raw(options).getvalue())
    c.close()
    acked: list = []
    total = 0
    for round_no in range(KILLS):
        stop = threading.Event()
        worker = threading.Thread(target=produce,
                                  args=(srv.address, rng.randrange(1 << 30), acked, stop))
        worker.start()
        time.sleep(rng.uniform(0.02, 0.3))
        srv.kill()
        stop.set()
        worker.join(10)
        srv.start()
        total = check(srv.address, acked)
    assert total >= sum(len(p) for _, p in acked) > 0
    assert srv.stop() == 0
