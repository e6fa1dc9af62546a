"""Two builds of the server side by side in one run: ingest and poll, as ratios.

Starts server A and server B, each from its own Python (a virtualenv with that build
installed), on free ports with temporary data directories, then alternates the same workloads
between them round after round (order swapped every round), so both meet the same noise:

  sdk-send    the official SDK (apache-iggy, default settings), 1000 x 1000 B per send
  sdk-poll    the official SDK polling the same topic back by offset, 1000 per poll
  bench-send  `iggy-fast bench pinned-producer` (our client, this checkout's bench tool)
  bench-poll  `iggy-fast bench pinned-consumer`

It prints every round and, per workload and server, the median throughput and the median
server CPU time per 1000 messages (from /proc: robust where throughput is at the mercy of a
shared machine), with B/A for both. Typical use, the build at the start of a change against
the one at its end:

  python bench/ab_servers.py --a /path/to/old-venv/bin/python --b .venv/bin/python --rounds 5

or one build under two settings (environment variables for one side), such as the metrics off
and on:

  python bench/ab_servers.py --a .venv/bin/python --b .venv/bin/python \
      --a-env IGGY_HTTP_METRICS_ENABLED=false --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from apache_iggy import Consumer, IggyClient, PollingStrategy
from apache_iggy import SendMessage as Message

from iggy_fast.testing import ServerProcess

PAYLOAD = os.urandom(1000)


class Server(ServerProcess):
    """One build's server: `python` is the interpreter of the virtualenv it is installed in.
    Started from a temporary directory, so that each Python imports its own installed build."""

    def __init__(self, python: str, env: list[str]):
        super().__init__(python=python, cwd="/", env=dict(e.split("=", 1) for e in env))
        self.start()

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        super().stop()
        self.cleanup()


async def sdk_send_and_poll(address: str, stream: str, batches: int) -> tuple[float, float]:
    client = IggyClient(address)
    await client.connect()
    await client.login_user("iggy", "iggy")
    await client.create_stream(stream)
    await client.create_topic(stream=stream, name="t", partitions_count=1)
    start = time.perf_counter()
    for _ in range(batches):
        await client.send_messages(stream, "t", 0, [Message(PAYLOAD) for _ in range(1000)])
    send = batches * 1000 / (time.perf_counter() - start)
    start = time.perf_counter()
    offset = 0
    while offset < batches * 1000:
        got = await client.poll_messages(stream=stream, topic="t", partition_id=0,
                                         consumer=Consumer.Single(1),
                                         polling_strategy=PollingStrategy.Offset(offset),
                                         count=1000, auto_commit=False)
        offset += len(got)
    poll = batches * 1000 / (time.perf_counter() - start)
    return send, poll


def bench(kind: str, address: str, batches: int, per_batch: int) -> float:
    out = tempfile.mktemp(suffix=".json")
    subprocess.run([sys.executable, "-m", "iggy_fast.cli", "bench", kind, "--address", address,
                    "--batches", str(batches), "--messages-per-batch", str(per_batch),
                    "--quiet", "--output", out],
                   check=True, stdout=subprocess.DEVNULL)
    with open(out) as f:
        report = json.load(f)
    os.unlink(out)
    role = "producer" if kind == "pinned-producer" else "consumer"
    return report["totals"][role]["messages_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", required=True, help="Python of build A (the baseline)")
    parser.add_argument("--b", required=True, help="Python of build B")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=300,
                        help="1000-message batches per workload and round")
    parser.add_argument("--a-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for server A (repeatable)")
    parser.add_argument("--b-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for server B (repeatable)")
    parser.add_argument("--messages-per-batch", type=int, default=1000,
                        help="for the bench-* workloads, which then send as many messages "
                             "in more (or fewer) batches (sdk-* always send 1000 per batch)")
    args = parser.parse_args()
    servers = {"A": Server(args.a, args.a_env), "B": Server(args.b, args.b_env)}
    per_batch = args.messages_per_batch
    bench_batches = max(1, args.batches * 1000 // per_batch)
    workloads = ("sdk-send+poll", "bench-send", "bench-poll")
    results: dict = {w: {"A": [], "B": []} for w in ("sdk-send", "sdk-poll") + workloads[1:]}
    cpu: dict = {w: {"A": [], "B": []} for w in workloads}
    print(f"rounds {args.rounds}, {args.batches * 1000} messages of 1000 B per workload "
          f"(bench-* {per_batch} per batch, sdk-* 1000); A env {args.a_env}, B env "
          f"{args.b_env}; load {os.getloadavg()[0]:.1f}", flush=True)
    try:
        for rnd in range(args.rounds):
            order = ["A", "B"] if rnd % 2 == 0 else ["B", "A"]
            for name in order:
                server = servers[name]
                used = server.cpu_seconds()

                def spent(workload, messages):
                    nonlocal used
                    now = server.cpu_seconds()
                    cpu[workload][name].append((now - used) / messages * 1000 * 1e6)
                    used = now

                send, poll = asyncio.run(sdk_send_and_poll(server.address, f"r{rnd}",
                                                           args.batches))
                spent("sdk-send+poll", 2 * args.batches * 1000)
                row = {"sdk-send": send, "sdk-poll": poll,
                       "bench-send": bench("pinned-producer", server.address,
                                           bench_batches, per_batch)}
                spent("bench-send", args.batches * 1000)
                # pinned-consumer fills its stream first: the CPU counts both phases.
                row["bench-poll"] = bench("pinned-consumer", server.address, bench_batches,
                                          per_batch)
                spent("bench-poll", 2 * args.batches * 1000)
                for w, v in row.items():
                    results[w][name].append(v)
                print(f"round {rnd} {name}: " + "  ".join(f"{w} {v:,.0f}"
                                                         for w, v in row.items()), flush=True)
    finally:
        for server in servers.values():
            server.stop()
    print("\nmedian msg/s            A            B       B/A")
    for w, by in results.items():
        a, b = statistics.median(by["A"]), statistics.median(by["B"])
        print(f"{w:<16}{a:>13,.0f}{b:>13,.0f}{b / a:>10.2f}")
    print("\nserver CPU us per 1000 messages (median)")
    for w, by in cpu.items():
        a, b = statistics.median(by["A"]), statistics.median(by["B"])
        print(f"{w:<16}{a:>13,.0f}{b:>13,.0f}{b / a:>10.2f}")


if __name__ == "__main__":
    main()
