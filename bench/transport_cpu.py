"""CPU milliseconds per batch of the client and of the server, per transport: what a shared,
loaded machine can still measure when wall-clock throughput mostly shows the load.

    python bench/transport_cpu.py [--batches 200] [--transports tcp,http]

One server (fsync off); per transport one client of bench/links.py (what
`iggy-fast bench` actors use: BlockingClient for TCP, the async client's Link otherwise),
driven in this process: `--batches` sends of one batch of 1000 x 1000 B, then polls by offset
until all are read back. For each phase: wall ms per batch, this process's CPU ms per batch
(time.process_time) and the server's (utime + stime from /proc/PID/stat).
"""

from __future__ import annotations

import argparse
import os
import time

from iggy_fast import _wire
from iggy_fast.bench.actors import make_batch
from iggy_fast.bench.links import connect
from iggy_fast.bench.runner import LocalServer, local_address

MESSAGES, SIZE = 1000, 1000


def server_cpu(pid: int) -> float:
    """Seconds of CPU the process has used (user + system)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--transports", default="tcp,http")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}; {args.batches} batches of {MESSAGES} x "
          f"{SIZE} B; ms per batch")
    server = LocalServer(fsync=False)
    try:
        for i, transport in enumerate(args.transports.split(",")):
            client = connect({"transport": transport,
                              "address": local_address(server, transport)})
            stream = f"cpu-{i}"
            client.call(202, _wire.Writer().name(stream).getvalue())
            client.call(302, _wire.Writer().identifier(stream).u32(1).name("t").getvalue())
            batch = make_batch(MESSAGES, SIZE)

            def produce():
                for _ in range(args.batches):
                    client.send_batch(stream, "t", 0, batch, MESSAGES)

            def consume():
                offset = 0
                while offset < args.batches * MESSAGES:
                    reply = client.poll(stream, "t", 0, 1, offset, MESSAGES)
                    offset += int.from_bytes(reply.body[12:16], "little")

            for phase, run in (("send", produce), ("poll", consume)):
                wall, cpu, srv = time.perf_counter(), time.process_time(), server_cpu(
                    server.proc.pid)
                run()
                n = args.batches / 1000
                print(f"{transport:<6}{phase:<5} wall {(time.perf_counter() - wall) / n:6.2f}"
                      f"  client cpu {(time.process_time() - cpu) / n:5.2f}"
                      f"  server cpu {(server_cpu(server.proc.pid) - srv) / n:5.2f}")
            client.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
