"""Poll routing, as the official SDK (0.9.0) does it with several nodes (codes 14, 103, 104).

Seeing more than one node in GetClusterMetadata, that SDK sends an auto-committing poll in
three steps: RoutePoll (103) with the poll's body asks where to poll; the answer is a
32-byte token and a node (as GetClusterMetadata describes one); the SDK opens a second
connection to that node, logs in, sends the token back (BindPollRoute, 14) and polls there
with RoutedPoll (104: PollMessages' body and answer), on that connection from then on.

This server answers every RoutePoll with the node that answers it: it forwards a partition's
polls to the partition's leader itself (server/cluster/cluster.py), so the SDK stays on the
node it dialled, as it does for everything else. The token names the connection that asked
(signed: Groups.route_token); bound with it, the poll connection polls as that connection,
which matters to a consumer group, whose member is the connection that joined. What a poll
may read is checked when it is served (RoutedPoll is PollMessages).
"""

from __future__ import annotations

from iggy_fast.protocol import requests as rq
from iggy_fast.protocol.results import PollRoute
from iggy_fast.server.service import Context, system


def route_poll(ctx: Context, req: rq.PollMessages) -> PollRoute:
    here = system.get_cluster_metadata(ctx, rq.GetClusterMetadata()).nodes[0]
    return PollRoute(ctx.server.groups.route_token(ctx.client), here)


def bind_poll_route(ctx: Context, token: bytes) -> None:
    ctx.server.groups.bind_route(ctx.client, token)
