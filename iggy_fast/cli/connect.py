"""Where an admin command connects and who it logs in as: flags, environment, context.

Every command that talks to a server takes the same options (`connection_options()`), before
or after its action (`iggy-fast stream --address H:P list` or `iggy-fast stream list
--address H:P`):

    --url iggy+TRANSPORT://USER:PASSWORD@HOST:PORT[?tls=true...]   (a connection string)
    --transport tcp|quic|http|ws   --address HOST:PORT[,HOST:PORT...]
    -u/--username  -p/--password  -t/--token   --tls --tls-ca-file --tls-domain
    --context NAME  --timeout SECONDS

Each setting is taken from the first place that has it: the flags (a `--url` counts as flags),
then the environment (IGGY_USERNAME and IGGY_PASSWORD, or IGGY_TOKEN, as Iggy's CLI), then the
context (`--context`, else the active one; contexts.py; its `url` likewise), then the SDK's
defaults (TCP on 127.0.0.1:8090). Credentials come as a pair or a token from one place: a
username from the flags never meets a password from a context. A username without any
password has it asked for (on a terminal without echo, else read as a line from stdin). A
command that needs a login and has no credentials says so before connecting.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import getpass
import os
import sys

from iggy_fast.cli import contexts
from iggy_fast.cli.output import CommandError, output_options, report
from iggy_fast.protocol.errors import IggyError

TRANSPORTS = ("tcp", "quic", "http", "ws")


def connection_options() -> argparse.ArgumentParser:
    """The connection options and `--output`, for a parser's `parents`. Every default is
    SUPPRESS, so that an option given before the action is not reset by the action's parser."""
    parent = argparse.ArgumentParser(add_help=False, parents=[output_options()])
    group = parent.add_argument_group("connection")
    s = argparse.SUPPRESS
    group.add_argument("--url", default=s, metavar="URL", help="a connection string, "
                       "iggy+TRANSPORT://USER:PASSWORD@HOST:PORT or ...://TOKEN@HOST:PORT")
    group.add_argument("--transport", choices=TRANSPORTS, default=s, help="default tcp")
    group.add_argument("--address", default=s, metavar="HOST:PORT",
                       help="the server (default 127.0.0.1 and the transport's port); "
                       "several, comma-separated, to fail over")
    group.add_argument("-u", "--username", default=s, metavar="USER", help="or IGGY_USERNAME")
    group.add_argument("-p", "--password", default=s, metavar="PASSWORD",
                       help="or IGGY_PASSWORD")
    group.add_argument("-t", "--token", default=s, metavar="TOKEN",
                       help="a personal access token, or IGGY_TOKEN")
    group.add_argument("--tls", action="store_true", default=s, help="TLS over TCP/WebSocket")
    group.add_argument("--tls-ca-file", default=s, metavar="FILE",
                       help="the CA to verify the server's certificate against")
    group.add_argument("--tls-domain", default=s, metavar="NAME",
                       help="the name the certificate must carry")
    group.add_argument("--context", default=s, metavar="NAME",
                       help="a saved context instead of the active one")
    group.add_argument("--timeout", type=float, default=s, metavar="SECONDS",
                       help="per request (default 10)")
    return parent


def _from_url(url: str) -> dict:
    from iggy_fast.client.connection_string import parse
    config = parse(url)
    settings = {"transport": config.transport, "address": ",".join(config.addresses),
                "username": config.username, "password": config.password,
                "token": config.token, "tls": config.tls or None,
                "tls_ca_file": config.tls_ca_file, "tls_domain": config.tls_domain}
    return {k: v for k, v in settings.items() if v is not None}


def _layer(settings: dict) -> dict:
    """One source's settings, a `url` in it expanded (its other keys win over the url's)."""
    settings = {k: v for k, v in settings.items() if v is not None}
    url = settings.pop("url", None)
    return {**_from_url(url), **settings} if url else settings


def _credentials(layer: dict) -> dict:
    return {k: layer[k] for k in ("username", "password", "token") if k in layer}


def resolve(args, env=os.environ) -> dict:
    """The settings a command connects with (see the module docstring): ClientConfig's
    keywords, plus `source`, where the credentials came from."""
    flags = _layer({k: getattr(args, k, None) for k in contexts.KEYS})
    environment = ({"token": env["IGGY_TOKEN"]} if env.get("IGGY_TOKEN") else
                   {k: env[f"IGGY_{k.upper()}"] for k in ("username", "password")
                    if env.get(f"IGGY_{k.upper()}")})
    if getattr(args, "context", None):
        context = _layer(contexts.get(args.context))
    else:
        context = _layer(contexts.active()[1])
    settings: dict = {}
    for layer in (context, flags):          # later layers win
        settings.update({k: v for k, v in layer.items()
                         if k not in ("username", "password", "token")})
    source, credentials = None, {}
    for name, layer in (("flags", flags), ("environment", environment), ("context", context)):
        found = _credentials(layer)
        if found:
            source, credentials = name, found
            break
    if "token" in credentials and "username" in credentials:
        raise CommandError(f"the {source} give both a token and a username: use one")
    if "password" in credentials and "username" not in credentials:
        raise CommandError(f"the {source} give a password but no username")
    if "username" in credentials and "password" not in credentials:
        credentials["password"] = _ask_password(credentials["username"])
    return {**settings, **credentials, "source": source}


def _ask_password(username: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(f"Password for {username}: ")
    line = sys.stdin.readline()
    if not line:
        raise CommandError(f"no password for {username} (give -p, IGGY_PASSWORD or stdin)")
    return line.rstrip("\r\n")


def client_config(settings: dict, args, reconnect: bool = False):
    """A ClientConfig for one short command (no heartbeat, no reconnecting), or with
    `reconnect` for one that watches (top): the SDK's heartbeat and reconnection."""
    from iggy_fast.client.connection_string import DEFAULT_PORTS, ClientConfig
    transport = settings.get("transport", "tcp")
    address = settings.get("address") or f"127.0.0.1:{DEFAULT_PORTS[transport]}"
    timeout = getattr(args, "timeout", None) or 10.0
    return ClientConfig(addresses=address, transport=transport,
                        username=settings.get("username"), password=settings.get("password"),
                        token=settings.get("token"), tls=bool(settings.get("tls")),
                        tls_ca_file=settings.get("tls_ca_file"),
                        tls_domain=settings.get("tls_domain"), timeout=timeout,
                        connect_timeout=timeout,
                        heartbeat_interval=5.0 if reconnect else None,
                        reconnection_retries=None if reconnect else 0,
                        reconnection_interval=0.5, reconnection_max=5.0)


async def open_client(args, login: bool = True, reconnect: bool = False):
    """A connected (and, with credentials, logged-in) IggyClient for `args`."""
    from iggy_fast.client.aio import IggyClient
    settings = resolve(args)
    if login and settings["source"] is None:
        raise CommandError("no credentials: give -u USER -p PASSWORD or -t TOKEN, set "
                           "IGGY_USERNAME and IGGY_PASSWORD (or IGGY_TOKEN), or save them "
                           "in a context (iggy-fast context create)")
    client = IggyClient(client_config(settings, args, reconnect))
    await client.connect()
    return client


def remote(login: bool = True, reconnect: bool = False):
    """Decorate `async def command(client, args)` into a `func(args) -> exit code` that
    connects, runs it, closes and turns failures into one line on stderr."""
    def wrap(command):
        @functools.wraps(command)
        def run(args) -> int:
            async def main():
                client = await open_client(args, login, reconnect)
                try:
                    return await command(client, args)
                finally:
                    await client.close()
            try:
                return asyncio.run(main()) or 0
            except KeyboardInterrupt:
                return 130
            except (IggyError, CommandError, contexts.ContextError, OSError) as e:
                # What the server or the network answered: one line, no traceback.
                return report(e)
        return run
    return wrap
