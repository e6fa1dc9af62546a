"""A short headless locust run of loadtest/locustfile.py against a live server: producers and
consumers both report requests, and none fails."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

LOCUSTFILE = Path(__file__).resolve().parent.parent / "loadtest" / "locustfile.py"


@pytest.mark.timeout(180)
def test_headless_locust_run(server, tmp_path):
    # Never import locust here: its import monkey-patches the whole process for gevent
    # (threads become greenlets), which breaks every later test that runs an event loop.
    if importlib.util.find_spec("locust") is None:
        pytest.skip("locust is not installed (pip install '.[loadtest]')")
    prefix = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "4",
         "-r", "4", "-t", "4s", "--host", f"iggy://iggy:iggy@{server.address}",
         "--csv", str(prefix), "--only-summary", "--message-size", "200", "--batch-size",
         "50", "--stream", "locust-test"],
        capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(f"{prefix}_stats.csv") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    assert int(rows["send 50 x 200 B"]["Request Count"]) > 0
    assert int(rows["poll 50"]["Request Count"]) > 0
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
