"""Ingest with replication factor 2 (and fsync enforced) against one node, same run.

    python bench/cluster_replication.py [rounds]

Each round: `iggy-fast bench pinned-producer --fsync` (one producer, 1000 batches of 1000
messages of 1000 B) against a single node, then against node n1 of a fresh two-node cluster
(etcd and two `iggy-fast server` processes, replication factor 2), printing each run's total
line and the partition's placement (whether n1 led it, or the sends were forwarded). Needs
`etcd` on PATH. Data directories are removed after each round.
"""

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from iggy_fast.server.cluster.dev import EtcdProcess, find_etcd, node
from iggy_fast.testing import ServerProcess


def bench(address: str) -> str:
    cmd = [sys.executable, "-m", "iggy_fast.cli", "bench", "pinned-producer", "--batches", "1000",
           "--messages-per-batch", "1000", "--message-size", "1000", "--fsync",
           "--address", address, "--quiet"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=True).stdout
    return next(line for line in out.splitlines() if line.startswith("total"))


def placements(etcd, name: str) -> list:
    out = subprocess.run([sys.executable, "-m", "iggy_fast.cli", "cluster", "status",
                          "--etcd-endpoints", etcd.endpoint, "--name", name, "--json"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return json.loads(out)["partitions"]


def wait_live(etcd, name: str, count: int) -> None:
    out = []
    for _ in range(100):
        out = subprocess.run([sys.executable, "-m", "iggy_fast.cli", "cluster", "status",
                              "--etcd-endpoints", etcd.endpoint, "--name", name, "--json"],
                             capture_output=True, text=True, timeout=30).stdout
        if out and sum(v["live"] for v in json.loads(out)["nodes"].values()) == count:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the cluster did not come up: {out}")


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    for r in range(rounds):
        tmp = tempfile.mkdtemp()
        try:
            single = ServerProcess(f"{tmp}/single").start()
            try:
                print(f"one node, round {r}:   {bench(single.address)}", flush=True)
            finally:
                single.stop()
            etcd = EtcdProcess(find_etcd()).start()
            nodes = [node(f"n{i}", etcd.endpoint, cluster="bench", data_dir=f"{tmp}/n{i}")
                     for i in (1, 2)]
            try:
                for n in nodes:
                    n.start()
                wait_live(etcd, "bench", 2)
                seen = []       # the bench deletes its stream at the end: look during the run

                def watch():
                    for _ in range(60):
                        time.sleep(0.5)
                        if not seen and (found := placements(etcd, "bench")):
                            seen.append(found)
                            return
                watcher = threading.Thread(target=watch)
                watcher.start()
                print(f"rf 2, round {r}:       {bench(nodes[0].address)}", flush=True)
                watcher.join()
                print(f"  placement (client on n1): {json.dumps(seen)}", flush=True)
            finally:
                for n in nodes:
                    n.stop()
                etcd.cleanup()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
