"""Smoke runs of every `iggy-fast bench` kind: the counts reported are what was sent and read
(timing is not checked here; bench/ and BENCHMARKS.md are for that)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from iggy_fast.bench import runner


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
