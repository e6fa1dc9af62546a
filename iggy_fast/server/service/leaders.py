"""GetPartitionLeaders (9000), an iggy-fast extension: where each partition of a topic is led.

Our client (client/cluster.py) asks it to send a partition's requests straight to the
partition's leader instead of through the node it dialled, which would forward them (an extra
hop: server/cluster/replication.py). The answer is, per partition, the leader's node name, its
leader epoch and the leader's address for the transport the client names, as the leader
registered it in etcd (cluster/node.py: the host of its TCP address and every listener's port).

A partition without a live leader that may serve (between a leader's death and its
successor taking office) has an empty node and address: the client then goes through its
own connection, whose node forwards and waits for the next leader itself. A server that is not
a cluster node answers FeatureUnavailable: every request it gets it serves itself, so there
is no leader to learn (an Iggy server answers InvalidCommand, the code being unknown to it).

Who may ask: anyone who may send to, poll from or read the topic; "missing" and "forbidden"
are told apart as for every topic request (lookup.py).
"""

from __future__ import annotations

from iggy_fast.protocol import requests as rq
from iggy_fast.protocol.codes import TRANSPORTS
from iggy_fast.protocol.errors import (FeatureUnavailable, StreamIdNotFound, TopicIdNotFound,
                                       Unauthorized)
from iggy_fast.protocol.results import PartitionLeader
from iggy_fast.server.service import Context, lookup

# codes.TRANSPORTS number -> the key of a node's registered ports (server.listen_ports).
_PORT_KEYS = {TRANSPORTS["TCP"]: "tcp", TRANSPORTS["QUIC"]: "quic",
              TRANSPORTS["HTTP"]: "http", TRANSPORTS["WebSocket"]: "websocket"}
_ALLOWED_BY = ("send", "poll", "read_topic")


def get_partition_leaders(ctx: Context, req: rq.GetPartitionLeaders) -> list[PartitionLeader]:
    from iggy_fast.server.cluster.replication import ready

    cluster = ctx.server.cluster
    if cluster is None:
        raise FeatureUnavailable("not a cluster node: it serves every partition itself")
    stream, topic, sid, tid = lookup.resolve(ctx, req.stream, req.topic)
    authz = ctx.server.authz
    if not any(authz.allowed(ctx.client, action, sid, tid) for action in _ALLOWED_BY):
        raise Unauthorized()
    if stream is None:
        raise StreamIdNotFound()
    if topic is None:
        raise TopicIdNotFound()
    live = cluster.node.nodes
    port_key = _PORT_KEYS[req.transport]
    out = []
    for pid in sorted(topic.partitions):
        record = cluster.placements.of(topic.partitions[pid]) or {}
        leader = record.get("leader")
        node, address = "", ""
        if leader in live and ready(record):
            node = leader
            registration = live[leader]
            port = registration.get("ports", {}).get(port_key, 0)
            if port:
                host = registration.get("host") or ""
                address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        out.append(PartitionLeader(pid, int(record.get("epoch", 0)), node, address))
    return out
