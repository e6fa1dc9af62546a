"""A short run of the whole-frame fuzzer (fuzz/fuzz_server.py) with a fixed seed.

The fuzzer mutates request frames captured from the official SDK (fuzz/corpus/) and sends
them to a real server; it raises FuzzFailure on a crash, a hang, a status 1, a traceback in
the log or runaway memory. Here it runs 5 000 frames (seconds); fuzz/fuzz_server.py
--frames 1000000 is the long run (docs/fuzzing.md). Per-command body fuzzing is
test_fuzz_commands.py's job.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fuzz"))

import fuzz_server  # noqa: E402

FRAMES = 5000


def test_corpus_covers_every_command_the_sdk_can_send():
    ops = {f[176] for _, f in fuzz_server.load_corpus()}
    codes = {int.from_bytes(f[196:200], "little") for _, f in fuzz_server.load_corpus()
             if f[176] == 2}
    assert set(range(128, 150)) | {1, 2, 3, 160, 161, 162} <= ops
    assert {1, 10, 12, 13, 20, 21, 22, 31, 32, 41, 100, 102, 120, 200, 201, 300, 301, 600, 601,
            606} <= codes


def test_mutations_are_reproducible_from_the_seed():
    corpus = fuzz_server.load_corpus()
    runs = []
    for _ in range(2):
        m = fuzz_server.Mutator(fuzz_server.random.Random(7), corpus)
        runs.append([m.mutate(m.rng.choice(corpus)[1], 5) for _ in range(2000)])
    assert runs[0] == runs[1]
    kinds = {k.split("@")[0] for _, how in runs[0] for k in how.split("+")}
    assert kinds == {"bit flip", "byte", "insert", "delete", "truncate", "length field",
                     "header", "splice", "splice body", "batch field"}


def test_fuzz_5000_frames_with_a_fixed_seed():
    summary = fuzz_server.run(FRAMES, seed=1, check_every=1000, reset_every=1000,
                              rss_limit_mb=1024)
    stats, statuses = summary["stats"], summary["statuses"]
    assert stats["frames"] == FRAMES
    assert stats["aligned"] + stats["desync"] == FRAMES
    # The frames reached the handlers (successes and business errors, not only layout
    # errors) and the framing layer (desyncs), and the server passed every check.
    assert statuses[0] > 200 and statuses[1009] > 0 and statuses[3] > 0 and statuses[4] > 0
    assert stats["desync"] > 100 and stats["resets"] >= FRAMES // 1000
    assert stats["checks"] >= FRAMES // 1000
    assert summary["rss_max_kib"] < 1024 * 1024
