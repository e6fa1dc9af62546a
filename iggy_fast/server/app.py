"""Running the server: start in an order that leaves nothing half-done, serve, stop cleanly.

Start-up, where each step can stop the server with one line (ConfigError or StartupError, which
the command prints with exit code 2) before the next step writes anything:

1. each enabled transport (ENDPOINTS) loads its configured TLS certificate files (a missing or
   unreadable one is named) and binds its address, not yet listening: a port in use is named
   with its transport;
2. the data directory is created and checked writable (its path and the reason if not);
3. the soft open-files limit is raised to the hard limit;
4. the metadata is loaded and the root user created; a generated password is logged at once,
   so no later failure can lose it;
5. each transport makes its self-signed certificate if it is asked for one, starts listening
   and logs one line saying where.

`run()` sets the process umask to 077 first: everything the server creates (metadata,
partitions, segments, certificates) is its owner's only. On SIGINT or SIGTERM the server stops
accepting, closes connections and flushes storage (indexes, metadata).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import resource
import signal
import tempfile
import time

from iggy_fast.server.core import Server, StartupError
from iggy_fast.server.transports import Endpoint, http_cluster, http_metrics
from iggy_fast.server.transports.http import ROUTE_HOOKS, HttpEndpoint
from iggy_fast.server.transports.sockets import os_reason
from iggy_fast.server.transports.quic import QuicEndpoint
from iggy_fast.server.transports.tcp import TcpEndpoint
from iggy_fast.server.transports.websocket import WebSocketEndpoint

log = logging.getLogger("iggy_fast")

# The transports this server has, by configuration section (see transports/__init__.py), in
# the order they start: TCP last, so that once TCP accepts, every transport is up.
ENDPOINTS: dict[str, type[Endpoint]] = {
    "quic": QuicEndpoint,
    "http": HttpEndpoint,
    "websocket": WebSocketEndpoint,
    "tcp": TcpEndpoint,
}
# Routes other parts of the server add to the HTTP endpoint.
ROUTE_HOOKS.append(http_metrics.add_routes)          # /metrics, /stats/rates
ROUTE_HOOKS.append(http_cluster.add_routes)          # /cluster/status (a cluster's node)


async def _every(seconds: float, task) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            done = task(time.time_ns() // 1000)
            if inspect.isawaitable(done):       # a metadata change (token expiry) is a commit
                await done
        except Exception:
            log.exception("background task %s failed", getattr(task, "__name__", task))


def prepare_data_dir(path: str) -> None:
    """Create the data directory (0700 under the server's umask) and check that files can be
    made in it. StartupError names the path and the reason."""
    try:
        os.makedirs(path, exist_ok=True)
    except FileExistsError:
        raise StartupError(f"data directory {path} cannot be used: it exists and is not a "
                           f"directory") from None
    except OSError as e:
        where = "" if e.filename in (None, path) else f" (at {e.filename})"
        raise StartupError(f"data directory {path} cannot be created: {os_reason(e)}{where}"
                           ) from None
    try:
        with tempfile.TemporaryFile(dir=path):     # an unnamed file: nothing is left behind
            pass
    except OSError as e:
        raise StartupError(f"data directory {path} is not writable: {os_reason(e)}") from None


def raise_open_files_limit() -> None:
    """Every connection and every open segment is a file: take all the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open files limit to %d: %s", hard, e)
    log.info("open files limit: %s", "unlimited" if soft == resource.RLIM_INFINITY else soft)


async def _start(cfg: dict) -> tuple[Server, list[Endpoint]]:
    """Steps 1 to 5 above: the started server and its endpoints."""
    endpoints: list[Endpoint] = []
    server = None
    try:
        for section, endpoint in ENDPOINTS.items():
            if cfg[section]["enabled"]:
                endpoints.append(endpoint(cfg))
        data_dir = cfg["system"]["path"]
        prepare_data_dir(data_dir)
        raise_open_files_limit()
        try:
            server = Server(cfg)
            await server.start()
        except OSError as e:
            if not e.filename:
                raise
            raise StartupError(f"cannot open {e.filename}: {os_reason(e)}") from None
        if server.generated_root_password:
            log.warning("created root user %r with generated password: %s (shown once)",
                        cfg["root"]["username"], server.generated_root_password)
        for endpoint in endpoints:
            await endpoint.start(server)
        if server.cluster is not None:      # registered with the ports now listening
            await server.cluster.join()
    except BaseException:
        for endpoint in endpoints:
            endpoint.close()
        if server is not None:
            if server.cluster is not None:
                await server.cluster.leave()
            server.close()
        raise
    return server, endpoints


async def serve(cfg: dict, ready=None) -> None:
    server, endpoints = await _start(cfg)
    try:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        background = [asyncio.ensure_future(_every(seconds, task))
                      for seconds, task in server.periodic_tasks]
        log.info("iggy-fast started, data in %s", server.data_dir)
        if ready is not None:
            ready(server)
        await stop.wait()
        log.info("shutting down")
        for task in background:
            task.cancel()
    finally:
        for endpoint in endpoints:
            endpoint.close()
        for client in list(server.clients.values()):
            if client.close is not None:
                client.close()
        for endpoint in endpoints:
            try:
                await asyncio.wait_for(endpoint.wait_closed(), 2)
            except (asyncio.TimeoutError, Exception):
                pass
        if server.cluster is not None:      # gone from the cluster now, not at lease expiry
            await server.cluster.leave()
        server.close()
        log.info("stopped")


def run(cfg: dict) -> None:
    """Serve until SIGINT or SIGTERM. Raises ConfigError or StartupError (one line for the
    user) when the server cannot start."""
    os.umask(0o077)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(serve(cfg))
    else:
        uvloop.run(serve(cfg))
