"""What the server holds in cluster mode: this node, the etcd metadata store, placements and
the controller, wired together; `Server` (core.py) and the app (app.py) call these hooks."""

from __future__ import annotations

import logging

from iggy_fast.server.cluster.controller import Controller, Placements
from iggy_fast.server.cluster.node import Node
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
        self.node.on_change.append(self.controller.poke)

    async def connect(self) -> None:
        """Before the metadata is loaded: the data directory's identity, etcd reachable."""
        self.node.check_identity(self.server.data_dir)
        await self.node.connect()

    def follow(self) -> None:
        """After the metadata is loaded: follow placements; reconcile on partition changes."""
        self.store.watch(self.placements.apply)
        self.server.state.listeners.append(self.controller.poke)

    async def first_start(self, init) -> None:
        async def caught_up_init():
            await self.store.catch_up()
            await init()
        await self.node.first_start(caught_up_init)

    async def join(self) -> None:
        await self.node.join()

    async def leave(self) -> None:
        await self.node.leave()

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
        """The admin view: nodes, the controller, every partition's placement."""
        state = self.server.state
        partitions = []
        for stream in state.streams.values():
            for topic in stream.topics.values():
                for part in topic.partitions.values():
                    record = self.placements.of(part) or {}
                    partitions.append({"stream": stream.id, "topic": topic.id,
                                       "partition": part.id, **record})
        return {"cluster": self.node.cluster, "node": self.node.name,
                "controller": (self.node.controller or {}).get("name"),
                "nodes": {name: {"live": name in self.node.nodes,
                                 "host": rec["host"], "ports": rec["ports"]}
                          for name, rec in {**self.node.known, **self.node.nodes}.items()},
                "partitions": partitions}
