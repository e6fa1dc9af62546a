"""What the server holds in cluster mode: this node, the etcd metadata store, placements and
the controller, wired together; `Server` (core.py) and the app (app.py) call these hooks."""

from __future__ import annotations

import asyncio
import logging
import struct
import time

from iggy_fast.protocol import client_codec as cc
from iggy_fast.protocol.errors import (PartitionNotFound, StreamIdNotFound, TopicIdNotFound,
                                       TransientNotAccepted)
from iggy_fast.protocol.results import Polled, Sent, StoredOffset
from iggy_fast.server.cluster.controller import Controller, Placements
from iggy_fast.server.cluster.node import Node
from iggy_fast.server.cluster.replication import Moved, Replication, ready
from iggy_fast.server.dispatch import FORWARDED
from iggy_fast.server.metadata.etcd import EtcdMetadataStore

log = logging.getLogger("iggy_fast.cluster")

# GetClusterMetadata's role and status values (PROTOCOL.md §5.1.4).
LEADER, FOLLOWER = 0, 1
HEALTHY, UNREACHABLE = 0, 3


class Cluster:
    def __init__(self, server):
        self.server = server
        self.node = Node(server)
        self.store = EtcdMetadataStore(self.node.etcd, self.node.cluster)
        self.placements = Placements()
        self.controller = Controller(server, self.node, self.placements)
        self.replication = Replication(server, self.node, self.placements)
        self.groups = None          # consumer group membership (cluster/groups.py), set by
        #                             server/groups.py
        self.node.on_change.append(self.controller.poke)
        self.node.on_change.append(self.replication.follow_placements)

    async def connect(self) -> None:
        """Before the metadata is loaded: the data directory's identity, etcd reachable."""
        self.node.check_identity(self.server.data_dir)
        await self.node.connect()

    def follow(self, snapshot) -> None:
        """After the metadata is loaded: follow placements; reconcile on partition changes."""
        self.placements.apply(snapshot)
        self.store.watch(self.placements.apply)
        self.server.state.listeners.append(self.controller.poke)

    async def first_start(self, init) -> None:
        async def caught_up_init():
            await self.store.catch_up()
            await init()
        await self.node.first_start(caught_up_init)

    async def join(self) -> None:
        await self.replication.start()
        await self.node.join()
        await self.groups.start()

    async def leave(self) -> None:
        self.store.close()          # its watch ends before the etcd session closes
        self.groups.close()
        self.replication.close()
        await self.node.leave()

    # -- the data path's hooks -----------------------------------------------------------

    def appended(self, partition, reply):
        """After a local append (this node leads the partition): see Replication.appended."""
        return self.replication.appended(partition, reply)

    def route(self, client, code: int, request, body):
        """None when this node serves a partition request itself, else an awaitable of the
        leader's answer (the request forwarded over the replication address): its encoded
        pieces for a binary request, the typed result for a typed one (`body` None: HTTP's
        JSON), which is encoded with the binary codec to travel and its answer decoded."""
        if code not in FORWARDED:
            return None
        if body is None:
            forwarded = self._route(client, code, request, None)
            return None if forwarded is None else _typed(code, forwarded)
        return self._route(client, code, request, body)

    def _route(self, client, code: int, request, body, caught_up: bool = False):
        from iggy_fast.server.service.messages import _route
        from iggy_fast.server.state import GROUP

        state = self.server.state
        named = False           # a group poll's partition, named here
        try:
            topic = state.topic(request.stream, request.topic)
        except (StreamIdNotFound, TopicIdNotFound):
            if caught_up:
                return None     # served here: not found
            # Made on another node a moment ago? Look again once caught up with etcd.
            return self._caught_up(client, code, request, _body(code, request, body))
        if code == 101:
            pid = _route(topic, request.partitioning, request.partitioning_value)
        elif code in (100, 104) and request.consumer_kind == GROUP \
                and request.partition_id is None:
            # A group poll naming no partition: the member's turn is kept here; the leader
            # of the partition whose turn it is serves it (checking the member owns it).
            # Over HTTP (body None) the turn is only looked at: the poll served here takes it.
            pid, _ = self.server.groups.member_partition(client, topic, request.consumer, None,
                                                         peek=body is None)
            if pid is None:
                return None         # the member owns no partition: fenced, here
            if body is not None:
                request = request._replace(partition_id=pid)
                body = bytes(body[:-19]) + b"\x01" + pid.to_bytes(4, "little") \
                    + bytes(body[-14:])
                named = True
        else:
            pid = request.partition_id or 0
        part = topic.partitions.get(pid)
        if part is None:
            return None
        if self.replication.leads(part.identity):
            if code == 101:
                self.replication.check_in_sync(topic, part)
            if named:           # served here, with the partition chosen above
                return self.replication.serve_encoded(client, code, request)
            return None
        # (a copy: the receive buffer is reused once this returns)
        return self._route_later(client, code, pid, part, _body(code, request, body))

    async def _caught_up(self, client, code, request, body: bytes) -> list:
        await self.store.catch_up()
        forwarded = self._route(client, code, request, body, caught_up=True)
        if forwarded is not None:
            return await forwarded
        return await self.replication.serve_encoded(client, code, request)

    async def _route_later(self, client, code, pid, part, body: bytes) -> list:
        """Forward to the partition's leader, and again to the next one while the leader
        changes (a send at most once: see Replication._send_once), for at most
        `Replication.forward_for` seconds; then TransientNotAccepted."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.replication.forward_for
        since = time.time_ns() // 1000
        tried, why = False, "the partition has no leader now"
        while loop.time() < deadline:
            if not self.server.state.live(part):
                raise PartitionNotFound()       # deleted meanwhile
            record = self.placements.of(part)
            # The leader, which may be this node now that the placement is known (the
            # request then goes through this node's own replication address, as any
            # forwarded one).
            if record is not None and record.get("leader") in self.node.nodes \
                    and ready(record):
                try:
                    return await self.replication.forward(client, code, pid, part.identity,
                                                          record, body, since, tried, deadline)
                except Moved as e:
                    tried, why = True, str(e)
                    log.debug("partition %s: forwarding again: %s", part.key, e)
            await asyncio.sleep(0.1)
        log.warning("partition %s: a forwarded request given up after %.0f s: %s", part.key,
                    self.replication.forward_for, why)
        raise TransientNotAccepted(f"partition {part.key}: {why}")

    def nodes(self, answering: str) -> list[tuple[str, str, dict, int, int]]:
        """(name, host, ports, role, status) of every node the cluster has known, the
        answering node first and as the one to talk to (role leader: an official client
        reconnects to whichever node is called leader, and must stay where it dialled)."""
        known = {**self.node.known, **self.node.nodes}
        rows = []
        for name in sorted(known, key=lambda n: (n != answering, n)):
            record = known[name]
            rows.append((name, record["host"], record["ports"],
                         LEADER if name == answering else FOLLOWER,
                         HEALTHY if name in self.node.nodes else UNREACHABLE))
        return rows

    def status(self) -> dict:
        """The admin view: nodes, the controller, every partition's placement (with the log
        end and high watermark of those this node leads); GET /cluster/status serves it."""
        state = self.server.state
        partitions = []
        for stream in state.streams.values():
            for topic in stream.topics.values():
                for part in topic.partitions.values():
                    record = self.placements.of(part) or {}
                    row = {"stream": stream.id, "topic": topic.id, "partition": part.id,
                           **record}
                    if record.get("leader") == self.node.name and hasattr(part, "log"):
                        row["end"] = part.log.next_offset
                        row["high_watermark"] = self.replication.high_watermark(part)
                    partitions.append(row)
        return {"cluster": self.node.cluster, "node": self.node.name,
                "controller": (self.node.controller or {}).get("name"),
                "nodes": {name: {"live": name in self.node.nodes,
                                 "host": rec["host"], "ports": rec["ports"]}
                          for name, rec in {**self.node.known, **self.node.nodes}.items()},
                "partitions": partitions}


# A typed request (from HTTP's JSON) as the binary body it is forwarded as: the client codec's
# encoders take the request's fields in their order.
_BODIES = {
    100: lambda r: cc.poll_messages(*r), 104: lambda r: cc.poll_messages(*r),
    101: lambda r: cc.send_messages(*r[:5]) + bytes(r.batch),
    102: lambda r: cc.flush_unsaved_buffer(*r),
    120: lambda r: cc.get_consumer_offset(*r),
    121: lambda r: cc.store_consumer_offset(*r),
    122: lambda r: cc.delete_consumer_offset(*r),
}
_SENT, _POLLED, _STORED = struct.Struct("<IIIIQ"), struct.Struct("<IQI"), struct.Struct("<IQQ")


def _body(code: int, request, body) -> bytes:
    return _BODIES[code](request) if body is None else bytes(body)


def _result(code: int, payload: bytes):
    """The leader's encoded answer (binary.encode_*) as the typed result HTTP encodes."""
    if code == 101:
        return Sent(*_SENT.unpack_from(payload)[1:])
    if code in (100, 104):
        return Polled(*_POLLED.unpack_from(payload), [payload[_POLLED.size:]])
    if code == 120:
        return StoredOffset(*_STORED.unpack(payload)) if payload else None
    return None


async def _typed(code: int, forwarded):
    pieces = await forwarded
    return _result(code, b"".join(pieces))
