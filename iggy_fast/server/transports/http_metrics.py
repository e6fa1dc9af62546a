"""The metrics' HTTP routes, added to the HTTP endpoint's app (transports/http.py):

- `GET <[http.metrics] endpoint>` (default `/metrics`), when `[http.metrics] enabled`: the
  Prometheus text exposition (server/metrics.py `prometheus`). Any authenticated user may
  scrape it, as in Iggy: a bearer JWT or personal access token; 401 without one.
- `GET /stats/rates`: the JSON rates document (`rates_document`): per topic and partition the
  totals and rates over the last 1, 10 and 60 s, per consumer group and consumer the committed
  offset, high watermark and lag. Authenticated the same way and, like `/stats`, for users
  with the read_servers permission (403 otherwise). 404 when metrics are disabled.

Both render on the event loop from memory (no disk reads): see BENCHMARKS.md for their time
with 10 000 partitions.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import orjson
from aiohttp import web

from iggy_fast.config import ConfigError
from iggy_fast.server import metrics

# Prometheus text exposition format, version 0.0.4.
PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"


class _Caller(NamedTuple):
    """Who asks, as the permission checks see a client."""
    user_id: int


def add_routes(endpoint) -> None:
    """Route the metrics' documents on `endpoint` (an HttpEndpoint, before it starts)."""
    cfg = endpoint.cfg["http"]["metrics"]
    if not cfg["enabled"]:
        return
    path = cfg["endpoint"]
    if not path.startswith("/") or path == "/stats/rates":
        raise ConfigError(f"http.metrics.endpoint must be a path starting with '/' (and not "
                          f"/stats/rates): {path!r}")

    async def prometheus(request: web.Request) -> web.Response:
        endpoint.authenticate(request, allow_pat=True)
        body = metrics.prometheus(endpoint.server).encode()
        return web.Response(body=body, headers={"Content-Type": PROMETHEUS})

    async def rates(request: web.Request) -> web.Response:
        user = endpoint.authenticate(request, allow_pat=True)
        server = endpoint.server
        server.authz.require_global(_Caller(user.id), "read_servers")
        doc = metrics.rates_document(server, time.time_ns() // 1000)
        return web.Response(body=orjson.dumps(doc), content_type="application/json")

    endpoint.app.router.add_get(path, prometheus)
    endpoint.app.router.add_get("/stats/rates", rates)
