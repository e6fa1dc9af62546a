"""Ingest with replication factor 2 (and fsync enforced) against one node, same run; then the
send latency of a producer paced at half the single node's rate, on both.

    python bench/cluster_replication.py [rounds]

Each round starts a single node and a two-node cluster (etcd and two `iggy-fast server`
processes, replication factor 2) side by side, then runs `iggy-fast bench pinned-producer
--fsync` (one producer, 1000 batches of 1000 messages of 1000 B) four times:

1. full speed against the single node: its rate R;
2. full speed against node n1 of the cluster;
3. paced at R/2 (`--rate-limit`) against the single node;
4. paced at R/2 against the cluster;

and prints each run's rate and its send latency (each batch's round trip) at p50, p99 and
max, plus, for the paced runs, p99 from each batch's due time (which counts a batch held up
by a slow predecessor), and where the partition's leader was (n1 led it, or the sends were
forwarded). Issue 12's goals: at full speed the cluster reaches at least R/2; at R/2 its p99
send latency is under 5 ms. Needs `etcd` on PATH; data directories are removed after each
round.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from iggy_fast.server.cluster.dev import EtcdProcess, find_etcd, node
from iggy_fast.testing import ServerProcess


def bench(address: str, rate: float = 0) -> dict:
    """One pinned-producer run; the producers' totals of its JSON report."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, "-m", "iggy_fast.cli", "bench", "pinned-producer", "--batches",
               "1000", "--messages-per-batch", "1000", "--message-size", "1000", "--fsync",
               "--address", address, "--quiet", "--output", out.name]
        if rate:
            cmd += ["--rate-limit", str(int(rate))]
        subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=True)
        return json.load(open(out.name))["totals"]["producer"]


def line(label: str, total: dict) -> str:
    lat = total["latency_us"]
    text = (f"{label:<28}{total['messages_per_second']:>10,.0f} msg/s   send latency "
            f"p50 {lat['p50'] / 1000:5.2f} ms  p99 {lat['p99'] / 1000:5.2f} ms  "
            f"max {lat['max'] / 1000:6.2f} ms")
    if "scheduled_latency_us" in total:
        text += f"  (p99 from due time {total['scheduled_latency_us']['p99'] / 1000:5.2f} ms)"
    return text


def status(etcd, name: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "iggy_fast.cli", "cluster", "status",
                          "--etcd-endpoints", etcd.endpoint, "--name", name, "--json"],
                         capture_output=True, text=True, timeout=30).stdout
    return json.loads(out) if out else {}


def wait_live(etcd, name: str, count: int) -> None:
    for _ in range(100):
        if sum(v["live"] for v in status(etcd, name).get("nodes", {}).values()) == count:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the cluster did not come up: {status(etcd, name)}")


def leaders_during(etcd, run) -> tuple:
    """run() while watching the partitions' leaders (the bench deletes its stream at the end:
    look during the run); (run's result, the leaders seen)."""
    seen = []

    def watch():
        for _ in range(120):
            time.sleep(0.25)
            found = status(etcd, "bench").get("partitions")
            if found:
                seen.append(sorted({p["leader"] for p in found}))
                return
    watcher = threading.Thread(target=watch)
    watcher.start()
    result = run()
    watcher.join()
    return result, seen[0] if seen else "?"


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    for r in range(rounds):
        tmp = tempfile.mkdtemp()
        single = ServerProcess(f"{tmp}/single").start()
        etcd = EtcdProcess(find_etcd()).start()
        nodes = [node(f"n{i}", etcd.endpoint, cluster="bench", data_dir=f"{tmp}/n{i}")
                 for i in (1, 2)]
        try:
            for n in nodes:
                n.start()
            wait_live(etcd, "bench", 2)
            full = bench(single.address)
            print(line(f"round {r}, one node", full), flush=True)
            rf2, leaders = leaders_during(etcd, lambda: bench(nodes[0].address))
            print(line(f"round {r}, rf 2", rf2) + f"   leader {leaders} (client on n1)",
                  flush=True)
            half = full["messages_per_second"] / 2
            print(f"  paced at {half:,.0f} msg/s (half the single node's rate):", flush=True)
            print(line(f"round {r}, one node, paced", bench(single.address, half)), flush=True)
            paced, leaders = leaders_during(etcd, lambda: bench(nodes[0].address, half))
            print(line(f"round {r}, rf 2, paced", paced) + f"   leader {leaders}", flush=True)
            print(f"  load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
                  flush=True)
        finally:
            for n in nodes:
                n.stop()
            etcd.cleanup()
            single.stop()
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
