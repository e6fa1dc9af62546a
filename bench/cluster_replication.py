"""Ingest with replication factor 2 (and fsync enforced) against one node, same run; then the
send latency of a producer paced at half the single node's rate, on both.

    python bench/cluster_replication.py [rounds] [--baseline DIR]

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

`--baseline DIR` also runs, in each round, a second two-node cluster from another build: DIR
holds that build's `iggy_fast` package (e.g. `git archive <commit> iggy_fast | tar -x -C DIR`
plus the compiled modules, when its .pyx files are the same), run with DIR as the working
directory so it is imported first. Both clusters then see the same moment's load, which on a
shared machine moves the single node's rate by 2x between runs.
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


def leaders_during(etcd, run, cluster: str = "bench") -> tuple:
    """run() while watching the partitions' leaders (the bench deletes its stream at the end:
    look during the run); (run's result, the leaders seen)."""
    seen = []

    def watch():
        for _ in range(120):
            time.sleep(0.25)
            found = status(etcd, cluster).get("partitions")
            if found:
                seen.append(sorted({p["leader"] for p in found}))
                return
    watcher = threading.Thread(target=watch)
    watcher.start()
    result = run()
    watcher.join()
    return result, seen[0] if seen else "?"


def main() -> None:
    args = sys.argv[1:]
    baseline = None
    if "--baseline" in args:
        at = args.index("--baseline")
        baseline = os.path.abspath(args[at + 1])
        del args[at:at + 2]
    rounds = int(args[0]) if args else 1
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    for r in range(rounds):
        tmp = tempfile.mkdtemp()
        single = ServerProcess(f"{tmp}/single").start()
        etcd = EtcdProcess(find_etcd()).start()
        clusters = {"rf 2": ("bench", "")}
        if baseline:
            clusters["rf 2, baseline"] = ("base", "b")
        nodes = {label: [node(f"{prefix}n{i}", etcd.endpoint, cluster=name,
                              data_dir=f"{tmp}/{prefix}n{i}") for i in (1, 2)]
                 for label, (name, prefix) in clusters.items()}
        if baseline:
            for n in nodes["rf 2, baseline"]:
                n.cwd = baseline
        try:
            for label, (name, _) in clusters.items():
                for n in nodes[label]:
                    n.start()
                wait_live(etcd, name, 2)
            full = bench(single.address)
            print(line(f"round {r}, one node", full), flush=True)
            # Every other round the other cluster goes first: neither always runs later.
            order = list(clusters.items())[::1 if r % 2 == 0 else -1]
            for label, (name, _) in order:
                rf2, leaders = leaders_during(etcd, lambda: bench(nodes[label][0].address), name)
                print(line(f"round {r}, {label}", rf2) + f"   leader {leaders} (client on "
                      f"{nodes[label][0].env['IGGY_CLUSTER_NODE_NAME']}), "
                      f"{rf2['messages_per_second'] / full['messages_per_second']:.2f} of one "
                      f"node", flush=True)
            half = full["messages_per_second"] / 2
            print(f"  paced at {half:,.0f} msg/s (half the single node's rate):", flush=True)
            print(line(f"round {r}, one node, paced", bench(single.address, half)), flush=True)
            for label, (name, _) in order:
                paced, leaders = leaders_during(
                    etcd, lambda: bench(nodes[label][0].address, half), name)
                print(line(f"round {r}, {label}, paced", paced) + f"   leader {leaders}",
                      flush=True)
            print(f"  load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
                  flush=True)
        finally:
            for group in nodes.values():
                for n in group:
                    n.stop()
            etcd.cleanup()
            single.stop()
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
