"""Send latency of the OFFICIAL Python SDK (apache-iggy 0.9.0) at its default settings (Nagle on,
`nodelay` off) over a sweep of batch sizes, against a server with `[tcp] quickack` on and one
with it off, alternating in one run; plus our own blocking client against the first.

    python bench/sdk_latency_sweep.py [--tls] [--fsync] [--sends 20] [--rounds 3]

The SDK writes a request of roughly 8-64 KB in two pieces; with Nagle on, the second waits for
the ACK of the first, which a server with delayed ACKs holds for 40 ms. With quickack on, the
server ACKs every read that leaves a frame incomplete at once. Both servers are started here,
each with its own temporary data directory; every round sends `--sends` batches of each size to
each server in turn, and the table gives each server's median over all rounds, in ms, and in
brackets how many of the sends took 30 ms or more (waited for a delayed ACK) when any did.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from apache_iggy import IggyClient, TcpConfig
from apache_iggy import SendMessage as Message

from iggy_fast.bench.actors import connect, make_batch
from iggy_fast.bench.runner import LocalServer

# (messages per send, bytes per message): the sweep of the issue.
SIZES = ((1, 128), (10, 128), (50, 128), (100, 128), (300, 128),
         (50, 1000), (200, 1000), (1000, 1000))
STALL_MS = 30.0     # a delayed ACK holds a request 40 ms


async def sdk_client(server: LocalServer) -> IggyClient:
    """The official client with every setting at its default but the address (and TLS)."""
    if server.ca_file:
        client = IggyClient(TcpConfig(server_address=server.address, tls_enabled=True,
                                      tls_domain="localhost", tls_ca_file=server.ca_file,
                                      tls_validate_certificate=True))
    else:
        client = IggyClient(server.address)
    await client.connect()
    await client.login_user("iggy", "iggy")
    return client


async def prepare(client: IggyClient) -> None:
    await client.create_stream("sweep")
    await client.create_topic(stream="sweep", name="t", partitions_count=1)


async def sdk_sends(client: IggyClient, count: int, size: int, sends: int) -> list[float]:
    """`sends` round trips of one batch, each in ms (the message objects are made outside the
    timing: the SDK consumes them)."""
    payload = os.urandom(size)
    out = []
    for _ in range(sends):
        batch = [Message(payload) for _ in range(count)]
        t0 = time.perf_counter()
        await client.send_messages("sweep", "t", 0, batch)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def own_sends(client, count: int, size: int, sends: int) -> list[float]:
    batch = make_batch(count, size)
    out = []
    for _ in range(sends):
        t0 = time.perf_counter()
        client.send_batch("sweep", "t", 0, batch, count)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


async def sweep(args) -> dict:
    tls = args.tls
    servers = {"quickack on": LocalServer(args.fsync, tls=tls, env={"IGGY_TCP_QUICKACK": "true"}),
               "quickack off": LocalServer(args.fsync, tls=tls, env={"IGGY_TCP_QUICKACK": "false"})}
    samples = {(name, size): [] for name in [*servers, "ours, quickack on"] for size in SIZES}
    try:
        clients = {name: await sdk_client(srv) for name, srv in servers.items()}
        for client in clients.values():
            await prepare(client)
        on = servers["quickack on"]
        own = connect({"address": on.address, "tls": tls, "tls_ca_file": on.ca_file})
        for _ in range(args.rounds):
            for size in SIZES:
                for name, client in clients.items():
                    samples[name, size] += await sdk_sends(client, *size, args.sends)
                samples["ours, quickack on", size] += own_sends(own, *size, args.sends)
        own.close()
    finally:
        for srv in servers.values():
            srv.stop()
    return {key: (statistics.median(values), sum(v >= STALL_MS for v in values))
            for key, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tls", action="store_true", help="TCP over TLS")
    parser.add_argument("--fsync", action="store_true",
                        help="the servers enforce fsync on every partition")
    parser.add_argument("--sends", type=int, default=20, help="sends per size per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    medians = asyncio.run(sweep(args))
    columns = ["quickack off", "quickack on", "ours, quickack on"]
    print(f"send latency median, ms ({'TLS' if args.tls else 'TCP'}, fsync "
          f"{'on' if args.fsync else 'off'}, {args.rounds} x {args.sends} sends per size, "
          f"load average before the run {load}); SDK = apache-iggy at its defaults")
    print(f"{'batch':<14}" + "".join(f"{'SDK, ' + c if 'ours' not in c else c:>22}"
                                     for c in columns))
    for size in SIZES:
        cells = []
        for c in columns:
            median, stalled = medians[c, size]
            cells.append(f"{median:.2f}" + (f" ({stalled}/{args.rounds * args.sends})"
                                            if stalled else ""))
        print(f"{f'{size[0]} x {size[1]} B':<14}" + "".join(f"{cell:>22}" for cell in cells))


if __name__ == "__main__":
    main()
