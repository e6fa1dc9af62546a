"""What leader routing saves: sends through a node that does not lead the partition (it
forwards them) against the same client sending straight to the leader, side by side.

    python bench/cluster_routing.py [rounds]

Starts etcd and three `iggy-fast server` nodes (replication factor 2) on loopback and a topic
of one partition, then dials the node that holds no replica of it with our IggyClient twice:
`route_to_leaders=False` (every send goes to that node, which forwards it to the leader over
the replication address) and `route_to_leaders=True` (the client learns the leader with
GetPartitionLeaders and sends over its own connection to it). Both are logged in, warmed up
and alternate within each round (which goes first alternates too), so load drifts hit both:

1. latency: `sends` sequential sends of one batch of 10 messages of 100 B, each timed
   (p50, p99);
2. throughput: an IggyProducer (direct mode) sending `big` batches of 1000 messages of
   1000 B, one send at a time: messages per second.

Prints one line per round and mode (with, for the throughput part, the CPU milliseconds each
node's process spent per batch: less noisy than rates on a shared machine) and the load
average. Needs `etcd`.
"""

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time

from iggy_fast.client import IggyClient
from iggy_fast.client.producer import IggyProducer
from iggy_fast.server.cluster.dev import EtcdProcess, find_etcd, node

SENDS = 2000
BIG = 200


def cpu(srv) -> float:
    """CPU seconds (user + system) the node's process has used so far."""
    fields = open(f"/proc/{srv.proc.pid}/stat").read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


async def latency(client: IggyClient, sends: int) -> tuple[float, float, float]:
    """p50 and p99 (ms) of `sends` sequential sends of 10 x 100 B, and sends per second."""
    batch = [b"x" * 100] * 10
    times = []
    start = time.perf_counter()
    for _ in range(sends):
        t0 = time.perf_counter()
        await client.send_messages("bench", "t", 0, batch)
        times.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    times.sort()
    return times[len(times) // 2] * 1e3, times[int(len(times) * 0.99)] * 1e3, sends / elapsed


async def throughput(client: IggyClient, batches: int) -> float:
    """Messages per second of an IggyProducer sending 1000 x 1000 B batches one at a time."""
    producer = await IggyProducer(client, "bench", "t", partitioning=0,
                                  batch_length=1000).init()
    payloads = [b"y" * 1000] * 1000
    start = time.perf_counter()
    for _ in range(batches):
        await producer.send(payloads)
    return batches * 1000 / (time.perf_counter() - start)


async def main(rounds: int) -> None:
    etcd = EtcdProcess(find_etcd()).start()
    tmp = tempfile.TemporaryDirectory(prefix="iggy-routing-")
    nodes = {f"n{i}": node(f"n{i}", etcd.endpoint, cluster="routing",
                           data_dir=os.path.join(tmp.name, f"n{i}")) for i in (1, 2, 3)}
    try:
        for n in nodes.values():
            n.start()
        admin = IggyClient(f"iggy://iggy:iggy@{nodes['n1'].address}")
        await admin.connect()
        await admin.create_stream("bench")
        await admin.create_topic("bench", "t", partitions_count=1)
        for _ in range(200):        # until the partition's leader has taken office
            leaders = await admin.get_partition_leaders("bench", "t")
            if leaders[0].node:
                break
            await asyncio.sleep(0.1)
        leader = leaders[0].node
        # The node that holds no replica (replication factor 2 of three nodes), from the
        # cluster's status.
        out = subprocess.run([sys.executable, "-m", "iggy_fast.cli", "cluster", "status",
                              "--etcd-endpoints", etcd.endpoint, "--name", "routing", "--json"],
                             capture_output=True, text=True, timeout=30, check=True)
        replicas = json.loads(out.stdout)["partitions"][0]["replicas"]
        dialled = next(name for name in nodes if name not in replicas)
        url = f"iggy://iggy:iggy@{nodes[dialled].address}"
        print(f"leader {leader} (epoch {leaders[0].epoch}), replicas {replicas}, clients "
              f"dial {dialled}; {load()}")
        clients = {"forwarded": IggyClient(url, route_to_leaders=False),
                   "to the leader": IggyClient(url, route_to_leaders=True)}
        for c in clients.values():
            await c.connect()
            await latency(c, 50)                # log in, learn the leader, warm up
        results = {mode: [] for mode in clients}
        for r in range(rounds):
            order = list(clients) if r % 2 == 0 else list(clients)[::-1]
            for mode in order:
                p50, p99, rate = await latency(clients[mode], SENDS)
                before = {name: cpu(n) for name, n in nodes.items()}
                msgs = await throughput(clients[mode], BIG)
                used = {name: cpu(n) - before[name] for name, n in nodes.items()}
                results[mode].append((p50, p99, rate, msgs))
                per_batch = " ".join(f"{name} {used[name] / BIG * 1e3:5.2f}" for name in nodes)
                print(f"round {r + 1} {mode:<14} send p50 {p50:6.3f} ms  p99 {p99:6.3f} ms  "
                      f"{rate:7.0f} sends/s   1000x1000 B batches: {msgs:9,.0f} msg/s, "
                      f"CPU ms per batch {per_batch}   {load()}")
        for mode, rows in results.items():
            p50s = sorted(row[0] for row in rows)
            msgs = sorted(row[3] for row in rows)
            print(f"{mode:<14} median of rounds: p50 {p50s[len(p50s) // 2]:.3f} ms, "
                  f"{msgs[len(msgs) // 2]:,.0f} msg/s")
        for c in (*clients.values(), admin):
            await c.close()
    finally:
        for n in nodes.values():
            n.stop()
        etcd.cleanup()
        tmp.cleanup()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3))
