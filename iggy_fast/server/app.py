"""Running the server: start in an order that leaves nothing half-done, serve, stop cleanly.

Start-up, where each step can stop the server with one line (ConfigError or StartupError, which
the command prints with exit code 2) before the next step writes anything:

1. configured TLS certificate files are loaded (a missing or unreadable one is named);
2. the TCP address is bound, not yet listening: a port in use is named with its transport;
3. the data directory is created and checked writable (its path and the reason if not);
4. a self-signed certificate, when one is asked for, is made there;
5. the soft open-files limit is raised to the hard limit;
6. the metadata is loaded and the root user created; a generated password is logged at once,
   so no later failure can lose it;
7. the listener starts listening and accepting, and the server logs one line per listener
   (and a warning for each enabled transport this version does not have yet).

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
import socket
import tempfile
import time

from iggy_fast.config import UNBUILT_TRANSPORTS, split_address
from iggy_fast.server.core import Server, StartupError
from iggy_fast.server.transports import tls
from iggy_fast.server.transports.tcp import TcpConnection, start_tcp

log = logging.getLogger("iggy_fast")

BACKLOG = 1024


async def _every(seconds: float, task) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            done = task(time.time_ns() // 1000)
            if inspect.isawaitable(done):       # a metadata change (token expiry) is a commit
                await done
        except Exception:
            log.exception("background task %s failed", getattr(task, "__name__", task))


def _reason(e: OSError) -> str:
    text = e.strerror or str(e)
    return text[:1].lower() + text[1:]          # "address already in use"


def bind(name: str, address: str) -> list[socket.socket]:
    """Sockets bound to every address `address` resolves to (as asyncio's create_server binds
    them), not listening yet. StartupError names the transport and the address."""
    host, port = split_address(address)
    sockets: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        for family, kind, proto, _, sockaddr in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
    except OSError as e:
        for sock in sockets:
            sock.close()
        raise StartupError(f"{name} cannot listen on {address}: {_reason(e)}") from None
    return sockets


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
        raise StartupError(f"data directory {path} cannot be created: {_reason(e)}{where}"
                           ) from None
    try:
        with tempfile.TemporaryFile(dir=path):     # an unnamed file: nothing is left behind
            pass
    except OSError as e:
        raise StartupError(f"data directory {path} is not writable: {_reason(e)}") from None


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


async def _start(cfg: dict) -> tuple[Server, list]:
    """Steps 1 to 7 above: the started server and its listeners."""
    tls_cfg = cfg["tcp"]["tls"]
    ssl_context = tls.configured_context(tls_cfg) if tls_cfg["enabled"] else None
    address = cfg["tcp"]["address"]
    sockets = bind("TCP", address)
    server = None
    try:
        data_dir = cfg["system"]["path"]
        prepare_data_dir(data_dir)
        if tls_cfg["enabled"] and ssl_context is None:
            try:
                ssl_context = tls.self_signed_context(data_dir)
            except OSError as e:
                raise StartupError(f"cannot write a self-signed certificate in "
                                   f"{os.path.join(data_dir, 'certs')}: {_reason(e)}") from None
        raise_open_files_limit()
        try:
            server = Server(cfg)
            await server.start()
        except OSError as e:
            if not e.filename:
                raise
            raise StartupError(f"cannot open {e.filename}: {_reason(e)}") from None
        if server.generated_root_password:
            log.warning("created root user %r with generated password: %s (shown once)",
                        cfg["root"]["username"], server.generated_root_password)
        try:
            for sock in sockets:
                sock.listen(BACKLOG)
        except OSError as e:
            raise StartupError(f"TCP cannot listen on {address}: {_reason(e)}") from None
    except BaseException:
        for sock in sockets:
            sock.close()
        if server is not None:
            server.close()
        raise
    # From here the listeners own the sockets.
    if ssl_context is None:
        listeners = [await start_tcp(server, sock) for sock in sockets]
    else:
        # The login deadline starts once the handshake is done: bound the handshake alike.
        handshake = server.connections.login_timeout / 1e6
        listeners = [tls.TlsListener(sock, ssl_context, lambda: TcpConnection(server, "TCP"),
                                     handshake) for sock in sockets]
    host, _ = split_address(address)
    port = sockets[0].getsockname()[1]
    server.listen_ports["tcp"] = port
    log.info("TCP%s listening on %s:%d", " (TLS)" if ssl_context else "", host, port)
    return server, listeners


async def serve(cfg: dict, ready=None) -> None:
    server, listeners = await _start(cfg)
    try:
        # Their defaults are off here (Iggy's are on), so `enabled` means the user asked.
        asked = [(name, cfg[key]["address"]) for key, name in UNBUILT_TRANSPORTS
                 if cfg[key]["enabled"]]
        for name, address in asked:
            log.warning("%s transport is not available in this version; not listening on %s",
                        name, address)
        if not asked:
            log.info("HTTP, QUIC and WebSocket transports are not available in this version")
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
        for listener in listeners:
            listener.close()
        for client in list(server.clients.values()):
            if client.close is not None:
                client.close()
        for listener in listeners:
            try:
                await asyncio.wait_for(listener.wait_closed(), 2)
            except (asyncio.TimeoutError, Exception):
                pass
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
