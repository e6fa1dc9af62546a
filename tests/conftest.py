"""Test harness: the real server as a subprocess on free ports with a temporary data dir
(`iggy_fast.testing.ServerProcess`, which the fuzzers and benchmarks use too).

`server` starts one per test module (tests in a module share it and use unique names);
`fresh_server` starts one per test for tests that restart or crash it. Clients are the
official `apache-iggy` SDK and our own blocking raw-frame client (`iggy_fast.client`).
"""

from __future__ import annotations

import time
import uuid

import pytest

from iggy_fast.testing import ServerProcess, free_port  # noqa: F401  (tests import them from here)

ROOT = ("iggy", "iggy")


def wait_for(predicate, timeout: float = 20.0) -> bool:
    """Poll `predicate` until it holds or `timeout` passes; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


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
