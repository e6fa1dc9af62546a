"""Saved connection contexts: `iggy-fast context list|show|create|use|delete NAME`.

A context is a named set of connection settings (transport, address, TLS, credentials), as in
Iggy's CLI, so an operator types `iggy-fast context use prod` once instead of the flags on
every command. They live in one JSON file, `contexts.json`, in `$IGGY_FAST_HOME` or else
`~/.config/iggy-fast`:

    {"active": "prod", "contexts": {"prod": {"transport": "tcp", "address": "10.0.0.1:8090",
                                             "username": "ops", "password": "..."}}}

The file may hold passwords and tokens, so it is written owner-only (0600, in a 0700
directory) and replaced atomically (a reader never sees half a file). The context `default`
always exists and is empty: the built-in defaults.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

DEFAULT = "default"
FILE_NAME = "contexts.json"
# What a context may set; anything else in the file is kept but not used.
KEYS = ("transport", "address", "url", "username", "password", "token", "tls", "tls_ca_file",
        "tls_domain")
SECRET_KEYS = ("password", "token")


class ContextError(Exception):
    """A context that does not exist, or a contexts file that cannot be read."""


def home() -> Path:
    explicit = os.environ.get("IGGY_FAST_HOME")
    return Path(explicit) if explicit else Path.home() / ".config" / "iggy-fast"


def path() -> Path:
    return home() / FILE_NAME


def load() -> dict:
    """The file's contents, {"active": name, "contexts": {name: settings}}; built-in
    defaults when it does not exist yet."""
    try:
        with open(path()) as f:
            data = json.load(f)
    except FileNotFoundError:
        data = {}
    except (OSError, ValueError) as e:
        raise ContextError(f"cannot read {path()}: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("contexts", {}), dict):
        raise ContextError(f"{path()} is not a contexts file")
    contexts = data.setdefault("contexts", {})
    contexts.setdefault(DEFAULT, {})
    data.setdefault("active", DEFAULT)
    return data


def save(data: dict) -> None:
    directory = home()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".contexts-")   # created 0600
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path())
    except BaseException:
        os.unlink(tmp)
        raise


def active() -> tuple[str, dict]:
    """The context in use (its name and settings)."""
    data = load()
    name = data["active"]
    return name, data["contexts"].get(name, {})


def get(name: str) -> dict:
    contexts = load()["contexts"]
    if name not in contexts:
        raise ContextError(f"no context named {name!r} (see `iggy-fast context list`)")
    return contexts[name]


def masked(settings: dict) -> dict:
    """The settings with passwords and tokens hidden, for showing."""
    return {k: ("***" if k in SECRET_KEYS and v else v) for k, v in settings.items()}


# -- the `context` commands -------------------------------------------------------------------

def _list(args) -> int:
    from iggy_fast.cli.output import emit
    data = load()
    rows = [{"name": name, "active": name == data["active"], **masked(settings)}
            for name, settings in sorted(data["contexts"].items())]
    emit(args, rows, columns=("name", "active", "transport", "address", "url", "username"),
         title="Contexts")
    return 0


def _show(args) -> int:
    from iggy_fast.cli.output import emit
    emit(args, {"name": args.name, **masked(get(args.name))}, title=f"Context {args.name}")
    return 0


def _create(args) -> int:
    from iggy_fast.cli.output import done
    data = load()
    if args.name in data["contexts"]:
        raise ContextError(f"context {args.name!r} already exists (delete it first)")
    settings = {key: getattr(args, key) for key in KEYS if getattr(args, key, None) is not None}
    if "url" in settings:
        from iggy_fast.client.connection_string import parse
        parse(settings["url"])          # a bad one is refused now, not at every later use
    data["contexts"][args.name] = settings
    save(data)
    done(args, f"Context {args.name} created", {"name": args.name, "created": True})
    return 0


def _use(args) -> int:
    from iggy_fast.cli.output import done
    data = load()
    if args.name not in data["contexts"]:
        raise ContextError(f"no context named {args.name!r} (see `iggy-fast context list`)")
    data["active"] = args.name
    save(data)
    done(args, f"Using context {args.name}", {"active": args.name})
    return 0


def _delete(args) -> int:
    from iggy_fast.cli.output import done
    data = load()
    if args.name == DEFAULT:
        raise ContextError("the default context cannot be deleted")
    if args.name not in data["contexts"]:
        raise ContextError(f"no context named {args.name!r}")
    del data["contexts"][args.name]
    if data["active"] == args.name:
        data["active"] = DEFAULT
    save(data)
    done(args, f"Context {args.name} deleted", {"name": args.name, "deleted": True})
    return 0


def add_parser(sub) -> None:
    from iggy_fast.cli.output import output_options, run_local

    ctx = sub.add_parser("context", aliases=["ctx"], help="saved connection contexts")
    actions = ctx.add_subparsers(dest="action", required=True, metavar="ACTION")
    out = output_options()

    p = actions.add_parser("list", aliases=["l"], parents=[out], help="list the contexts")
    p.set_defaults(func=run_local(_list))
    p = actions.add_parser("show", aliases=["s"], parents=[out], help="show one context")
    p.add_argument("name")
    p.set_defaults(func=run_local(_show))
    p = actions.add_parser("use", aliases=["u"], parents=[out],
                           help="make a context the one commands use")
    p.add_argument("name")
    p.set_defaults(func=run_local(_use))
    p = actions.add_parser("delete", aliases=["d"], parents=[out], help="delete a context")
    p.add_argument("name")
    p.set_defaults(func=run_local(_delete))
    p = actions.add_parser("create", aliases=["c"], parents=[out], help="save a context")
    p.add_argument("name")
    p.add_argument("--transport", choices=("tcp", "quic", "http", "ws"))
    p.add_argument("--address", help="HOST:PORT of the server")
    p.add_argument("--url", help="a connection string, iggy+TRANSPORT://USER:PASSWORD@HOST:PORT")
    p.add_argument("-u", "--username")
    p.add_argument("-p", "--password")
    p.add_argument("-t", "--token", help="a personal access token")
    p.add_argument("--tls", action="store_true", default=None)
    p.add_argument("--tls-ca-file")
    p.add_argument("--tls-domain")
    p.set_defaults(func=run_local(_create))
