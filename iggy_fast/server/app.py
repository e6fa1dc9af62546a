"""Running the server: build it from the configuration, open the listeners, stop cleanly.

`serve(cfg)` starts every enabled transport, logs one line per listener (and a warning for each
enabled transport this version does not have yet), and on SIGINT or SIGTERM stops accepting,
closes connections and flushes storage (indexes, metadata).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time

from iggy_fast.config import UNBUILT_TRANSPORTS, split_address
from iggy_fast.server.core import Server
from iggy_fast.server.transports.tcp import start_tcp

log = logging.getLogger("iggy_fast")


async def _every(seconds: float, task) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            task(time.time_ns() // 1000)
        except Exception:
            log.exception("background task %s failed", getattr(task, "__name__", task))


async def serve(cfg: dict, ready=None) -> None:
    server = Server(cfg)
    if server.generated_root_password:
        log.warning("created root user %r with generated password: %s (shown once)",
                    cfg["root"]["username"], server.generated_root_password)
    listeners = []
    try:
        if cfg["tcp"]["enabled"]:
            host, port = split_address(cfg["tcp"]["address"])
            ssl_context = None
            if cfg["tcp"]["tls"]["enabled"]:
                from iggy_fast.server.transports.tls import server_context
                ssl_context = server_context(cfg["tcp"]["tls"], server.data_dir)
            tcp = await start_tcp(server, host, port, ssl_context)
            listeners.append(tcp)
            port = tcp.sockets[0].getsockname()[1]
            server.listen_ports["tcp"] = port
            log.info("TCP%s listening on %s:%d", " (TLS)" if ssl_context else "", host, port)
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
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(serve(cfg))
    else:
        uvloop.run(serve(cfg))
