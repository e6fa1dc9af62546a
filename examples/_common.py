"""What every example shares: where the server is and who to log in as, and a clean stream.

Each example takes `--address HOST:PORT`, `--username` and `--password` (defaults from the
environment, IGGY_ADDRESS, IGGY_USERNAME, IGGY_PASSWORD, else 127.0.0.1:8090 and iggy/iggy,
the root user of a server started with `iggy-fast server --with-default-root-credentials`).
"""

from __future__ import annotations

import argparse
import os
from urllib.parse import quote

from iggy_fast.protocol.errors import StreamIdNotFound


def arguments(description: str, **extra) -> argparse.Namespace:
    """Parse the connection flags plus `extra` ({flag: (default, help)})."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--address", default=os.environ.get("IGGY_ADDRESS", "127.0.0.1:8090"),
                        help="the server's TCP address (env IGGY_ADDRESS)")
    parser.add_argument("--username", default=os.environ.get("IGGY_USERNAME", "iggy"),
                        help="env IGGY_USERNAME")
    parser.add_argument("--password", default=os.environ.get("IGGY_PASSWORD", "iggy"),
                        help="env IGGY_PASSWORD")
    for flag, (default, text) in extra.items():
        parser.add_argument(f"--{flag.replace('_', '-')}", default=default, help=text,
                            type=type(default) if default is not None else str)
    return parser.parse_args()


def url(args, query: str = "") -> str:
    """The connection string for `args` (user and password percent-encoded)."""
    return (f"iggy://{quote(args.username, safe='')}:{quote(args.password, safe='')}"
            f"@{args.address}{'?' + query if query else ''}")


async def fresh_stream(client, name: str) -> None:
    """Create stream `name`, deleting a leftover of an earlier run first."""
    try:
        await client.delete_stream(name)
    except StreamIdNotFound:
        pass
    await client.create_stream(name)
