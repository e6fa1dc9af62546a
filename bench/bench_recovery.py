"""Recovery time of a 1 GiB partition (one 1 GiB segment of 1000 x 1000 B batches).

    python bench/bench_recovery.py [GiB]

Times opening the partition: after a clean stop (index complete), after a crash (the last 63
index entries unwritten, a torn batch at the end), and with the index lost (every batch
re-read, verified and re-indexed). The page cache is warm: this is CPU cost, not disk.
"""

import os
import shutil
import sys
import tempfile
import time

from iggy_fast.bench.actors import make_batch
from iggy_fast.server.storage.log import PartitionLog


def timed_open(directory):
    start = time.perf_counter()
    plog = PartitionLog(directory, 0, 1 << 30)
    seconds = time.perf_counter() - start
    messages = plog.next_offset
    plog.close()
    return seconds, messages


def main():
    gib = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    root = tempfile.mkdtemp(prefix="iggy-recovery-")
    directory = os.path.join(root, "p0")
    try:
        plog = PartitionLog(directory, 0, 1 << 31)
        batch = make_batch(1000, 1000)
        batches = int(gib * (1 << 30) / len(batch))
        for i in range(batches):
            plog.append(bytearray(batch), 1000, i + 1)
        plog.close()
        size = sum(os.path.getsize(os.path.join(directory, n)) for n in os.listdir(directory)
                   if n.endswith(".log"))
        print(f"partition: {size / (1 << 30):.2f} GiB, {batches} batches")
        clean, n = timed_open(directory)
        print(f"clean stop:  {clean * 1000:8.1f} ms  ({n:,} messages)")
        index = [os.path.join(directory, f) for f in os.listdir(directory)
                 if f.endswith(".index")][0]
        with open(index, "r+b") as f:
            f.truncate(os.path.getsize(index) - 63 * 24)
        with open(index.replace(".index", ".log"), "ab") as f:
            f.write(os.urandom(5000))
        crashed, n = timed_open(directory)
        print(f"after crash: {crashed * 1000:8.1f} ms  ({n:,} messages; tail re-verified)")
        os.unlink(index)
        lost, n = timed_open(directory)
        print(f"index lost:  {lost * 1000:8.1f} ms  ({n:,} messages; every batch verified)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
