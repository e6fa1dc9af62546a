"""The cluster's HTTP route, added to the HTTP endpoint's app (transports/http.py):

- `GET /cluster/status`, on a node of a cluster (`[cluster] enabled`): this node's view of the
  cluster as JSON (server/cluster/cluster.py `Cluster.status`): the nodes and whether each is
  live, the controller, every partition's placement (replicas, leader, epoch, in-sync set)
  and, for the partitions this node leads, its log end and high watermark. Authenticated
  as `/stats` is (a bearer JWT or personal access token, 401 without) and for users with the
  read_servers permission (403 otherwise). A single node has no such route (404).

`iggy-fast cluster status` reads the same placements from etcd directly, for when no node
answers.
"""

from __future__ import annotations

from typing import NamedTuple

import orjson
from aiohttp import web


class _Caller(NamedTuple):
    """Who asks, as the permission checks see a client."""
    user_id: int


def add_routes(endpoint) -> None:
    """Route the cluster status on `endpoint` (an HttpEndpoint, before it starts)."""
    if not endpoint.cfg["cluster"]["enabled"]:
        return

    async def cluster_status(request: web.Request) -> web.Response:
        user = endpoint.authenticate(request, allow_pat=True)
        server = endpoint.server
        server.authz.require_global(_Caller(user.id), "read_servers")
        return web.Response(body=orjson.dumps(server.cluster.status()),
                            content_type="application/json")

    endpoint.app.router.add_get("/cluster/status", cluster_status)
