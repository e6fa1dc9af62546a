"""`iggy-fast server`: read the configuration (defaults, file, IGGY_* variables, flags) and serve."""

from __future__ import annotations

import argparse
import logging
import os
import sys


log = logging.getLogger("iggy_fast")


def _server(args) -> int:
    from iggy_fast.config import ConfigError, read_config
    from iggy_fast.server.app import run
    from iggy_fast.server.core import StartupError

    overrides: dict = {}
    if args.data_dir:
        overrides.setdefault("system", {})["path"] = args.data_dir
    if args.tcp_address:
        overrides.setdefault("tcp", {})["address"] = args.tcp_address
    if args.with_default_root_credentials and not os.environ.get("IGGY_ROOT_PASSWORD"):
        overrides["root"] = {"username": os.environ.get("IGGY_ROOT_USERNAME", "iggy"),
                             "password": "iggy"}
    try:
        loaded = read_config(args.config, overrides=overrides)
    except ConfigError as e:
        # A configuration mistake is the user's to fix: one line, no traceback.
        print(f"iggy-fast: configuration error: {e}", file=sys.stderr)
        return 2
    for name in loaded.unknown_env:
        log.warning("unknown environment variable %s is ignored", name)
    if loaded.not_applied:
        log.warning("configuration keys accepted but not applied by this version: %s",
                    ", ".join(loaded.not_applied))
    try:
        run(loaded.config)
    except ConfigError as e:        # a configured certificate file that cannot be used
        print(f"iggy-fast: configuration error: {e}", file=sys.stderr)
        return 2
    except StartupError as e:       # a port in use, an unusable data directory
        print(f"iggy-fast: {e}", file=sys.stderr)
        return 2
    return 0


def add_parser(sub) -> None:
    srv = sub.add_parser("server", help="run the server")
    srv.add_argument("--config", help="TOML configuration file (Iggy's server.toml keys)")
    srv.add_argument("--data-dir", help="where streams and metadata live (system.path)")
    srv.add_argument("--tcp-address", help="host:port for the TCP listener")
    srv.add_argument("--with-default-root-credentials", action="store_true",
                     help="root user iggy/iggy unless IGGY_ROOT_PASSWORD says otherwise")
    # Also after `server` (`iggy-fast server --log-level debug`); SUPPRESS keeps the top-level
    # value when it is not given here.
    srv.add_argument("--log-level", default=argparse.SUPPRESS, help="DEBUG, INFO, WARNING, ...")
    srv.set_defaults(func=_server)
