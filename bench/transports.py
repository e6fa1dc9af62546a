"""Producer and consumer throughput per transport, on one server in one run, with the OFFICIAL
Python SDK (apache-iggy 0.9.0): the same client code for every transport, only the
connection string differs, so the ratios are the transports'.

For each transport and round: one producer sends `--batches` batches of `--batch` messages of
`--size` bytes (a fresh stream and topic, one partition), then one consumer polls them back,
`--batch` at a time, from offset 0 (checking the count). Rounds alternate the order of the
transports; the median round is reported, with each transport's ratio to the first one, and
the CPU time the server process and this client process (the SDK's threads) spent per 1000
messages: on a shared machine the rates swing with the load, the CPU times much less.

    python bench/transports.py                       # tcp and ws, 100 x 1000 x 1000 B, 5 rounds
    python bench/transports.py --transports tcp,ws,quic,http --rounds 3

A transport whose connection fails (one this server does not have yet) is reported as
unavailable, not measured. The server is started here (fsync off, every transport on, free
ports); its TCP_NODELAY and the SDK's defaults are as shipped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import time

from apache_iggy import Consumer, IggyClient, PollingStrategy
from apache_iggy import SendMessage as Message

from iggy_fast.bench.runner import LocalServer

# transport -> connection string for a server (ServerProcess) with the root user iggy/iggy
CONNECTION = {
    "tcp": lambda s: f"iggy+tcp://iggy:iggy@127.0.0.1:{s.tcp_port}",
    "ws": lambda s: f"iggy+ws://iggy:iggy@127.0.0.1:{s.websocket_port}",
    "quic": lambda s: f"iggy+quic://iggy:iggy@127.0.0.1:{s.quic_port}",
    "http": lambda s: f"iggy+http://iggy:iggy@127.0.0.1:{s.http_port}",
}


async def connect(server, transport: str) -> IggyClient:
    c = IggyClient.from_connection_string(CONNECTION[transport](server))
    await asyncio.wait_for(c.connect(), 10)
    await asyncio.wait_for(c.ping(), 10)
    return c


def server_cpu(server) -> float:
    """CPU seconds the server process has used (user + system)."""
    with open(f"/proc/{server.proc.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_cpu() -> float:
    """CPU seconds this process (the SDK's threads included) has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Phase:
    """Wall time and the server's and the client's CPU time of one phase."""

    def __init__(self, server):
        self.server = server

    def __enter__(self):
        self.wall, self.srv, self.cli = time.perf_counter(), server_cpu(self.server), client_cpu()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.srv = server_cpu(self.server) - self.srv
        self.cli = client_cpu() - self.cli


async def one_round(server, client: IggyClient, name: str, args) -> tuple[Phase, Phase]:
    """The producer's and the consumer's Phase."""
    await client.create_stream(name)
    await client.create_topic(stream=name, name="t", partitions_count=1)
    payload = os.urandom(args.size)
    # The SDK consumes the message objects: fresh ones per send, made before the clock starts
    # (what they cost is the same whatever carries them).
    batches = [[Message(payload) for _ in range(args.batch)] for _ in range(args.batches)]
    with Phase(server) as produced:
        for batch in batches:
            await client.send_messages(name, "t", 0, batch)
    total = args.batches * args.batch
    with Phase(server) as consumed:
        offset = 0
        while offset < total:
            got = await client.poll_messages(stream=name, topic="t", partition_id=0,
                                             consumer=Consumer.Single(1),
                                             polling_strategy=PollingStrategy.Offset(offset),
                                             count=args.batch, auto_commit=False)
            if not got:
                raise RuntimeError(f"{name}: nothing at offset {offset} of {total}")
            offset += len(got)
    await client.delete_stream(name)
    return produced, consumed


async def run(args) -> None:
    transports = args.transports.split(",")
    unknown = [t for t in transports if t not in CONNECTION]
    if unknown:
        sys.exit(f"unknown transport(s) {', '.join(unknown)}; known: {', '.join(CONNECTION)}")
    server = LocalServer(fsync=False)
    try:
        clients = {}
        for t in transports:
            try:
                clients[t] = await connect(server, t)
            except Exception as e:      # a transport this server does not serve (yet)
                print(f"{t}: unavailable ({type(e).__name__}: {e})")
        phases: dict[str, list[tuple[Phase, Phase]]] = {t: [] for t in clients}
        order = list(clients)
        total = args.batches * args.batch
        for r in range(args.rounds):
            for t in (order if r % 2 == 0 else order[::-1]):
                p, c = await one_round(server, clients[t], f"bench-{t}-{r}", args)
                phases[t].append((p, c))
                print(f"round {r + 1} {t:>5}: producer {total / p.wall:>10,.0f} msg/s  "
                      f"consumer {total / c.wall:>10,.0f} msg/s", flush=True)
    finally:
        server.stop()
    if not phases:
        return
    mb = args.size / 1e6
    per = total / 1000
    print(f"\nofficial SDK, {args.batches} x {args.batch} x {args.size} B per round, "
          f"median of {args.rounds} rounds; CPU ms per 1000 messages (server / client):")
    print(f"{'transport':>9} | {'producer msg/s':>14} | {'MB/s':>5} | {'CPU ms':>11} | "
          f"{'consumer msg/s':>14} | {'MB/s':>5} | {'CPU ms':>11} | vs {order[0]}")
    base = None
    for t in order:
        row = []
        for i in (0, 1):
            runs = [x[i] for x in phases[t]]
            row.append((total / statistics.median(x.wall for x in runs),
                        statistics.median(x.srv for x in runs) * 1000 / per,
                        statistics.median(x.cli for x in runs) * 1000 / per))
        base = base or row
        cells = " | ".join(f"{rate:>14,.0f} | {rate * mb:>5,.0f} | {srv:>4.2f} / {cli:>4.2f}"
                           for rate, srv, cli in row)
        print(f"{t:>9} | {cells} | {row[0][0] / base[0][0]:.2f} / {row[1][0] / base[1][0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transports", default="tcp,ws",
                        help=f"comma-separated, the first is the reference ({', '.join(CONNECTION)})")
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1000, help="messages per send and poll")
    parser.add_argument("--size", type=int, default=1000, help="payload bytes per message")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"settings: {vars(args)}")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
