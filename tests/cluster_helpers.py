"""Shared by the cluster fault tests (fencing, soak): a cluster of etcd and node processes, a
producer that remembers exactly which sends were acknowledged, and what the nodes hold.

A `Producer` sends numbered messages to one partition through our own client, one batch at a
time, and records every acknowledged payload with the time of its acknowledgement; a send
that fails or times out is not counted (it may or may not be stored: at-least-once), and the
producer goes on. The tests then check that every acknowledged payload is in the partition's
final log, which is the one promise a replicated send makes.
"""

from __future__ import annotations

import asyncio
import glob
import os
import time

from iggy_fast.client import IggyClient
from iggy_fast.server.cluster.dev import EtcdProcess, find_etcd, node

ETCD = find_etcd()


def name_of(srv) -> str:
    return srv.env["IGGY_CLUSTER_NODE_NAME"]


def start_cluster(tmp_path, cluster: str, count: int, lease_ttl: str = "3 s",
                  replication_factor: int = 2):
    """etcd and `count` started nodes (node1..), by name; the caller stops them
    (`stop_cluster`)."""
    from test_cluster import live
    from conftest import wait_for

    etcd = EtcdProcess(ETCD).start()
    nodes = {f"node{i}": node(f"node{i}", etcd.endpoint, cluster=cluster, lease_ttl=lease_ttl,
                              replication_factor=replication_factor,
                              data_dir=str(tmp_path / f"node{i}")) for i in range(1, count + 1)}
    try:
        for n in nodes.values():
            n.start()
        assert wait_for(lambda: len(live(etcd, cluster)) == count, 30)
    except BaseException:
        stop_cluster(etcd, nodes)
        raise
    return etcd, nodes


def stop_cluster(etcd, nodes: dict) -> None:
    """Stop every node (resuming a stopped one first) and etcd; a node that logged a
    traceback fails the test."""
    import signal
    logs = {}
    for name, n in nodes.items():
        if n.proc is not None:
            n.proc.send_signal(signal.SIGCONT)
        n.stop()
        logs[name] = n.log()
    etcd.cleanup()
    for name, text in logs.items():
        assert "Traceback" not in text, (name, text[-5000:])


async def connect(*servers, timeout: float = 5.0) -> IggyClient:
    """Our client, logged in, failing over between `servers` in order; a request with no
    answer in `timeout` seconds fails (and the connection is made again)."""
    addresses = ",".join(s.address for s in servers)
    client = IggyClient(f"iggy://iggy:iggy@{addresses}?timeout={timeout}"
                        f"&reconnection_interval=200ms&reconnection_retries=unlimited"
                        f"&connect_timeout=2s", reconnection_max=1.0)
    await client.connect()
    return client


class Producer:
    """Sends batches of `size` numbered messages (`<name>-<batch>-<k>`) to one partition until
    stopped; `acked` holds every acknowledged payload, `acked_at` when each batch was."""

    def __init__(self, client: IggyClient, stream: str, topic: str, partition: int,
                 name: str, size: int = 5, pause: float = 0.0):
        self.client, self.stream, self.topic = client, stream, topic
        self.partition, self.name, self.size, self.pause = partition, name, size, pause
        self.acked: list[bytes] = []
        self.acked_at: list[float] = []
        self.failures: list[str] = []
        self.batches = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> "Producer":
        self._task = asyncio.ensure_future(self._run())
        return self

    async def stop(self) -> None:
        self._stop.set()
        await self._task
        await self.client.close()

    async def _run(self) -> None:
        while not self._stop.is_set():
            payloads = [f"{self.name}-{self.batches}-{k}".encode() for k in range(self.size)]
            self.batches += 1
            try:
                await self.client.send_messages(self.stream, self.topic, self.partition,
                                                payloads)
            except Exception as e:      # not acknowledged: it may or may not be stored
                self.failures.append(f"{type(e).__name__}: {e}")
                await asyncio.sleep(0.1)
                continue
            self.acked.extend(payloads)
            self.acked_at.append(time.monotonic())
            if self.pause:
                await asyncio.sleep(self.pause)

    def acks_after(self, moment: float) -> int:
        return sum(1 for t in self.acked_at if t > moment)


def segments(srv) -> dict[str, bytes]:
    """Every partition's log on one node, by partition directory (its identity)."""
    out = {}
    for d in glob.glob(os.path.join(srv.data_dir, "streams", "*", "topics", "*", "partitions",
                                    "*")):
        out[os.path.basename(d)] = b"".join(
            open(f, "rb").read() for f in sorted(glob.glob(os.path.join(d, "*.log"))))
    return out


async def read_partition(client: IggyClient, stream: str, topic: str, partition: int
                         ) -> list[tuple[int, bytes]]:
    """(offset, payload) of every message of a partition, through `client` (its leader)."""
    out: list[tuple[int, bytes]] = []
    while True:
        polled = await client.poll_messages(stream, topic, partition_id=partition,
                                            polling_strategy=_offset(len(out)), count=5000,
                                            consumer=99)
        got = [(m.offset, bytes(m.payload)) for m in polled]
        if not got:
            return out
        out += got


def _offset(at: int):
    from iggy_fast.client import PollingStrategy
    return PollingStrategy.Offset(at)
