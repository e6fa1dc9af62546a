"""A cluster on one machine: an etcd process and node processes on loopback ports.

Used by `iggy-fast cluster dev` and by the cluster tests, so both start the cluster the same
way: etcd (the `etcd` binary, Debian's `etcd-server`) with its data in a temporary directory,
then each node as `iggy-fast server` configured only through IGGY_CLUSTER_* variables, as a
user would.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

from iggy_fast.testing import ServerProcess, free_port


def find_etcd(given: str | None = None) -> str | None:
    return given or shutil.which("etcd")


class EtcdProcess:
    """One etcd member on free loopback ports, its data in `directory` (temporary if None)."""

    def __init__(self, binary: str, directory: str | None = None):
        self.binary = binary
        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="iggy-etcd-")
        self.directory = directory or self._tmp.name
        self.client_port, self.peer_port = free_port(), free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self, timeout: float = 20.0) -> "EtcdProcess":
        peer = f"http://127.0.0.1:{self.peer_port}"
        self._log = open(os.path.join(self.directory, "etcd.log"), "ab")
        self.proc = subprocess.Popen(
            [self.binary, "--name", "dev", "--data-dir", os.path.join(self.directory, "data"),
             "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"dev={peer}"],
            stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}: see "
                                   f"{self.directory}/etcd.log")
            try:
                with urllib.request.urlopen(self.endpoint + "/health", timeout=1) as reply:
                    if b'"true"' in reply.read():
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"etcd did not answer in {timeout}s")

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


def node(name: str, endpoints: str, cluster: str = "dev", replication_factor: int = 2,
         lease_ttl: str = "5 s", data_dir: str | None = None, env: dict | None = None
         ) -> ServerProcess:
    """A cluster node (not yet started): `iggy-fast server` with IGGY_CLUSTER_* variables."""
    variables = {
        "IGGY_CLUSTER_ENABLED": "true", "IGGY_CLUSTER_NAME": cluster,
        "IGGY_CLUSTER_NODE_NAME": name, "IGGY_CLUSTER_ETCD_ENDPOINTS": endpoints,
        "IGGY_CLUSTER_REPLICATION_FACTOR": str(replication_factor),
        "IGGY_CLUSTER_LEASE_TTL": lease_ttl,
        **(env or {}),
    }
    return ServerProcess(data_dir=data_dir, env=variables)
