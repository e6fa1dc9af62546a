"""CPU milliseconds per batch of the client and of the server, per transport: what a shared,
loaded machine can still measure when wall-clock throughput mostly shows the load.

    python bench/transport_cpu.py [--batches 200] [--transports tcp,http]

One server (fsync off); per transport one client of bench/links.py (what
`iggy-fast bench` actors use: BlockingClient for TCP, the async client's Link otherwise),
driven in this process: `--batches` sends of one batch of 1000 x 1000 B, then polls by offset
until all are read back. For each phase: wall ms per batch, this process's CPU ms per batch
(os.times) and the server's (utime + stime from /proc/PID/stat), each also as the part spent
in the kernel ("sys"): on loopback that is mostly the copies into and out of the sockets.
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


def server_cpu(pid: int) -> tuple[float, float]:
    """Seconds of CPU the process has used: (user + system, system)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, int(fields[12]) / tick


def client_cpu() -> tuple[float, float]:
    """Seconds of CPU this process has used: (user + system, system)."""
    times = os.times()
    return times.user + times.system, times.system


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
                wall, cpu, srv = time.perf_counter(), client_cpu(), server_cpu(server.proc.pid)
                run()
                n = args.batches / 1000
                cpu2, srv2 = client_cpu(), server_cpu(server.proc.pid)
                print(f"{transport:<6}{phase:<5} wall {(time.perf_counter() - wall) / n:6.2f}"
                      f"  client cpu {(cpu2[0] - cpu[0]) / n:5.2f} (sys {(cpu2[1] - cpu[1]) / n:4.2f})"
                      f"  server cpu {(srv2[0] - srv[0]) / n:5.2f} (sys {(srv2[1] - srv[1]) / n:4.2f})")
            client.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
