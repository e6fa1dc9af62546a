"""XXH3-64 throughput of our C implementation (iggy_fast._wire) next to the xxhash package.

    python bench/bench_checksum.py            # 1 MiB buffer, 2000 rounds each, same run
"""

import os
import sys
import time

import xxhash

from iggy_fast import _wire


def rate(fn, data, rounds):
    start = time.perf_counter()
    for _ in range(rounds):
        fn(data)
    return rounds * len(data) / (time.perf_counter() - start) / 1e9


def main():
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 1 << 20
    data = os.urandom(size)
    ours = rate(_wire.xxh3_64, data, 2000)
    theirs = rate(xxhash.xxh3_64_intdigest, data, 2000)
    print(f"buffer {size} B: iggy_fast {ours:.1f} GB/s, xxhash {theirs:.1f} GB/s, "
          f"ratio {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
