"""Leader routing for IggyClient: a partition's requests go straight to the node leading it.

In an iggy-fast cluster (server/cluster/) every partition has one leader; a node that gets a
request for a partition it does not lead forwards it to the leader (an extra hop, and work
for the forwarding node). `Router` spares that hop: it keeps, per topic, which node leads
each partition and at which address, and a small pool of connections (one `Link` per leader
node, logged in like the main one, opened when first needed), and the client sends a
partition request over the leader's link. Everything else (metadata, logins, group
membership) stays on the client's main connection.

How the leaders are learnt: GetPartitionLeaders (code 9000), an iggy-fast extension
(docs/protocol.md §5.7): for one topic and the client's transport, per partition the leader's
node name, its leader epoch and that node's address. Why a command of our own rather than
GetClusterMetadata (12): that answer's shape is fixed by PROTOCOL.md and parsed by the
official SDK, and it lists nodes, not partitions; and why not the official SDK's poll routing
(RoutePoll, 103): it routes polls only, costs a request before each, and serves a different
purpose (server/service/routing.py). One request per topic returns every partition: cheap
to ask again whenever in doubt. A server that does not know the command (a single iggy-fast
node answers FeatureUnavailable, an Apache Iggy server InvalidCommand) turns routing off for
the client's life: every request then goes over the one connection, as before.

When. Routing is on by default for a client given several addresses (a cluster's nodes, which
a cluster client lists anyway to fail over between them); a client given one address sends
exactly the requests it always did, not one more, unless asked to route
(`IggyClient(..., route_to_leaders=True)`): one address is usually one server, and asking it
for leaders would be a request on the wire that no single server needs.

What goes to a leader: sends to a partition the client names (send_messages/send_batch with
a partition id, so every IggyProducer send: its partitioners choose the id on the client),
polls, offset reads, stores and deletions of a single consumer naming its partition, and
flushes. What stays on the main connection (its node forwards, as without routing): sends
whose partition the server chooses (balanced, messages_key), polls naming no partition, and
a consumer group's polls and offsets (a group member is the connection that joined: the
leader checks that this very member owns the partition, so they must come from it).

Learning and refreshing, off the hot path. A request looks its partition up in the map and
uses the leader's link when it is open (a dict lookup and a clock read). Otherwise the
request waits, once, for the topic's map and for the first connection to the leader (bounded
by the client's timeouts); any failure there sends it over the main connection instead. The
map is asked again in the background: every REFRESH seconds while the topic is in use (a
leader moved by a rebalance is found within that; meanwhile the old leader forwards), when
a partition has no known leader, and when a request answers TransientNotAccepted or a
leader's link fails. An answer never replaces a partition's leader with one of an older
epoch (the node asked may not have seen the latest placement yet). There is no "not leader"
answer to react to: a node that does not (or no longer) lead a partition serves its requests
by forwarding them, so a stale map costs a hop until the next refresh, never an error.

Order. A partition's requests keep the order they were made in (a pipelined producer's
batches are stored in send order): a request that must find its route (the leaders being
learnt, the leader's link being opened, the route changing) does so in its turn under the
partition's FIFO lock, its later requests queue behind it, and when the route changes (main
connection to leader, or one leader to the next) the new link is used only once the requests
still in flight on the old one are answered (`Lane`). The cost on the hot path, once the route
is known: three dict lookups, a clock read and a counter.

Upkeep. The client's heartbeat pings the leaders' links too (a task of its own), so a node's
idle timeout does not close them between bursts.

Failover (a leader killed). The request in flight on the dead leader's link fails with
Disconnected or RequestTimeout, as a request on the main connection does: the client does
not send it again, because the dead leader may have appended it and replicated it to the next
leader (a client resend would store a second copy; the server's own forwarding retries are
recognised, a client's are not: replication.py, "Forwarding"). The caller decides (our
IggyProducer reports the batch as failed). The node is then marked down and its link
dropped; requests for its partitions go over the main connection, whose node forwards them
and waits for the next leader itself, while the map is asked again (at most every
MIN_REFRESH seconds) until it names a live leader, and the link to the node that is down is
tried again (in the background, at most every RETRY_DOWN seconds). So within the failover
time (the dead node's lease, ~2 x lease_ttl) requests go straight to the new leader. If the
main connection's own node died, the main connection reconnects as before (its address
list) while the leaders' links keep serving their partitions.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time

from iggy_fast.protocol import client_codec as codec
from iggy_fast.protocol.codes import GET_PARTITION_LEADERS, TRANSPORTS
from iggy_fast.protocol.errors import (FeatureUnavailable, IggyError, InvalidCommand,
                                       UndecodableReply)
from iggy_fast.protocol.results import PartitionLeader

log = logging.getLogger("iggy_fast.client.cluster")

REFRESH = 5.0           # seconds a topic's map is trusted before it is asked again (background)
MIN_REFRESH = 0.25      # at most one refresh of a topic this often when in doubt
RETRY_DOWN = 1.0        # a failed leader's link is tried again at most this often
# The client's transport -> its number in GetPartitionLeaders (codes.TRANSPORTS). HTTP is
# not routed: its link speaks REST routes, which have no such command.
_TRANSPORT_NUMBERS = {"tcp": TRANSPORTS["TCP"], "quic": TRANSPORTS["QUIC"],
                      "ws": TRANSPORTS["WebSocket"]}
_WILDCARDS = ("", "0.0.0.0", "::", "[::]")
_monotonic = time.monotonic


def routable(transport: str) -> bool:
    return transport in _TRANSPORT_NUMBERS


def transport_number(transport: str) -> int:
    """The client's transport as GetPartitionLeaders names it (codes.TRANSPORTS)."""
    return _TRANSPORT_NUMBERS.get(transport, TRANSPORTS["HTTP"])


class Router:
    """The leader map and the leaders' links of one IggyClient (see the module docstring)."""

    def __init__(self, client):
        self.client = client
        self.transport = _TRANSPORT_NUMBERS[client.config.transport]
        self.supported = True                   # False: the server does not know 9000
        self.topics: dict[tuple, dict[int, PartitionLeader]] = {}
        self.due: dict[tuple, float] = {}       # topic -> when its map is to be asked again
        self.asked: dict[tuple, float] = {}     # topic -> when it was last asked
        self.links: dict[str, object] = {}      # leader address -> its Link
        self.down: dict[str, float] = {}        # leader address -> when its link last failed
        self.lanes: dict[tuple, Lane] = {}      # (stream, topic, partition) -> its lane
        self._refreshing: dict[tuple, asyncio.Task] = {}
        self._opening: dict[str, asyncio.Task] = {}
        self._pinging: asyncio.Task | None = None

    # -- the request path -----------------------------------------------------------------

    def pick(self, stream, topic, partition_id: int):
        """The open link to the partition's leader, or None (then `find`)."""
        key = (stream, topic)
        leaders = self.topics.get(key)
        if leaders is None:
            return None
        leader = leaders.get(partition_id)
        if leader is None:
            return None
        link = self.links.get(leader.address)
        if link is None or link.closed:
            return None
        if _monotonic() >= self.due[key]:
            self.refresh(key)                   # in the background; this request goes now
        return link

    async def find(self, stream, topic, partition_id: int):
        """The slow path: learn the topic's leaders and open the leader's link, waiting only
        when nothing has failed yet; None sends the request over the main connection."""
        if not self.supported:
            return None
        deadline = _monotonic() + self.client.config.timeout    # for all of it
        key = (stream, topic)
        leaders = self.topics.get(key)
        if leaders is None:
            # Requests arriving meanwhile wait for the same answer, so they go in their order.
            task = self._refreshing.get(key)
            if task is None or task.done():
                if _monotonic() - self.asked.get(key, -MIN_REFRESH) < MIN_REFRESH:
                    return None                 # just asked, and it did not answer a map
                task = self.refresh(key)
            await self._wait(task, deadline - _monotonic())
            leaders = self.topics.get(key)
            if leaders is None or not self.supported:
                return None
        leader = leaders.get(partition_id)
        if leader is None or not leader.address:
            self.refresh_soon(key)              # unknown partition, or no leader right now
            return None
        address = leader.address
        link = self.links.get(address)
        if link is not None and not link.closed:
            return link
        failed_at = self.down.get(address)
        if failed_at is not None:
            # It failed: go around it now; try it again in the background, and ask whether
            # the partition has moved meanwhile.
            self.refresh_soon(key)
            if _monotonic() - failed_at >= RETRY_DOWN:
                self.open(address)
            return None
        # (shared by the requests arriving meanwhile, as the map is)
        await self._wait(self.open(address), deadline - _monotonic())
        link = self.links.get(address)
        return link if link is not None and not link.closed else None

    def lane(self, key: tuple) -> "Lane":
        lane = self.lanes.get(key)
        if lane is None:
            lane = self.lanes[key] = Lane()
        return lane

    def failed(self, link, stream, topic) -> None:
        """A request on a leader's link failed with a connection error or a timeout: drop
        the link, mark its node down and ask where its partitions are led now."""
        address = link.address
        self.down[address] = _monotonic()
        if self.links.get(address) is link:
            del self.links[address]
        if not link.closed:
            asyncio.ensure_future(link.close())
        log.warning("the leader at %s failed (%s); its partitions go through %s until the "
                    "cluster names their next leader", address, getattr(link, "error", None),
                    self.client.address)
        for key, leaders in self.topics.items():
            if any(p.address == address for p in leaders.values()):
                self.due[key] = 0.0
        self.refresh_soon((stream, topic))

    def stale(self, stream, topic) -> None:
        """The topic's map may be out of date (a leader answered TransientNotAccepted)."""
        self.refresh_soon((stream, topic))

    # -- learning -------------------------------------------------------------------------

    def refresh(self, key: tuple) -> asyncio.Task:
        """The one task asking the topic's leaders (started if none runs)."""
        task = self._refreshing.get(key)
        if task is None or task.done():
            self.asked[key] = _monotonic()
            self.due[key] = self.asked[key] + REFRESH
            task = self._refreshing[key] = asyncio.get_running_loop().create_task(
                self._refresh(key))
        return task

    def refresh_soon(self, key: tuple) -> None:
        if _monotonic() - self.asked.get(key, -MIN_REFRESH) >= MIN_REFRESH:
            self.refresh(key)

    async def _refresh(self, key: tuple) -> None:
        stream, topic = key
        body = codec.get_partition_leaders(stream, topic, self.transport)
        try:
            answer = codec.read_partition_leaders(
                await self.client._call(GET_PARTITION_LEADERS, body))
        except (InvalidCommand, FeatureUnavailable, UndecodableReply) as e:
            if self.supported:
                log.info("the server does not tell partition leaders (%s): every request "
                         "goes over the one connection", e)
            self.supported = False
            return
        except (IggyError, ConnectionError, TimeoutError) as e:
            # (a topic that does not exist: its request, over the main connection, says so)
            log.debug("asking the leaders of %s/%s failed: %s", stream, topic, e)
            return
        old = self.topics.get(key, {})
        here = self.client.address
        new = {}
        for p in answer:
            before = old.get(p.partition_id)
            if before is not None and before.epoch > p.epoch:
                new[p.partition_id] = before    # that node has not seen the newer leader yet
                continue
            new[p.partition_id] = p._replace(address=_reachable(p.address, here))
        self.topics[key] = new

    def open(self, address: str) -> asyncio.Task:
        """The one task opening (and logging in) a link to `address`."""
        task = self._opening.get(address)
        if task is None or task.done():
            task = self._opening[address] = asyncio.get_running_loop().create_task(
                self._open(address))
        return task

    async def _open(self, address: str) -> None:
        from iggy_fast.client.aio import make_link

        client = self.client
        c = client.config
        link = make_link(c.transport, address, c)
        try:
            await asyncio.wait_for(link.connect(), c.connect_timeout)
            if client._credentials is not None:
                await client._login_on(link)
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError, TimeoutError,
                IggyError) as e:
            await link.close()
            self.down[address] = _monotonic()
            log.info("could not open a link to the leader at %s: %s", address,
                     str(e) or type(e).__name__)
            return
        previous = self.links.get(address)
        if previous is not None:
            await previous.close()
        self.links[address] = link
        self.down.pop(address, None)

    @staticmethod
    async def _wait(task: asyncio.Task, timeout: float) -> None:
        if timeout <= 0:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            pass

    # -- upkeep ---------------------------------------------------------------------------

    def heartbeat(self) -> None:
        """Ping the leaders' links (the client's heartbeat calls this every interval), in a
        task of its own so that a leader slow to answer does not hold up the main link's."""
        if self._pinging is None or self._pinging.done():
            self._pinging = asyncio.get_running_loop().create_task(self._ping())

    async def _ping(self) -> None:
        """Keep the leaders' links alive past the server's idle timeout."""
        for address, link in list(self.links.items()):
            if link.closed:
                continue
            try:
                await link.request(1)
            except (ConnectionError, TimeoutError) as e:
                self.down[address] = _monotonic()   # reopened in the background when needed
                log.warning("heartbeat to the leader at %s failed: %s", address, e)

    async def close(self) -> None:
        for task in (*self._refreshing.values(), *self._opening.values(), self._pinging):
            if task is not None:
                task.cancel()
        self._refreshing.clear()
        self._opening.clear()
        links, self.links = list(self.links.values()), {}
        for link in links:
            await link.close()


class Lane:
    """One partition's route: the link its requests go over now and how many are in flight on
    it. A request that must find its route (the leader not known yet, its link not open, or
    the route changing) holds `lock` while it does, so the partition's later requests queue
    behind it in their order (asyncio.Lock is FIFO) instead of overtaking it; `waiting` counts
    the requests on that path (a released lock reads unlocked before its next waiter has run,
    so the fast path looks at this count, not at the lock); and the route changes only once
    the requests in flight on the old link are answered."""
    __slots__ = ("link", "pending", "drained", "lock", "waiting")

    def __init__(self):
        self.link = None
        self.pending = 0
        self.drained: asyncio.Future | None = None     # set once pending is back to 0
        self.lock = asyncio.Lock()
        self.waiting = 0

    async def move(self, link) -> None:
        """Route the partition over `link`, once what is in flight on the old one is done
        (called holding `lock`, so nothing new goes out on the old link meanwhile)."""
        while self.pending:
            if self.drained is None:
                self.drained = asyncio.get_running_loop().create_future()
            await self.drained
        self.link = link

    def done(self) -> None:
        self.pending -= 1
        if self.pending == 0 and self.drained is not None:
            if not self.drained.done():
                self.drained.set_result(None)
            self.drained = None


def _reachable(address: str, dialled: str | None) -> str:
    """A leader address whose host is a wildcard (a node listening on every interface, as it
    registered it) with the host the client dialled instead."""
    if not address:
        return address
    host, _, port = address.rpartition(":")
    if host in _WILDCARDS and dialled:
        return f"{dialled.rpartition(':')[0]}:{port}"
    return address
