"""Smoke runs of every `iggy-fast bench` kind: the counts reported are what was sent and read
(timing is not checked here; bench/ and BENCHMARKS.md are for that)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import uuid

import pytest

from iggy_fast import _wire
from iggy_fast.bench import runner
from iggy_fast.bench.actors import make_batch
from iggy_fast.client import BlockingClient


def args_for(kind, address, **overrides):
    import argparse
    parser = argparse.ArgumentParser()
    runner.add_arguments(parser)
    argv = [kind, "--address", address, "--batches", "20", "--messages-per-batch", "50",
            "--message-size", "200", "--quiet"]
    for key, value in overrides.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return parser.parse_args(argv)


@pytest.mark.parametrize("kind,producers,consumers", [
    ("pinned-producer", 2, 0), ("pinned-consumer", 0, 2),
    ("pinned-producer-and-consumer", 2, 2), ("balanced-producer", 2, 0),
    ("consumer-group", 0, 3), ("end-to-end", 1, 1)])
def test_each_kind_counts_what_it_moved(server, kind, producers, consumers):
    args = args_for(kind, server.address, producers=max(producers, 1),
                    consumers=max(consumers, 1), partitions=3 if kind == "consumer-group" else 2)
    report = runner.run(args)
    totals = report["totals"]
    if producers:
        assert totals["producer"]["messages"] == producers * 20 * 50
        assert totals["producer"]["actors"] == producers
    if kind == "consumer-group":     # the group reads what one filler wrote, once
        assert totals["consumer"]["messages"] == 20 * 50
        assert totals["consumer"]["actors"] == consumers
    elif consumers:
        assert totals["consumer"]["messages"] == consumers * 20 * 50
    for actor in report["actors"]:
        assert actor["latency_us"]["p50"] <= actor["latency_us"]["max"]
        # A member that joins last may find the partitions already read by the others.
        assert actor["messages_per_second"] > 0 or kind == "consumer-group"
    if kind == "end-to-end":
        assert "end_to_end_us" in [a for a in report["actors"] if a["role"] == "consumer"][0]


def test_large_send_survives_partial_socket_writes(server):
    """With a small send buffer one sendmsg() writes only part of a 1 MB request; the client
    must write the rest (it used to wait for a reply to a request the server never got)."""
    stream = f"partial-{uuid.uuid4().hex[:8]}"
    with BlockingClient(server.address, timeout=10) as c:
        c.login()
        c.call(202, _wire.Writer().name(stream).getvalue())
        c.call(302, _wire.Writer().identifier(stream).u32(1).name("t").getvalue())
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        batch = make_batch(1000, 1000)
        assert c.send_batch(stream, "t", 0, batch, 1000) == 0
        assert c.bytes_sent > len(batch)
        got = 0
        while got < 1000:
            got += int.from_bytes(c.poll(stream, "t", 0, 1, got, 1000).body[12:16], "little")
        assert got == 1000
        c.call(203, _wire.Writer().identifier(stream).getvalue())


def test_cli_starts_its_own_server_and_writes_json(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-m", "iggy_fast.cli", "bench", "pinned-producer",
                           "--batches", "10", "--messages-per-batch", "10", "--quiet",
                           "--output", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "producer-0" in proc.stdout
    report = json.loads(out.read_text())
    assert report["totals"]["producer"]["messages"] == 100
    assert report["machine"]["cpus"] >= 1 and report["settings"]["messages_per_batch"] == 10


def test_help_documents_every_option():
    proc = subprocess.run([sys.executable, "-m", "iggy_fast.cli", "bench", "--help"],
                          capture_output=True, text=True, timeout=60)
    for option in ("--producers", "--consumers", "--streams", "--partitions", "--message-size",
                   "--messages-per-batch", "--batches", "--duration", "--transport", "--fsync",
                   "--address", "--output"):
        assert option in proc.stdout
