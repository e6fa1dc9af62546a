"""`iggy-fast bench`: the benchmark tool (iggy_fast/bench/runner.py)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    from iggy_fast.bench import runner

    bench = sub.add_parser("bench", help="benchmark a server (or one it starts itself)",
                           description=runner.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    runner.add_arguments(bench)
    bench.set_defaults(func=runner.main)
