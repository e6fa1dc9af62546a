"""A poll served by sendfile(2) against the same poll served by pread + write, one run.

    python bench/bench_sendfile.py [batches]

Runs the peers' iggy-fast workload (fill, then one consumer reading everything back with
1000-message polls) on servers with tcp.sendfile on and off, alternating, best of 3 each.
"""

import os
import sys

from peers import iggy


def consume_rate(sendfile: bool, messages: int) -> float:
    os.environ["IGGY_TCP_SENDFILE"] = "true" if sendfile else "false"
    return iggy(messages)[1]


def main():
    messages = (int(sys.argv[1]) if len(sys.argv) > 1 else 500) * 1000
    best = {True: 0.0, False: 0.0}
    for _ in range(3):
        for sendfile in best:
            best[sendfile] = max(best[sendfile], consume_rate(sendfile, messages))
    on, off = best[True], best[False]
    print(f"poll, 1000 x 1000 B per poll, {messages:,} messages, best of 3:")
    print(f"  sendfile   {on:12,.0f} msg/s  {on * 1.048 / 1000:8,.0f} MB/s")
    print(f"  pread+copy {off:12,.0f} msg/s  {off * 1.048 / 1000:8,.0f} MB/s")
    print(f"  ratio      {on / off:.2f}")


if __name__ == "__main__":
    main()
