"""Test harness: the real server as a subprocess on free ports with a temporary data dir.

`server` starts one per test module (tests in a module share it and use unique names);
`fresh_server` starts one per test for tests that restart or crash it. Clients are the
official `apache-iggy` SDK and our own blocking raw-frame client (`iggy_fast.client`).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid

import pytest

ROOT = ("iggy", "iggy")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """One `iggy-fast server` process; restartable on the same ports and data dir."""

    def __init__(self, data_dir, env=None, args=(), by_env: bool = False,
                 nofile: int | None = None):
        self.data_dir = str(data_dir)
        self.nofile = nofile        # RLIMIT_NOFILE (soft and hard) for the server, if set
        self.tcp_port = free_port()
        self.env = {**os.environ, **(env or {})}
        self.args = list(args)
        # by_env: the address and data dir go in as IGGY_TCP_ADDRESS / IGGY_SYSTEM_PATH, not flags.
        self.by_env = by_env
        if by_env:
            self.env.update(IGGY_TCP_ADDRESS=self.address, IGGY_SYSTEM_PATH=self.data_dir)
        self.proc = None
        self.log_path = os.path.join(self.data_dir + ".log")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.tcp_port}"

    def start(self, timeout: float = 20.0) -> "ServerProcess":
        where = [] if self.by_env else ["--data-dir", self.data_dir, "--tcp-address", self.address]
        cmd = [sys.executable, "-m", "iggy_fast.cli", "server", *where,
               "--with-default-root-credentials", *self.args]
        self._log = open(self.log_path, "ab")
        limit = None
        if self.nofile is not None:
            def limit():
                resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self._log, stderr=self._log,
                                     preexec_fn=limit)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.tcp_port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server did not listen in {timeout}s:\n{self.log()}")

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

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("data") / "server").start()
    yield srv
    rc = srv.stop()
    assert rc == 0, f"server exited with {rc}:\n{srv.log()}"
    assert "Traceback" not in srv.log(), srv.log()


@pytest.fixture
def fresh_server(tmp_path):
    srv = ServerProcess(tmp_path / "server")
    yield srv
    srv.stop()


@pytest.fixture
def spawn():
    """Start servers that are stopped at teardown even when the test fails (before any
    file system fixture requested ahead of this one is unmounted)."""
    started = []

    def start(data_dir, env=None):
        srv = ServerProcess(data_dir, env=env).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture
def unique():
    def make(prefix: str = "t") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:12]}"
    return make


@pytest.fixture
async def client(server):
    from apache_iggy import IggyClient

    c = IggyClient(server.address)
    await c.connect()
    await c.login_user(*ROOT)
    return c
