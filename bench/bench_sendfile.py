"""A poll served by sendfile(2) against the same poll served by pread + write, one run.

    python bench/bench_sendfile.py [batches]

Starts two servers (tcp.sendfile on and off), fills each with the same data, warms the page
cache, then times one consumer reading everything back with 1000-message polls.
"""

import os
import sys
import time

from iggy_fast.bench.actors import make_batch
from iggy_fast.bench.runner import LocalServer
from iggy_fast import _wire
from iggy_fast.client import BlockingClient


def measure(sendfile: bool, batches: int) -> float:
    os.environ["IGGY_TCP_SENDFILE"] = "true" if sendfile else "false"
    server = LocalServer(fsync=False)
    try:
        c = BlockingClient(server.address)
        c.login()
        c.call(202, _wire.Writer().name("s").getvalue())
        c.call(302, _wire.Writer().identifier("s").u32(1).name("t").getvalue())
        batch = make_batch(1000, 1000)
        for _ in range(batches):
            c.send_batch("s", "t", 0, batch, 1000)
        best = 0.0
        for _ in range(3):
            got, start = 0, time.perf_counter()
            while got < batches * 1000:
                reply = c.poll("s", "t", 0, 1, got, 1000)
                got += int.from_bytes(reply.body[12:16], "little")
            best = max(best, got / (time.perf_counter() - start))
        return best
    finally:
        server.stop()


def main():
    batches = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    on = measure(True, batches)
    off = measure(False, batches)
    print(f"poll, 1000 x 1000 B per poll, {batches} polls, best of 3:")
    print(f"  sendfile   {on:12,.0f} msg/s  {on * 1.048 / 1000:8,.0f} MB/s")
    print(f"  pread+copy {off:12,.0f} msg/s  {off * 1.048 / 1000:8,.0f} MB/s")
    print(f"  ratio      {on / off:.2f}")


if __name__ == "__main__":
    main()
