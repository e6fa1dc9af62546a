"""The `iggy-fast` command: one subcommand per module of this package.

Each module in SUBCOMMANDS has `add_parser(subparsers)`, which adds its subcommand(s) with
`set_defaults(func=...)`; `func(args)` returns the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from iggy_fast import __version__

# Modules of iggy_fast.cli, each adding its subcommands, in the order `--help` lists them.
SUBCOMMANDS = ("server", "bench", "admin", "contexts", "top")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="iggy-fast", description="A persistent message streaming server speaking the "
        "Apache Iggy protocol, and the tools around it.")
    parser.add_argument("--version", action="version", version=f"iggy-fast {__version__}")
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"iggy_fast.cli.{name}").add_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)
