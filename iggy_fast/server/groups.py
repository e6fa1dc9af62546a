"""Consumer groups (PROTOCOL.md §5.8): a topic's partitions spread over connected members.

Membership belongs to a connection (a `Client`), never to storage: members vanish when they
leave, log out, disconnect or miss heartbeats for `heartbeat.interval`. Every change of the
member set or of the topic's partitions rebalances the group: partitions (sorted) are dealt
round-robin to members (sorted by member id) and the generation goes up, which tells members
to re-sync. A group poll names a partition; one the member does not own is fenced with the
0xFFFFFFFF sentinel so the SDK re-syncs. Groups (id, name) persist under their topic's key,
"<topic key>/groups/<id>", and memory follows the store by applying committed changes (see
state.py); their offsets are ordinary consumer offsets keyed by group id, which only the
member owning a partition may store or delete (anyone who may poll may read them). Group ids
count up per topic ("<topic key>/groupseq") and are never reused.

A connection may poll for another (service/routing.py: the official SDK's poll connection,
bound by a RoutePoll token to the connection that asked): it polls as that member, and its
requests keep that member from timing out.

A member is (node name, client id): the node is "" on a single node. In a cluster (see
cluster/groups.py) the members of a group are those of every node, kept in etcd, and a
member's partition requests are served by the partition's leader, which knows the member by
the node and client id its request was forwarded with. A member id is the lowest free one on
a single node and the etcd revision that made the member in a cluster; either way partitions
are dealt to members in member-id order, so every node computes the same assignment.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os

from iggy_fast.config import parse_duration_us
from iggy_fast.protocol.errors import (ConsumerGroupIdNotFound, ConsumerGroupMemberNotFound,
                                       ConsumerGroupNameAlreadyExists, InvalidConsumerGroupName,
                                       ResourceNotFound, TopicIdNotFound, Unauthorized)
from iggy_fast.server.state import GROUP, Topic, consumer_key

log = logging.getLogger("iggy_fast.groups")


class Group:
    def __init__(self, topic, gid: int, name: str):
        self.topic = topic
        self.id = gid
        self.name = name
        self.members: dict[int, tuple[str, int]] = {}    # member id -> (node, client id)
        self.assignment: dict[int, list[int]] = {}   # member id -> partition ids
        self.generation = 0
        self.cursor: dict[int, int] = {}             # member id -> next partition index

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.topic.stream.id, self.topic.id, self.id)

    def member_id(self, who: tuple[str, int]) -> int | None:
        for mid, member in self.members.items():
            if member == who:
                return mid
        return None

    def rebalance(self) -> None:
        partitions = sorted(self.topic.partitions)
        mids = sorted(self.members)
        self.assignment = {mid: [] for mid in mids}
        for i, pid in enumerate(partitions):
            if mids:
                self.assignment[mids[i % len(mids)]].append(pid)
        self.cursor = {mid: 0 for mid in mids}
        self.generation += 1


def _groups(topic) -> dict[int, Group]:
    return topic.extra.setdefault("groups", {})


class Groups:
    def __init__(self, server):
        self.server = server
        self.store = server.store
        self.lock = server.metadata_lock
        server.state.listeners.append(self._on_state)
        server.disconnect_hooks.append(self.leave_all)
        self.timeout = parse_duration_us(server.cfg["heartbeat"]["interval"])
        server.periodic_tasks.append((max(0.2, self.timeout / 4e6), self.expire_silent))
        self.node = ""
        self.routed: dict[int, int] = {}    # poll connection id -> the client it polls for
        self._key = os.urandom(32)          # signs RoutePoll tokens (this process's only)
        self.shared = None          # a cluster's membership, in etcd (cluster/groups.py)
        if server.cluster is not None:
            from iggy_fast.server.cluster.groups import SharedMembership
            self.node = server.cluster.node.name
            self.shared = server.cluster.groups = SharedMembership(self, server.cluster)

    def who(self, client) -> tuple[str, int]:
        """The member a request speaks for: its connection's (or, on a poll connection, the
        one it polls for), or for a request another node forwarded (replication.py), the
        member's on that node."""
        if client.transport == "replication":
            return client.address, client.id
        return self.node, self.routed.get(client.id, client.id)

    def route_token(self, client) -> bytes:
        """The 32-byte token RoutePoll gives `client`: its id and a MAC of it under this
        process's key, so only a token this node gave binds a connection (bind_route)."""
        cid = client.id.to_bytes(8, "little")
        return cid + hashlib.blake2b(cid, key=self._key, digest_size=24).digest()

    def bind_route(self, client, token: bytes) -> None:
        """BindPollRoute: `client` polls from now on for the connection the token was given
        to, which must be logged in as the same user."""
        cid = int.from_bytes(token[:8], "little")
        asker = self.server.clients.get(cid)
        if asker is None or not hmac.compare_digest(token, self.route_token(asker)) \
                or asker.user_id != client.user_id:
            raise Unauthorized("not a poll route this node gave to this user")
        self.routed[client.id] = cid

    def refresh(self, topic_identity: int, gid: int) -> None:
        """A cluster's member list of a group changed (cluster/groups.py): rebalance."""
        topic = self.server.state.by_identity.get(topic_identity)
        group = _groups(topic).get(gid) if isinstance(topic, Topic) else None
        if group is not None:
            group.members = self.shared.members_of(topic_identity, gid)
            group.rebalance()
            log.info("group %s has %d member(s) (generation %d)", group.name,
                     len(group.members), group.generation)

    def apply(self, change) -> None:
        """Follow committed changes to group records, "<topic key>/groups/<id>" and the
        counter "<topic key>/groupseq" (a deleted topic's go with it: see _on_state)."""
        for key in change.deletes:
            topic, kind, gid = self._parse(key)
            if kind == "groups" and gid in _groups(topic):
                self._drop(_groups(topic).pop(gid))
        for key, v in change.puts:
            topic, kind, gid = self._parse(key)
            if kind == "groups":
                group = Group(topic, gid, v["name"])
                if self.shared is not None:     # members may have joined on other nodes
                    group.members = self.shared.members_of(topic.identity, gid)
                group.rebalance()
                _groups(topic)[gid] = group
            elif kind == "groupseq":
                topic.extra["next_group_id"] = v["next"]

    def _parse(self, key: str):
        """(topic, "groups" | "groupseq", group id) for a live topic's group key, else Nones."""
        parts = key.split("/")
        if parts[0] != "streams" or len(parts) < 5 or parts[2] != "topics":
            return None, None, None
        if len(parts) == 6 and parts[4] == "groups":
            kind, tkey, gid = "groups", parts[3], int(parts[5])
        elif len(parts) == 5 and parts[4] == "groupseq":
            kind, tkey, gid = "groupseq", parts[3], None
        else:
            return None, None, None
        topic = self.server.state.by_identity.get(int(tkey))
        return (topic, kind, gid) if topic is not None else (None, None, None)

    def _drop(self, group: Group) -> None:
        """A deleted group: its members leave it, its offsets go."""
        self._forget_members(group)
        ckey = consumer_key(GROUP, group.id)
        for partition in group.topic.partitions.values():
            if ckey in partition.offsets:
                partition.offsets.delete(ckey, False)

    # -- lookups -------------------------------------------------------------------------

    def find(self, topic, ident) -> Group | None:
        groups = _groups(topic)
        if isinstance(ident, int):
            return groups.get(ident)
        for g in groups.values():
            if g.name == ident:
                return g
        return None

    def get(self, topic, ident) -> Group:
        group = self.find(topic, ident)
        if group is None:
            raise ConsumerGroupIdNotFound()
        return group

    def list(self, topic) -> list[Group]:
        return [g for _, g in sorted(_groups(topic).items())]

    def group_id(self, topic, ident) -> int:
        return self.get(topic, ident).id

    # -- changes -------------------------------------------------------------------------

    async def create(self, topic, name: str) -> Group:
        if not 1 <= len(name.encode()) <= 255:
            raise InvalidConsumerGroupName()
        async with self.lock:
            if not self.server.state.live(topic):       # deleted while we waited
                raise TopicIdNotFound()
            if self.find(topic, name) is not None:
                raise ConsumerGroupNameAlreadyExists()
            gid = topic.extra.get("next_group_id", 0)
            await self.store.commit(puts=[(f"{topic.path}/groups/{gid}", {"name": name}),
                                          (f"{topic.path}/groupseq", {"next": gid + 1})])
            return _groups(topic)[gid]

    async def delete(self, topic, ident) -> None:
        async with self.lock:
            if not self.server.state.live(topic):
                raise TopicIdNotFound()
            group = self.get(topic, ident)
            await self.store.commit(deletes=[f"{topic.path}/groups/{group.id}"])

    def join(self, client, topic, ident):
        """None, or in a cluster an awaitable of None once this node sees the member."""
        group = self.get(topic, ident)
        if self.shared is not None:
            return self.shared.join(client, group)
        if group.member_id(self.who(client)) is None:   # a second join keeps the membership
            mid = 0
            while mid in group.members:
                mid += 1
            group.members[mid] = self.who(client)
            client.groups.add(group.key)
            group.rebalance()
            log.info("client %s joined group %s (generation %d)", client.id, group.name,
                     group.generation)
        return None

    def leave(self, client, topic, ident):
        """None, or in a cluster an awaitable of None once this node sees the member gone."""
        group = self.get(topic, ident)
        if self.shared is not None:
            return self.shared.leave(client, group)
        mid = group.member_id(self.who(client))
        if mid is None:
            raise ConsumerGroupMemberNotFound()
        self._remove(group, mid, client)
        return None

    def _remove(self, group: Group, mid: int, client) -> None:
        del group.members[mid]
        client.groups.discard(group.key)
        group.rebalance()
        log.info("client %s left group %s (generation %d)", client.id, group.name,
                 group.generation)

    def _forget_members(self, group: Group) -> None:
        """A group or topic deleted: this node's members stop being members."""
        if self.shared is not None:
            self.shared.forget(group)
            return
        for _, cid in group.members.values():
            client = self.server.clients.get(cid)
            if client is not None:
                client.groups.discard(group.key)

    def leave_all(self, client) -> None:
        """Logout or disconnect: the client's memberships end (and a poll connection's
        binding)."""
        self.routed.pop(client.id, None)
        for sid, tid, gid in list(client.groups):
            stream = self.server.state.streams.get(sid)
            topic = stream.topics.get(tid) if stream else None
            group = _groups(topic).get(gid) if topic else None
            if group is None:
                continue
            if self.shared is not None:
                self.shared.leave_soon(client, group)
                continue
            mid = group.member_id(self.who(client))
            if mid is not None:
                self._remove(group, mid, client)
        client.groups.clear()

    def expire_silent(self, now: int) -> None:
        """Members whose connection, and poll connections, sent nothing for a heartbeat
        interval are removed."""
        clients = self.server.clients
        polled: dict[int, int] = {}
        for poller, cid in self.routed.items():
            if poller in clients:
                polled[cid] = max(polled.get(cid, 0), clients[poller].last_seen)
        for client in list(clients.values()):
            if client.groups and now - max(client.last_seen, polled.get(client.id, 0)) \
                    > self.timeout:
                log.info("client %s missed its heartbeats; leaving its groups", client.id)
                self.leave_all(client)

    def _on_state(self, event: str, topic) -> None:
        if event == "partitions_changed":
            for group in _groups(topic).values():
                group.rebalance()
        elif event == "topic_deleted":
            for group in _groups(topic).values():
                self._forget_members(group)
            _groups(topic).clear()

    # -- polling -------------------------------------------------------------------------

    def sync(self, client, topic, ident):
        group = self.get(topic, ident)
        mid = group.member_id(self.who(client))
        if mid is None:
            return None
        return group.generation, group.assignment.get(mid, [])

    def offset_owner(self, client, topic, ident, partition_id: int) -> int:
        """The group id under which `client` may store or delete the group's offset of
        `partition_id`: only a member that owns that partition may (as Iggy's commit fence),
        so a stale or foreign client cannot move a shared offset. Anyone else gets 20, the
        code Iggy answers for this refusal; an unknown group 5000."""
        group = self.get(topic, ident)
        mid = group.member_id(self.who(client))
        if mid is None or partition_id not in group.assignment.get(mid, ()):
            raise ResourceNotFound("not a member owning this partition")
        return group.id

    def member_partition(self, client, topic, ident, partition_id, peek: bool = False):
        """(partition to read or None when fenced, group id) for a group poll. With no
        partition named, the member's partitions take turns (`peek`: say whose turn it is
        without taking it)."""
        group = self.get(topic, ident)
        mid = group.member_id(self.who(client))
        if mid is None:
            raise ConsumerGroupMemberNotFound()
        owned = group.assignment.get(mid, [])
        if partition_id is None:
            if not owned:
                return None, group.id
            i = group.cursor.get(mid, 0)
            if not peek:
                group.cursor[mid] = i + 1
            return owned[i % len(owned)], group.id
        return (partition_id if partition_id in owned else None), group.id
