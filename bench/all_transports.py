"""`iggy-fast bench` over every transport in one run, as ratios to plain TCP.

One server (fsync off, every transport on, free ports) serves TCP, QUIC, WebSocket and HTTP.
TLS-TCP needs the TCP listener itself to speak TLS, so it gets a second server started the
same way with `[tcp.tls]` on (a self-signed certificate, which the actors validate); both run
for the whole script, the idle one costing nothing. For each transport and round,
`iggy-fast bench pinned-producer-and-consumer --transport T` runs one producer and one
consumer at the same time (`--batches` batches of `--messages` x `--size` bytes, a fresh
stream each run). Rounds rotate the order of the transports; each transport's median round is
reported, producer and consumer msg/s with their ratio to TCP's, and the load average before
and after (the machine is shared).

    python bench/all_transports.py [--batches 200] [--messages 1000] [--size 1000] [--rounds 3]
                                   [--only tcp,ws,http]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from iggy_fast.bench.runner import LocalServer, local_address

TRANSPORTS = ("tcp", "tls", "quic", "ws", "http")


def bench(transport: str, address: str, ca_file: str | None, args) -> dict:
    """msg/s of the producer and the consumer of one `iggy-fast bench` run."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, "-m", "iggy_fast.cli", "bench", "pinned-producer-and-consumer",
               "--transport", transport, "--address", address, "--batches", str(args.batches),
               "--messages-per-batch", str(args.messages), "--message-size", str(args.size),
               "--quiet", "--output", out.name]
        if ca_file:
            cmd += ["--tls-ca-file", ca_file]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if proc.returncode:
            raise SystemExit(f"{transport}: iggy-fast bench failed\n{proc.stderr[-2000:]}")
        totals = json.load(open(out.name))["totals"]
    return {role: totals[role]["messages_per_second"] for role in ("producer", "consumer")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--messages", type=int, default=1000, help="messages per batch")
    parser.add_argument("--size", type=int, default=1000, help="bytes per message")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=",".join(TRANSPORTS),
                        help="comma-separated transports to run (tcp, the reference, always)")
    args = parser.parse_args()
    unknown = set(args.only.split(",")) - set(TRANSPORTS)
    if unknown:
        parser.error(f"--only: unknown transport(s) {', '.join(sorted(unknown))}; "
                     f"known: {', '.join(TRANSPORTS)}")
    transports = tuple(t for t in TRANSPORTS if t == "tcp" or t in args.only.split(","))
    load_before = os.getloadavg()
    plain = LocalServer(fsync=False)
    tls = LocalServer(fsync=False, tls=True) if "tls" in transports else None
    runs: dict[str, list[dict]] = {t: [] for t in transports}
    try:
        for r in range(args.rounds):
            order = transports[r % len(transports):] + transports[:r % len(transports)]
            for transport in order:
                server = tls if transport == "tls" else plain
                runs[transport].append(bench(transport, local_address(server, transport),
                                             server.ca_file, args))
                print(f"round {r + 1} {transport}: {runs[transport][-1]}", file=sys.stderr)
    finally:
        plain.stop()
        if tls is not None:
            tls.stop()
    load_after = os.getloadavg()
    median = {t: {role: statistics.median(run[role] for run in runs[t])
                  for role in ("producer", "consumer")} for t in transports}
    print(f"one producer and one consumer at once, {args.batches} batches of {args.messages} x "
          f"{args.size} B; median of {args.rounds} rounds; load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print(f"{'transport':<10}{'producer msg/s':>16}{'ratio':>8}{'consumer msg/s':>16}"
          f"{'ratio':>8}")
    for t in transports:
        p, c = median[t]["producer"], median[t]["consumer"]
        print(f"{t:<10}{p:>16,.0f}{p / median['tcp']['producer']:>8.2f}"
              f"{c:>16,.0f}{c / median['tcp']['consumer']:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
