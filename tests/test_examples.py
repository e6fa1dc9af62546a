"""Each tutorial script in examples/ runs as a user would run it (`python examples/NAME.py`)
against a live server, exits 0 and prints what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import ServerProcess
from iggy_fast import SyncIggyClient
from iggy_fast.testing import producing

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(name: str, address: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), "--address", address,
                           *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_custom_routing(server):
    out = run("custom_routing", server.address)
    assert "user-123 -> partition 0" in out           # XXH32("user-123") % 4
    counts = [int(line.split(": ")[1].split()[0]) for line in out.splitlines()
              if line.startswith("partition ")]
    assert len(counts) == 4 and sum(counts) == 36


def test_round_robin(server):
    out = run("round_robin", server.address)
    assert out.splitlines() == [f"partition {p}: 25 messages" for p in range(4)]


def test_persistence_config(server):
    out = run("persistence_config", server.address)
    assert "segment_size   = 100,000,000 bytes" in out
    assert "7 days" in out and "read back as configured" in out


def test_cluster_config_says_what_it_cannot_do(server):
    out = run("cluster_config", server.address)
    assert "has 1 node(s)" in out and "cannot show a 3-node cluster" in out


def test_monitoring(server):
    out = run("monitoring", server.address, "--seconds", "2.5")
    lines = out.splitlines()
    assert any(line.startswith("producer: sent") and "msg/s" in line for line in lines)
    assert any(line.startswith("consumer: ") and "received" in line for line in lines)
    final = lines[-1]
    assert final.startswith("sent ") and final.endswith("errors 0")


def test_server_monitoring(server):
    """The server's own rates per topic while a producer sends: a line a second, and the
    topic's messages per second in above zero."""
    with SyncIggyClient(f"iggy://iggy:iggy@{server.address}") as client:
        client.create_stream("watched")
        client.create_topic("watched", "events", partitions_count=1)
    with producing(server.address, "watched", "events"):
        out = run("server_monitoring", server.address, "--http-address",
                  f"127.0.0.1:{server.http_port}", "--seconds", "3.5")
    lines = [line for line in out.splitlines() if "watched/events: in " in line]
    assert len(lines) >= 3, out
    rates = [float(line.split("watched/events: in ")[1].split(" msg/s")[0].replace(",", ""))
             for line in lines]
    assert max(rates) > 0, out


def test_token_auth(server):
    out = run("token_auth", server.address)
    assert "logged in with the token as user 0" in out
    assert "the token is refused: InvalidPersonalAccessToken" in out


def test_tls(tmp_path):
    srv = ServerProcess(tmp_path / "tls", env={"IGGY_TCP_TLS_ENABLED": "true"}).start()
    try:
        out = run("tls", srv.address)
    finally:
        srv.stop()
    assert "TLS connection to" in out and "read back: sent over TLS" in out


def test_every_example_is_tested():
    scripts = {p.stem for p in EXAMPLES.glob("*.py") if not p.stem.startswith("_")}
    tested = {name[len("test_"):] for name in globals() if name.startswith("test_")}
    tested.add("cluster_config")
    assert scripts <= tested, scripts - tested
