"""Our client in a cluster: each partition's requests go straight to its leader, and follow the
leader when it dies (client/cluster.py, GetPartitionLeaders: server/service/leaders.py).

How "straight to the leader" is seen from outside: every node counts the requests it gets
from clients per transport and command (`iggy_requests_total` in GET /metrics); a request a
node forwards is counted on the node the client sent it to, and not on the leader that
serves it (the leader gets it over the replication address). So with routing, each node's
TCP send count grows by the sends to the partitions it leads; without it (the same client,
`route_to_leaders=False`), the node the client dialled counts them all.

Shown: GetPartitionLeaders names the leaders etcd's placements name, at their TCP addresses;
an IggyProducer (balanced, partition ids chosen on the client) and plain sends, polls and
offsets for every partition of a 3-partition RF2 topic are served by the partitions' leaders,
every message where it was sent; a leader killed with SIGKILL under an IggyProducer: the
producer goes on, every acknowledged message is stored, and within the failover time its sends
go straight to the new leader (the dialled node stops counting them). A client given one
address sends what it always did (no routing); one asked to route against a single node asks
once, learns the node serves every partition itself, and uses its one connection for
everything. Skipped only without `etcd`.
"""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp
import pytest

from cluster_helpers import ETCD, connect, read_partition, start_cluster, stop_cluster
from conftest import wait_for
from iggy_fast.client import IggyClient, SyncIggyClient
from iggy_fast.client.producer import IggyProducer
from iggy_fast.protocol.errors import FeatureUnavailable, TopicIdNotFound, Unauthorized
from test_cluster import status
from test_http import started

pytestmark = [pytest.mark.skipif(ETCD is None, reason="no etcd binary on PATH "
                                 "(Debian: apt-get install etcd-server)"),
              pytest.mark.timeout(240)]

SENDS = 'iggy_requests_total{transport="tcp",command="send_messages"}'
POLLS = 'iggy_requests_total{transport="tcp",command="poll_messages"}'
STORES = 'iggy_requests_total{transport="tcp",command="store_consumer_offset"}'
LEADERS = 'iggy_requests_total{transport="tcp",command="get_partition_leaders"}'


async def scrape(session, srv) -> dict[str, float]:
    """One node's /metrics, as {sample: value} (logged in over its HTTP transport)."""
    base = f"http://127.0.0.1:{started(srv).http_port}"
    async with session.post(f"{base}/users/login",
                            json={"username": "iggy", "password": "iggy"}) as r:
        assert r.status == 200, await r.text()
        token = (await r.json())["access_token"]["token"]
    async with session.get(f"{base}/metrics",
                           headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200, await r.text()
        text = await r.text()
    return {key: float(value) for key, _, value in
            (line.rpartition(" ") for line in text.splitlines() if not line.startswith("#"))}


async def counts(session, nodes: dict, sample: str) -> dict[str, float]:
    return {name: (await scrape(session, n)).get(sample, 0.0) for name, n in nodes.items()}


def delta(after: dict, before: dict) -> dict:
    return {name: after[name] - before[name] for name in after}


async def dial(nodes: dict, first: str) -> IggyClient:
    """Our client given every node's address (so it routes), connected to `first`."""
    client = await connect(nodes[first], *(n for name, n in nodes.items() if name != first))
    assert client.address == nodes[first].address
    return client


def leaders_of(etcd, cluster: str, partitions: int) -> dict[int, str]:
    """partition id -> leader name, once every partition has a leader that may serve."""
    def ready():
        rows = status(etcd, cluster)["partitions"]
        return len(rows) == partitions and all(
            r.get("leader") and str(r.get("epoch")) in r.get("starts", {}) for r in rows)
    assert wait_for(ready, 20), status(etcd, cluster)
    return {r["partition"]: r["leader"] for r in status(etcd, cluster)["partitions"]}


async def test_each_partition_is_served_by_its_leader_without_forwarding(tmp_path):
    etcd, nodes = start_cluster(tmp_path, "route", 3)
    try:
        admin = await connect(nodes["node1"])
        await admin.create_stream("s")
        await admin.create_topic("s", "t", partitions_count=3)
        leaders = leaders_of(etcd, "route", 3)
        # The dialled node leads at most one of the three: most sends would be forwarded.
        dialled = min(nodes, key=lambda n: (list(leaders.values()).count(n), n))
        by_node = {name: sum(1 for v in leaders.values() if v == name) for name in nodes}

        client = await dial(nodes, dialled)
        answer = await client.get_partition_leaders("s", "t")
        assert [(p.partition_id, p.node, p.address) for p in answer] == [
            (pid, leaders[pid], nodes[leaders[pid]].address) for pid in range(3)]
        assert all(p.epoch >= 0 for p in answer)
        # Asked as any topic request: a missing topic is 2010 to root, and a user who may not
        # send to, poll or read the topic learns nothing (41).
        with pytest.raises(TopicIdNotFound):
            await client.get_partition_leaders("s", "nope")
        await admin.create_user("nobody", "secret123")
        nobody = IggyClient(f"iggy://nobody:secret123@{nodes[dialled].address}")
        await nobody.connect()
        with pytest.raises(Unauthorized):
            await nobody.get_partition_leaders("s", "t")
        await nobody.close()

        async with aiohttp.ClientSession() as session:
            # Routed: plain sends naming the partition, then a balanced IggyProducer.
            before = await counts(session, nodes, SENDS)
            for pid in range(3):
                for i in range(10):
                    await client.send_messages("s", "t", pid, [f"m{pid}-{i}".encode()])
            producer = await IggyProducer(client, "s", "t").init()
            for i in range(30):                 # round-robin: 10 sends per partition
                await producer.send([f"p{i}".encode()])
            routed = delta(await counts(session, nodes, SENDS), before)
            assert routed == {name: 20.0 * by_node[name] for name in nodes}, (routed, leaders)

            # Polls and a single consumer's stored offsets go to the leader too.
            before_polls = await counts(session, nodes, POLLS)
            before_stores = await counts(session, nodes, STORES)
            for pid in range(3):
                got = await read_partition(client, "s", "t", pid)
                assert [p for _, p in got if p.startswith(b"m")] == \
                    [f"m{pid}-{i}".encode() for i in range(10)]
                assert len(got) == 20
                await client.store_consumer_offset("s", "t", 19, partition_id=pid, consumer=7)
                offset = await client.get_consumer_offset("s", "t", pid, consumer=7)
                assert offset.stored_offset == 19
            polls = delta(await counts(session, nodes, POLLS), before_polls)
            stores = delta(await counts(session, nodes, STORES), before_stores)
            assert stores == {name: 1.0 * by_node[name] for name in nodes}
            # (read_partition polls until an empty answer: two polls per partition)
            assert polls == {name: 2.0 * by_node[name] for name in nodes}, polls

            # A fresh client's pipelined producer: its first batches wait for the leaders to
            # be learnt rather than overtaking each other through the dialled node, so each
            # partition stores them in the order they were sent.
            fresh = await dial(nodes, dialled)
            piped = IggyProducer(fresh, "s", "t", background=True, batch_length=5,
                                 linger=0.001, max_in_flight=8)
            await piped.init()
            futures = [await piped.send([f"o{i}".encode()], partition=i % 3)
                       for i in range(300)]
            await piped.flush()
            assert all(f.result() for f in futures)
            for pid in range(3):
                order = [p for _, p in await read_partition(client, "s", "t", pid)
                         if p.startswith(b"o")]
                assert order == [f"o{i}".encode() for i in range(pid, 300, 3)]
            await fresh.close()

            # The blocking client is the same client on a loop thread: it routes too.
            addresses = ",".join([nodes[dialled].address] + [
                n.address for name, n in nodes.items() if name != dialled])
            before = await counts(session, nodes, SENDS)

            def blocking_sends() -> None:
                with SyncIggyClient(f"iggy://iggy:iggy@{addresses}") as sync:
                    for pid in range(3):
                        sync.send_messages("s", "t", pid, [b"sync"])
            await asyncio.get_running_loop().run_in_executor(None, blocking_sends)
            assert delta(await counts(session, nodes, SENDS), before) == {
                name: 1.0 * by_node[name] for name in nodes}

            # Over WebSocket the leaders' WebSocket addresses are learnt and used.
            ws_sends = SENDS.replace('"tcp"', '"websocket"')
            ws_addresses = ",".join([f"127.0.0.1:{nodes[dialled].websocket_port}"] + [
                f"127.0.0.1:{n.websocket_port}" for name, n in nodes.items() if name != dialled])
            before = await counts(session, nodes, ws_sends)
            ws = IggyClient(f"iggy+ws://iggy:iggy@{ws_addresses}")
            await ws.connect()
            for pid in range(3):
                await ws.send_messages("s", "t", pid, [b"ws"])
            assert set(ws._router.links) == {
                f"127.0.0.1:{nodes[leaders[pid]].websocket_port}" for pid in range(3)}
            assert delta(await counts(session, nodes, ws_sends), before) == {
                name: 1.0 * by_node[name] for name in nodes}
            await ws.close()

            # The same client without routing: the dialled node gets (and forwards) them all,
            # so the counts above could tell.
            plain = IggyClient(client.config, route_to_leaders=False)
            await plain.connect()
            before = await counts(session, nodes, SENDS)
            for pid in range(3):
                await plain.send_messages("s", "t", pid, [b"plain"])
            assert delta(await counts(session, nodes, SENDS), before) == {
                name: 3.0 if name == dialled else 0.0 for name in nodes}
            await plain.close()
        await client.close()
        await admin.close()
    finally:
        stop_cluster(etcd, nodes)


async def test_a_producer_follows_its_partitions_leader_killed_with_sigkill(tmp_path):
    etcd, nodes = start_cluster(tmp_path, "follow", 3, lease_ttl="3 s")
    try:
        admin = await connect(nodes["node1"])
        await admin.create_stream("s")
        await admin.create_topic("s", "t", partitions_count=1)
        leader = leaders_of(etcd, "follow", 1)[0]
        record = status(etcd, "follow")["partitions"][0]
        follower = next(n for n in record["replicas"] if n != leader)
        bystander = next(n for n in nodes if n not in record["replicas"])

        # Dialling the node that holds no replica: every send it got would be forwarded.
        client = await dial(nodes, bystander)
        producer = await IggyProducer(client, "s", "t", partitioning=0).init()
        acked: list[bytes] = []
        failures: list[str] = []
        stopping = asyncio.Event()

        async def produce() -> None:
            batch = 0
            while not stopping.is_set():
                payloads = [f"b{batch}-{k}".encode() for k in range(5)]
                batch += 1
                try:
                    await producer.send(payloads)
                except Exception as e:          # not acknowledged: it may or may not be stored
                    failures.append(f"{type(e).__name__}: {e}")
                    await asyncio.sleep(0.05)
                    continue
                acked.extend(payloads)

        task = asyncio.ensure_future(produce())
        async with aiohttp.ClientSession() as session:
            await asyncio.sleep(1.0)
            assert len(acked) > 50, failures
            survivors = {n: nodes[n] for n in (follower, bystander)}
            before = await counts(session, survivors, SENDS)
            assert before[bystander] == 0.0         # straight to the leader so far
            killed_at = time.monotonic()
            nodes[leader].stop(signal.SIGKILL)
            acked_at_kill = len(acked)

            # Within the failover time the sends go straight to the new leader: over a
            # window, the new leader counts sends and the dialled node none.
            direct = False
            while time.monotonic() - killed_at < 12 and not direct:
                a = await counts(session, survivors, SENDS)
                await asyncio.sleep(0.5)
                b = await counts(session, survivors, SENDS)
                direct = b[follower] > a[follower] and b[bystander] == a[bystander]
            took = time.monotonic() - killed_at
            assert direct, (await counts(session, survivors, SENDS), failures,
                            status(etcd, "follow"))
            assert took < 12
            assert status(etcd, "follow")["partitions"][0]["leader"] == follower
            settled = len(acked)
            await asyncio.sleep(0.5)
            assert len(acked) > settled + 20
        stopping.set()
        await task
        assert len(acked) > acked_at_kill + 50

        # Every acknowledged message is in the partition, read through the new leader.
        reader = await connect(nodes[follower])
        stored = {p for _, p in await read_partition(reader, "s", "t", 0)}
        assert not [p for p in acked if p not in stored]
        # At most the batches in flight at the kill failed (the producer sends one at a time:
        # a few, while the old leader's link broke and the cluster moved the partition).
        assert len(failures) <= 5, failures
        print(f"failover: direct to {follower} {took:.1f} s after the kill; "
              f"{len(failures)} send(s) failed: {failures}")
        for c in (reader, client, admin):
            await c.close()
    finally:
        stop_cluster(etcd, nodes)


async def test_against_a_single_node_the_client_sends_what_it_always_sent(server):
    # One address: no routing, not one request more than before.
    client = IggyClient(f"iggy://iggy:iggy@{server.address}")
    await client.connect()
    # Asked to route anyway: it asks once, learns the node serves every partition itself,
    # and uses its one connection for everything.
    routing = IggyClient(f"iggy://iggy:iggy@{server.address}", route_to_leaders=True)
    await routing.connect()
    try:
        assert client._router is None
        with pytest.raises(FeatureUnavailable):
            await client.get_partition_leaders("nope", "t")
        await client.create_stream("one")
        await client.create_topic("one", "t", partitions_count=2)
        for c in (client, routing):
            for i in range(20):
                await c.send_messages("one", "t", i % 2, [f"x{i}".encode()])
            polled = await c.poll_messages("one", "t", partition_id=1, count=100,
                                           polling_strategy=None, consumer=3)
            assert len(polled) == 10
            await c.store_consumer_offset("one", "t", 9, partition_id=1, consumer=3)
        assert routing._router.supported is False
        assert routing._router.links == {}
        assert len(await client.get_clients()) == 2
        async with aiohttp.ClientSession() as session:
            metrics = await scrape(session, server)
        assert metrics[LEADERS] == 2.0      # the call above, and the routing client's one
    finally:
        await client.close()
        await routing.close()


def test_a_leader_registered_on_a_wildcard_host_is_reached_at_the_host_dialled():
    from iggy_fast.client.cluster import _reachable
    assert _reachable("0.0.0.0:8090", "10.0.0.5:9000") == "10.0.0.5:8090"
    assert _reachable("[::]:8090", "10.0.0.5:9000") == "10.0.0.5:8090"
    assert _reachable("10.0.0.7:8090", "10.0.0.5:9000") == "10.0.0.7:8090"
    assert _reachable("", "10.0.0.5:9000") == ""


async def test_the_heartbeat_keeps_the_leaders_links_open(tmp_path):
    """Nodes that close a connection idle for 2 s: a client pinging every 0.5 s keeps its
    leaders' links (not only its main connection) past that, and sends over the same links."""
    from iggy_fast.server.cluster.dev import EtcdProcess, node
    from test_cluster import live

    etcd = EtcdProcess(ETCD).start()
    nodes = {f"node{i}": node(f"node{i}", etcd.endpoint, cluster="idle", lease_ttl="3 s",
                              data_dir=str(tmp_path / f"node{i}"),
                              env={"IGGY_CONNECTIONS_IDLE_TIMEOUT": "2 s"})
             for i in (1, 2)}
    try:
        for n in nodes.values():
            n.start()
        assert wait_for(lambda: len(live(etcd, "idle")) == 2, 30)
        admin = await connect(nodes["node1"])
        await admin.create_stream("s")
        await admin.create_topic("s", "t", partitions_count=2)
        leaders_of(etcd, "idle", 2)
        client = IggyClient(f"iggy://iggy:iggy@{nodes['node1'].address},"
                            f"{nodes['node2'].address}", heartbeat_interval=0.5)
        await client.connect()
        for pid in (0, 1):
            await client.send_messages("s", "t", pid, [b"before"])
        links = dict(client._router.links)
        assert len(links) == 2                  # one per leader (the two nodes)
        await asyncio.sleep(5)                  # idle, past the nodes' 2 s
        assert not [address for address, link in links.items() if link.closed]
        for pid in (0, 1):
            await client.send_messages("s", "t", pid, [b"after"])
        assert client._router.links == links    # the same links, not reopened
        await client.close()
        await admin.close()
    finally:
        stop_cluster(etcd, nodes)
