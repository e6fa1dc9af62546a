"""A real `iggy-fast server` as a subprocess: for the tests, the fuzzers and the benchmarks.

One process on a free port with its own data directory (a temporary one unless given) and its
log in a file beside it; started by the same command line a user types, restartable on the
same port and data directory, stopped by a signal (SIGTERM, or SIGKILL for a crash). It also
answers what tests ask of a running server: its resident memory, its log, and where a
partition's files are (directories are named by identities, not by the ids clients see).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free on 127.0.0.1 now (for TCP, or for UDP with kind=socket.SOCK_DGRAM), taken
    below the ephemeral range: a port from that range can become the local port of any
    process's outgoing connection before the server binds it (or between a stop and a
    restart), and the bind then fails with "address already in use"."""
    high = _ephemeral_low()
    for _ in range(50):
        port = random.randrange(10000, high)
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def other_transport_env() -> dict[str, str]:
    """IGGY_*_ADDRESS variables giving QUIC (UDP), HTTP and WebSocket free ports on loopback, so
    that a test server never takes (or collides on) Iggy's default ports 8080, 3000, 8092."""
    return {"IGGY_QUIC_ADDRESS": f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}",
            "IGGY_HTTP_ADDRESS": f"127.0.0.1:{free_port()}",
            "IGGY_WEBSOCKET_ADDRESS": f"127.0.0.1:{free_port()}"}


def clean_env(**extra) -> dict[str, str]:
    """This process's environment without its IGGY_* variables, with free ports for QUIC, HTTP
    and WebSocket (other_transport_env), plus `extra`: for a server started by hand."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("IGGY_")},
            **other_transport_env(), **extra}


@contextlib.contextmanager
def producing(address: str, stream, topic, partition_id: int = 0, messages: int = 100,
              pause: float = 0.005):
    """A producer thread sending batches of `messages` 100-byte messages to one partition,
    with `pause` seconds between them, for as long as the `with` block runs (so that rates
    and charts have something to show). An error in it is raised at the block's end."""
    from iggy_fast.bench.actors import make_batch
    from iggy_fast.client.blocking import BlockingClient

    stop = threading.Event()
    failed: list[BaseException] = []

    def produce():
        try:
            with BlockingClient(address) as client:
                client.login()
                batch = make_batch(messages, 100)
                while not stop.is_set():
                    client.send_batch(stream, topic, partition_id, batch, messages)
                    time.sleep(pause)
        except BaseException as e:      # handed to the test below, not swallowed
            failed.append(e)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    if failed:
        raise failed[0]


class _PortTaken(RuntimeError):
    """The server could not bind a port chosen for it: another process took it first."""


class ServerProcess:
    """One `iggy-fast server` process; restartable on the same ports and data dir."""

    def __init__(self, data_dir=None, env=None, args=(), by_env: bool = False,
                 nofile: int | None = None, python: str = sys.executable,
                 cwd: str | None = None):
        # No data_dir: a temporary directory, removed by cleanup().
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="iggy-fast-")
        self.data_dir = str(data_dir) if data_dir else os.path.join(self._tmp.name, "data")
        self.nofile = nofile        # RLIMIT_NOFILE (soft and hard) for the server, if set
        self.python = python        # another build's interpreter, to compare two builds
        self.cwd = cwd
        self.extra_env = env or {}
        self.args = list(args)
        # by_env: the address and data dir go in as IGGY_TCP_ADDRESS / IGGY_SYSTEM_PATH, not flags.
        self.by_env = by_env
        self._choose_ports()
        self.started = False        # once started, restarts keep the ports
        self.proc = None
        self.log_path = os.path.join(self.data_dir + ".log")

    def _choose_ports(self) -> None:
        self.tcp_port = free_port()
        # Every transport is on by default: each gets a free port of its own.
        ports = other_transport_env()
        self.quic_port, self.http_port, self.websocket_port = (
            int(ports[name].rpartition(":")[2]) for name in ports)
        self.chosen_ports = {self.tcp_port, self.quic_port, self.http_port, self.websocket_port}
        # A cluster node's replication listener is one more port to choose (and choose anew).
        if self.extra_env.get("IGGY_CLUSTER_ENABLED") == "true" \
                and "IGGY_CLUSTER_REPLICATION_ADDRESS" not in self.extra_env:
            replication_port = free_port()
            self.chosen_ports.add(replication_port)
            ports["IGGY_CLUSTER_REPLICATION_ADDRESS"] = f"127.0.0.1:{replication_port}"
        self.env = {**os.environ, **ports, **self.extra_env}
        if self.by_env:
            self.env.update(IGGY_TCP_ADDRESS=self.address, IGGY_SYSTEM_PATH=self.data_dir)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.tcp_port}"

    def start(self, timeout: float = 20.0) -> "ServerProcess":
        """Start and wait until it serves. A port this object chose that another process
        took between free_port() and the server's bind (other test runs on the machine) is
        chosen anew, on the first start only."""
        attempts = 0
        while True:
            try:
                self._start(timeout)
            except _PortTaken:
                attempts += 1
                if self.started or attempts == 3:
                    raise
                self._choose_ports()
                continue
            self.started = True
            return self

    def _start(self, timeout: float) -> None:
        where = [] if self.by_env else ["--data-dir", self.data_dir, "--tcp-address", self.address]
        cmd = [self.python, "-m", "iggy_fast.cli", "server", *where,
               "--with-default-root-credentials", *self.args]
        self._log = open(self.log_path, "ab")
        logged_before = self._log.seek(0, os.SEEK_END)     # a restart appends to the log
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self._log, stderr=self._log,
                                     preexec_fn=self._limit if self.nofile else None,
                                     cwd=self.cwd)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                message = f"server exited with {self.proc.returncode}:\n{self.log()}"
                if any(f"cannot listen on 127.0.0.1:{port}: address already in use" in message
                       for port in self.chosen_ports):
                    self.proc = None
                    self._log.close()
                    raise _PortTaken(message)
                raise RuntimeError(message)
            try:
                with socket.create_connection(("127.0.0.1", self.tcp_port), timeout=0.2):
                    pass
            except OSError:
                time.sleep(0.05)
                continue
            # TCP listens first; the other transports (a self-signed certificate to make)
            # and the signal handlers are ready once this line is logged.
            with open(self.log_path, "rb") as f:
                f.seek(logged_before)
                if b"iggy-fast started" in f.read():
                    return
            time.sleep(0.02)
        raise RuntimeError(f"server did not listen in {timeout}s:\n{self.log()}")

    def _limit(self) -> None:
        """In the child, before exec: the open-files limit the test asked for."""
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def data_path(self, stream: int = 0, topic: int | None = None,
                  partition: int | None = None) -> str:
        """The directory of a stream, topic or partition named by the ids clients see. On
        disk they are named by identities that are never reused (server/state.py): the
        metadata store says which."""
        db = sqlite3.connect(f"file:{os.path.join(self.data_dir, 'metadata.db')}?mode=ro",
                             uri=True)
        try:
            records = {key: json.loads(value) for key, value in
                       db.execute("SELECT key, value FROM kv WHERE key LIKE 'streams/%'")}
        finally:
            db.close()
        path = ""
        for kind, wanted in (("streams", stream), ("topics", topic), ("partitions", partition)):
            if wanted is None:
                break
            parent = f"{path}/{kind}" if path else kind
            path = next(key for key, v in records.items()
                        if key.rpartition("/")[0] == parent and v["id"] == wanted)
        return os.path.join(self.data_dir, path)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_kib(self) -> int:
        """The server's resident set size now (VmRSS, KiB)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS line")

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc = None
        self._log.close()
        return rc

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def cleanup(self) -> None:
        """Remove the temporary data directory, if this process made one."""
        if self._tmp is not None:
            self._tmp.cleanup()
