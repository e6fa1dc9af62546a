"""This node in the cluster: identity, registration under a lease, the nodes' view, election.

Identity. A node's data directory holds `cluster.json` ({"cluster", "node", "id"}; the id is
random, made once). A data directory of another cluster, or of another node name, is refused
with one line. etcd binds each name to its data directory's id (`cluster/known/<name>`): a
second live node with the same name and another data directory is refused; a node restarted
with its own name and data directory is the same node, and its new registration replaces the
old one at once (the old lease is revoked rather than waited out).

Registration. `cluster/nodes/<name>` under a lease of `lease_ttl`, renewed every third of it,
holds the client-facing addresses and the replication address. When the process dies the
lease expires and the node is gone; a node that finds its lease expired (it was paused, or
etcd was away too long) registers again and, having lost the controller role with its lease,
stands for election again.

Election. Every node tries to create `cluster/controller` under its lease; the one that
succeeds is the controller (controller.py) until its lease ends. The others watch the key and
try again when it is deleted.

etcd unreachable at start: `connect()` says so once and retries every second; the node binds
its ports but listens to no client before it has loaded the metadata from etcd.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid

import orjson

from iggy_fast.config import parse_duration_us, split_address
from iggy_fast.server.cluster import etcd as e
from iggy_fast.server.core import StartupError

log = logging.getLogger("iggy_fast.cluster")

IDENTITY_FILE = "cluster.json"


class ClusterRefused(StartupError):
    """This node cannot join (another cluster's data, a name in use): one line."""


class Node:
    def __init__(self, server):
        cfg = server.cfg["cluster"]
        self.server = server
        self.cluster = cfg["name"]
        self.name = cfg["node_name"]
        self.replication_factor = int(cfg["replication_factor"])
        self.replication_address = cfg["replication_address"]
        self.ttl = max(2, parse_duration_us(cfg["lease_ttl"]) // 1_000_000)
        self.etcd = e.Etcd(cfg["etcd_endpoints"], timeout=max(1.0, self.ttl / 3))
        self.root = f"/iggy/{self.cluster}/cluster/"
        self.id = ""
        self.lease = 0
        self.nodes: dict[str, dict] = {}        # live registrations, by name
        self.known: dict[str, dict] = {}        # every name ever bound, by name
        self.controller: dict | None = None     # the controller key's value
        self.rebalance: dict | None = None      # `cluster/rebalance` (controller.py)
        self.on_change: list = []               # callables(): nodes or controller changed
        self._tasks: list[asyncio.Task] = []

    # -- start ---------------------------------------------------------------------------

    def check_identity(self, data_dir: str) -> None:
        """Bind the data directory to this cluster and node name (made on first start)."""
        path = os.path.join(data_dir, IDENTITY_FILE)
        try:
            with open(path, "rb") as f:
                mine = orjson.loads(f.read())
        except FileNotFoundError:
            mine = {"cluster": self.cluster, "node": self.name, "id": uuid.uuid4().hex}
            with open(path + ".tmp", "wb") as f:
                f.write(orjson.dumps(mine))
                f.flush()
                os.fsync(f.fileno())
            os.replace(path + ".tmp", path)
        if mine["cluster"] != self.cluster:
            raise ClusterRefused(f"data directory {data_dir} belongs to cluster "
                                 f"{mine['cluster']!r}, not {self.cluster!r}")
        if mine["node"] != self.name:
            raise ClusterRefused(f"data directory {data_dir} belongs to node {mine['node']!r}, "
                                 f"not {self.name!r}")
        self.id = mine["id"]

    async def connect(self) -> None:
        """Wait until etcd answers (saying so once), then check this node's name is free."""
        warned = False
        while True:
            try:
                kvs, _ = await self.etcd.range(self.root + "known/" + self.name)
                break
            except e.EtcdUnavailable as error:
                if not warned:
                    log.warning("%s; retrying every second (serving nothing until then)", error)
                    warned = True
                await asyncio.sleep(1)
        if warned:
            log.info("etcd reached")
        if kvs:
            bound = orjson.loads(kvs[0].value)
            if bound["id"] != self.id and await self._live(self.name):
                raise ClusterRefused(f"node name {self.name!r} is live in cluster "
                                     f"{self.cluster!r} with another data directory")

    async def _live(self, name: str) -> bool:
        kvs, _ = await self.etcd.range(self.root + "nodes/" + name)
        return bool(kvs)

    async def first_start(self, init) -> None:
        """Run `init()` (the first metadata) on one node only: the one holding
        `cluster/init`; the others wait until it is done (`init` is idempotent)."""
        lease = await self.etcd.grant(self.ttl)
        key = self.root + "init"
        while True:     # until the holder is done (or dead) and this node gets its turn
            won, _ = await self.etcd.txn([e.absent(key)], [e.put(key, self.id.encode(), lease)])
            if won:
                try:
                    await init()
                finally:
                    await self.etcd.revoke(lease)
                return
            await asyncio.sleep(0.2)

    async def join(self) -> None:
        """Register (with the ports the transports listen on), then follow the cluster."""
        await self._register()
        kvs, revision = await self.etcd.range(self.root, prefix=True)
        for kv in kvs:
            self._apply("PUT", kv)
        self._tasks = [asyncio.ensure_future(self._keep_alive()),
                       asyncio.ensure_future(self._follow(revision + 1))]
        await self._stand()
        self._notify()

    def registration(self) -> dict:
        server = self.server
        host = split_address(server.cfg["tcp"]["address"])[0]
        return {"name": self.name, "id": self.id, "host": host, "lease": self.lease,
                "ports": dict(server.listen_ports), "replication": self.replication_address,
                "started": server.started_at}

    async def _register(self) -> None:
        self.lease = await self.etcd.grant(self.ttl)
        record = self.registration()
        key, known = self.root + "nodes/" + self.name, self.root + "known/" + self.name
        ops = [e.put(key, orjson.dumps(record), self.lease),
               e.put(known, orjson.dumps({"id": self.id, "host": record["host"],
                                          "ports": record["ports"]}))]
        while True:
            won, reply = await self.etcd.txn([e.absent(key)], ops, [e.get(key)])
            if won:
                break
            previous = [e.KV(kv) for r in reply["responses"]
                        for kv in r["response_range"].get("kvs", ())]
            if not previous:
                continue
            old = orjson.loads(previous[0].value)
            if old["id"] != self.id:
                await self.etcd.revoke(self.lease)
                raise ClusterRefused(f"node name {self.name!r} is live in cluster "
                                     f"{self.cluster!r} with another data directory")
            # This node's previous life (killed, restarted at once): take its place now and
            # end its lease, so what it held (the controller role) is released too.
            won, _ = await self.etcd.txn([e.mod_revision_is(key, previous[0].mod_revision)],
                                         ops)
            if won:
                await self.etcd.revoke(previous[0].lease)
                log.info("replaced the registration of this node's previous run")
                break
        log.info("joined cluster %r as node %r (lease %x, %d s)", self.cluster, self.name,
                 self.lease, self.ttl)

    async def _stand(self) -> None:
        """Become the controller if there is none."""
        key = self.root + "controller"
        value = orjson.dumps({"name": self.name, "id": self.id, "lease": self.lease})
        try:
            won, _ = await self.etcd.txn([e.absent(key)], [e.put(key, value, self.lease)])
        except e.EtcdUnavailable as error:
            log.warning("controller election: %s", error)
            return
        if won:
            log.info("node %r is the controller", self.name)

    @property
    def is_controller(self) -> bool:
        return bool(self.controller) and self.controller.get("id") == self.id \
            and self.controller.get("lease") == self.lease

    def controller_value(self) -> bytes:
        return orjson.dumps(self.controller)

    # -- following -----------------------------------------------------------------------

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                if await self.etcd.keepalive(self.lease) > 0:
                    continue
                log.warning("this node's lease expired; registering again")
                await self._register()
                await self._stand()
            except e.EtcdUnavailable as error:
                log.warning("lease renewal: %s", error)
            except Exception:
                log.exception("lease renewal failed")

    async def _follow(self, revision: int) -> None:
        while True:
            try:
                async for events in self.etcd.watch(self.root, revision):
                    for kind, kv in events:
                        self._apply(kind, kv)
                        revision = kv.mod_revision + 1
                    if any(kv.key == self.root + "controller" and kind == "DELETE"
                           for kind, kv in events):
                        await self._stand()
                    self._notify()
            except e.EtcdUnavailable as error:
                log.warning("cluster watch: %s; resuming", error)
                await asyncio.sleep(1)
            except Exception:
                log.exception("cluster watch failed; resuming")
                await asyncio.sleep(1)

    def _apply(self, kind: str, kv) -> None:
        name = kv.key[len(self.root):]
        if not name.startswith(("nodes/", "known/", "controller", "rebalance")):
            return                  # `init`: not JSON, nothing to follow
        value = orjson.loads(kv.value) if kind != "DELETE" else None
        if name.startswith("nodes/"):
            if value is None:
                self.nodes.pop(name[6:], None)
            else:
                self.nodes[name[6:]] = value
        elif name.startswith("known/") and value is not None:
            self.known[name[6:]] = value
        elif name == "controller":
            self.controller = value
        elif name == "rebalance":
            self.rebalance = value

    def _notify(self) -> None:
        for callback in self.on_change:
            try:
                callback()
            except Exception:
                log.exception("cluster change handler failed")

    # -- stop ----------------------------------------------------------------------------

    async def leave(self) -> None:
        """A clean stop: end the lease now (the node is gone at once, not after its TTL)."""
        for task in self._tasks:
            task.cancel()
        if self.lease:
            try:
                await self.etcd.revoke(self.lease)
            except e.EtcdUnavailable:
                pass
        await self.etcd.close()
