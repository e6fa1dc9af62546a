"""Consumer groups shared by the cluster's nodes: membership in etcd, assignment everywhere.

A group (its id and name) is metadata, already in etcd with its topic. Who is a member is
kept here, one etcd key per member under the lease of the node the member is connected to:

    groups/<topic identity>/<group id>/<node name>/<client id>     (empty value)

Every node watches `groups/` and holds the same member list per group; the member id is the
key's create revision (unique cluster-wide, and its order is the order of joining), and
every node deals the partitions to the members sorted by member id (server/groups.py,
`Group.rebalance`), so all nodes compute the same assignment without talking to each other.
A member whose node dies vanishes when the node's lease expires, and every node rebalances.
When this node's lease is lost while it lives (paused past its TTL), etcd deletes its
members' keys; it puts them again under its new lease.

Why etcd for membership and not for offsets: members join and leave rarely (a connection's
life), a write etcd handles well; a group's offsets change with every poll, so they stay with
their partition, stored on its leader and copied to the followers with the partition
(replication.py). The member's poll and offset requests are therefore served by the
partition's leader (forwarded from the member's node, carrying the member's node and client
id), and the leader checks that the member owns the partition in its own view: at any
moment each partition has at most one owner in the eyes of the one node that serves it.
Views differ for the milliseconds a change takes to reach every node; a member fenced
meanwhile is told to re-sync (the fenced-poll sentinel) and polls again.

Why a separate watch, outside `cluster/`: the node's watch (node.py) wakes the controller
and the replication tasks on every event under `cluster/`; membership changes need neither.
"""

from __future__ import annotations

import asyncio
import logging

from iggy_fast.protocol.errors import ConsumerGroupMemberNotFound, TransientNotAccepted
from iggy_fast.server.cluster import etcd as e

log = logging.getLogger("iggy_fast.groups")

SEEN_TIMEOUT = 5.0      # how long a join or leave waits to see its own change


class SharedMembership:
    def __init__(self, groups, cluster):
        self.groups = groups
        self.node = cluster.node
        self.prefix = f"/iggy/{self.node.cluster}/groups/"
        # (topic identity, group id) -> {member id: (node name, client id)}, as etcd has it.
        self.members: dict[tuple[int, int], dict[int, tuple[str, int]]] = {}
        self.mine: dict[str, object] = {}       # this node's members: etcd key -> Client
        self._ids: dict[str, tuple[tuple[int, int], int]] = {}     # key -> (group, member id)
        self._seen = 0
        self._waiting: list = []
        self._writes = asyncio.Lock()           # a leave never overtakes its join in etcd
        self._task = None

    # -- following etcd ------------------------------------------------------------------

    async def start(self) -> None:
        revision = await self._load()
        self._task = asyncio.ensure_future(self._follow(revision + 1))

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _load(self) -> int:
        kvs, revision = await self.node.etcd.range(self.prefix, prefix=True)
        touched = set(self.members)
        self.members.clear()
        self._ids.clear()
        for kv in kvs:
            self._apply("PUT", kv)
        for gkey in touched | set(self.members):
            self.groups.refresh(*gkey)
        self._advance(revision)
        return revision

    async def _follow(self, revision: int) -> None:
        while True:
            try:
                async for events in self.node.etcd.watch(self.prefix, revision):
                    touched = set()
                    for kind, kv in events:
                        touched.add(self._apply(kind, kv))
                        revision = kv.mod_revision + 1
                    for gkey in touched - {None}:
                        self.groups.refresh(*gkey)
                    self._advance(revision - 1)
            except ValueError:          # compacted past where the watch was: read it all
                revision = await self._load() + 1
            except e.EtcdUnavailable as error:
                log.warning("group membership watch: %s; resuming", error)
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("group membership watch failed; resuming")
                await asyncio.sleep(1)

    def _apply(self, kind: str, kv):
        """One event: the group it changes, or None for a key that is not a member's."""
        parts = kv.key[len(self.prefix):].split("/")
        if len(parts) != 4:
            return None
        try:
            gkey, who = (int(parts[0]), int(parts[1])), (parts[2], int(parts[3]))
        except ValueError:
            return None
        if kind == "DELETE":
            known = self._ids.pop(kv.key, None)
            if known is not None:
                self.members.get(known[0], {}).pop(known[1], None)
            if kv.key in self.mine:     # not left: this node's lease was lost; join again
                asyncio.ensure_future(self._rejoin(kv.key))
        else:
            mid = kv.create_revision
            self._ids[kv.key] = (gkey, mid)
            self.members.setdefault(gkey, {})[mid] = who
        if not self.members.get(gkey, True):
            del self.members[gkey]
        return gkey

    def _advance(self, revision: int) -> None:
        self._seen = max(self._seen, revision)
        still = []
        for wanted, waiter in self._waiting:
            if wanted <= self._seen:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                still.append((wanted, waiter))
        self._waiting = still

    async def _seen_up_to(self, revision: int) -> None:
        """Return once this node's view holds every membership change up to `revision`."""
        if self._seen >= revision:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append((revision, waiter))
        try:
            await asyncio.wait_for(waiter, SEEN_TIMEOUT)
        except asyncio.TimeoutError:
            log.warning("group membership watch has not reached revision %d", revision)

    def members_of(self, topic_identity: int, gid: int) -> dict[int, tuple[str, int]]:
        return dict(self.members.get((topic_identity, gid), {}))

    # -- this node's members -------------------------------------------------------------

    def _key(self, group, client) -> str:
        return f"{self.prefix}{group.topic.identity}/{group.id}/{self.node.name}/{client.id}"

    async def join(self, client, group) -> None:
        key = self._key(group, client)
        if key in self.mine:            # a second join keeps the membership (as Iggy)
            return
        self.mine[key] = client
        client.groups.add(group.key)
        try:
            async with self._writes:
                revision = await self.node.etcd.put(key, b"", self.node.lease)
        except (e.EtcdUnavailable, e.EtcdError) as error:
            self.mine.pop(key, None)
            client.groups.discard(group.key)
            raise TransientNotAccepted(f"the membership could not be recorded: {error}") \
                from None
        await self._seen_up_to(revision)
        log.info("client %s joined group %s", client.id, group.name)

    async def leave(self, client, group) -> None:
        key = self._key(group, client)
        if self.mine.pop(key, None) is None:
            raise ConsumerGroupMemberNotFound()
        client.groups.discard(group.key)
        revision = await self._delete(key)
        if revision:
            await self._seen_up_to(revision)
        log.info("client %s left group %s", client.id, group.name)

    def leave_soon(self, client, group) -> None:
        """Disconnect, heartbeat timeout, the group deleted: end the membership (no one
        waits for it)."""
        key = self._key(group, client)
        if self.mine.pop(key, None) is not None:
            client.groups.discard(group.key)
            asyncio.ensure_future(self._delete(key))

    def forget(self, group) -> None:
        """The group (or its topic) was deleted: this node's members of it end."""
        for key, client in list(self.mine.items()):
            if key.startswith(f"{self.prefix}{group.topic.identity}/{group.id}/"):
                self.leave_soon(client, group)

    async def _delete(self, key: str) -> int:
        """Delete a member's key: the revision of the deletion (0: it was gone already).
        While etcd is unreachable, tried again every second (a member left behind would keep
        its partitions from the others for as long as this node lives)."""
        while True:
            try:
                async with self._writes:
                    if key in self.mine:        # joined again meanwhile: keep it
                        return 0
                    _, reply = await self.node.etcd.txn([], [e.delete(key)])
                break
            except e.EtcdUnavailable as error:
                log.warning("group member %s not removed yet: %s", key, error)
                await asyncio.sleep(1)
        deleted = int(reply["responses"][0]["response_delete_range"].get("deleted", 0))
        return int(reply["header"]["revision"]) if deleted else 0

    async def _rejoin(self, key: str) -> None:
        while key in self.mine:
            try:
                async with self._writes:
                    if key in self.mine:
                        await self.node.etcd.put(key, b"", self.node.lease)
                return
            except (e.EtcdUnavailable, e.EtcdError) as error:   # the new lease not yet granted
                log.debug("group member %s not put back yet: %s", key, error)
                await asyncio.sleep(1)
