"""Our SDK's IggyClient (and SyncIggyClient) over the HTTP REST API against the real server:
logins with a password and a personal access token, the token's refresh and logout, streams,
topics, messages, offsets, users, tokens, stats, clients, HTTP errors as IggyErrors, what HTTP
lacks as FeatureUnavailable, HTTPS with a certificate made here, and messages crossing from
HTTP to TCP and back."""

from __future__ import annotations

import asyncio
import os
import socket
import struct

import pytest

from conftest import wait_for
from test_sdk_connection import outlive_a_restart
from iggy_fast import Consumer, IggyClient, PollingStrategy, SendMessage, SyncIggyClient, _wire
from iggy_fast._json import polled_json, send_json
from iggy_fast.client.types import build_batch, encode_headers
from iggy_fast.protocol import errors
from iggy_fast.protocol import json as js
from iggy_fast.protocol.json import byte_size
from iggy_fast.protocol.json_client import polled_payload, size
from iggy_fast.protocol.models import PolledMessages
from iggy_fast.server.transports.tls import self_signed

pytestmark = pytest.mark.timeout(120)


def http_url(srv, user: str = "iggy:iggy", options: str = "") -> str:
    return f"iggy+http://{user}@127.0.0.1:{srv.http_port}{options}"


def http_ready(srv):
    """`srv` once HTTP accepts (ServerProcess.start() waits for TCP, and HTTP starts after)."""
    def accepts() -> bool:
        try:
            socket.create_connection(("127.0.0.1", srv.http_port), timeout=0.5).close()
            return True
        except OSError:
            return False
    assert wait_for(accepts), srv.log()
    return srv


@pytest.fixture
async def client(server):
    async with IggyClient(http_url(http_ready(server))) as c:
        yield c


async def test_password_login_gives_a_bearer_token(client):
    assert client.identity.user_id == 0
    assert client._link.token.count(".") == 2               # a JWT
    await client.ping()


async def test_streams_topics_and_errors(client, unique):
    name = unique("s")
    created = await client.create_stream(name)
    assert created.name == name and created.topics_count == 0
    assert (await client.get_stream(name)).id == created.id
    assert await client.get_stream(name + "-missing") is None       # 404 not_found: None
    with pytest.raises(errors.StreamNameAlreadyExists):
        await client.create_stream(name)
    topic = await client.create_topic(name, "t", partitions_count=3,
                                      compression_algorithm="gzip", message_expiry=10**9,
                                      max_topic_size=10**10)
    assert (topic.name, topic.partitions_count, len(topic.partitions)) == ("t", 3, 3)
    assert topic.message_expiry == 10**9 and topic.max_topic_size == 10**10
    got = await client.get_topic(name, "t")
    assert got.id == topic.id and [p.id for p in got.partitions] == [0, 1, 2]
    assert [t.name for t in await client.get_topics(name)] == ["t"]
    assert [t.name for t in (await client.get_stream(name)).topics] == ["t"]
    await client.update_topic(name, "t", "t2")
    await client.create_partitions(name, "t2", 2)
    await client.delete_partitions(name, "t2", 1)
    assert (await client.get_topic(name, "t2")).partitions_count == 4
    with pytest.raises(errors.TopicIdNotFound):
        await client.delete_topic(name, "missing")                 # 404 with an Iggy code
    await client.update_stream(name, name + "-x")
    assert name + "-x" in [s.name for s in await client.get_streams()]
    await client.purge_stream(name + "-x")
    await client.delete_stream(name + "-x")
    with pytest.raises(errors.StreamIdNotFound):
        await client.delete_stream(name + "-x")


async def test_send_poll_and_offsets(client, unique):
    stream = unique("s")
    await client.create_stream(stream)
    await client.create_topic(stream, "t", partitions_count=2)
    headers = {"k": "v", "n": 7}
    messages = [b"one", "two", memoryview(b"three"),
                SendMessage(b"four", headers, 123456789012345678901234567890)]
    sent = await client.send_messages(stream, "t", 1, messages)
    assert (sent.partition_id, sent.offsets) == (1, range(0, 4))
    big = [os.urandom(50_000) for _ in range(20)]
    await client.send_messages(stream, "t", 1, big)
    polled = await client.poll_messages(stream, "t", partition_id=1, count=100,
                                        polling_strategy=PollingStrategy.First())
    assert polled.count == 24 and list(polled.offsets) == list(range(24))
    assert [m.payload for m in polled] == [b"one", b"two", b"three", b"four", *big]
    messages = list(polled)
    fourth = messages[3]
    assert fourth.id == 123456789012345678901234567890
    assert fourth.user_headers
    # Two sends are two stored batches: their server timestamps survive the translation.
    assert 0 < messages[0].timestamp <= messages[4].timestamp
    tail = await client.poll_messages(stream, "t", partition_id=1, count=2,
                                      polling_strategy=PollingStrategy.Offset(2))
    assert [m.payload for m in tail] == [b"three", b"four"]
    assert await client.get_consumer_offset(stream, "t", 1, consumer=7) is None
    await client.store_consumer_offset(stream, "t", 5, partition_id=1, consumer=7)
    stored = await client.get_consumer_offset(stream, "t", 1, consumer=7)
    assert (stored.stored_offset, stored.current_offset) == (5, 23)
    nxt = await client.poll_messages(stream, "t", partition_id=1, count=1, consumer=7,
                                     polling_strategy=PollingStrategy.Next())
    assert list(nxt.offsets) == [6]
    await client.delete_consumer_offset(stream, "t", 1, consumer=7)
    assert await client.get_consumer_offset(stream, "t", 1, consumer=7) is None
    empty = await client.poll_messages(stream, "t", partition_id=0, count=10,
                                       polling_strategy=PollingStrategy.First())
    assert empty.count == 0 and list(empty) == []
    await client.flush_unsaved_buffer(stream, "t", 1, fsync=True)
    await client.delete_stream(stream)


async def test_groups_are_managed_but_membership_is_unavailable(client, unique):
    stream = unique("s")
    await client.create_stream(stream)
    await client.create_topic(stream, "t", partitions_count=2)
    group = await client.create_consumer_group(stream, "t", "g")
    assert (group.name, group.partitions_count, group.members_count) == ("g", 2, 0)
    assert (await client.get_consumer_group(stream, "t", "g")).id == group.id
    assert [g.name for g in await client.get_consumer_groups(stream, "t")] == ["g"]
    for call in (client.join_consumer_group(stream, "t", "g"),
                 client.sync_consumer_group(stream, "t", "g"),
                 client.leave_consumer_group(stream, "t", "g"),
                 client.poll_messages(stream, "t", consumer=Consumer.group("g")),
                 client.get_me()):
        with pytest.raises(errors.FeatureUnavailable, match="HTTP"):
            await call
    await client.delete_consumer_group(stream, "t", "g")
    assert await client.get_consumer_group(stream, "t", "g") is None
    await client.delete_stream(stream)


async def test_users_tokens_and_token_login(server, client, unique):
    name = unique("u")
    user = await client.create_user(name, "secret-1")
    assert user.username == name and user.status == 1
    assert (await client.get_user(name)).id == user.id
    assert await client.get_user(name + "-missing") is None
    assert name in [u.username for u in await client.get_users()]
    await client.update_user(name, status=2)
    assert (await client.get_user(user.id)).status == 2
    await client.update_user(name, status=1)
    await client.update_permissions(name, None)
    await client.change_password(name, "secret-1", "secret-2")
    token = await client.create_personal_access_token(unique("pat"))
    assert token.token
    assert len(await client.get_personal_access_tokens()) >= 1
    async with IggyClient(f"127.0.0.1:{server.http_port}", transport="http") as by_token:
        with pytest.raises(errors.Unauthenticated):                # 401 before a login
            await by_token.get_streams()
        identity = await by_token.login_with_personal_access_token(token.token)
        assert identity.user_id == 0
        await by_token.get_streams()
        await by_token.logout_user()
        with pytest.raises(errors.Unauthenticated):
            await by_token.get_streams()
    async with IggyClient(http_url(server, f"{name}:secret-2")) as other:
        assert other.identity.user_id == user.id
    with pytest.raises(errors.InvalidCredentials):
        async with IggyClient(http_url(server, f"{name}:wrong")):
            pass
    for t in await client.get_personal_access_tokens():
        await client.delete_personal_access_token(t.name)
    assert await client.get_personal_access_tokens() == []
    await client.delete_user(name)


async def test_stats_clients_options_and_metadata(client):
    stats = await client.get_stats()
    assert stats.process_id > 0 and stats.server_version
    assert stats.total_memory > 0
    clients = await client.get_clients()
    assert any(c.transport == "HTTP" for c in clients)              # this very request
    http_client = next(c for c in clients if c.transport == "HTTP")
    assert await client.get_client(http_client.client_id) is None   # answered and gone
    assert await client.get_client(999_999) is None
    options = await client.describe_options("topic")
    assert any(o.key == "message_expiry" for o in options)
    metadata = await client.get_cluster_metadata()
    assert metadata.nodes and metadata.nodes[0].http_port > 0


async def test_http_to_tcp_and_back(server, client, unique):
    stream = unique("s")
    await client.create_stream(stream)
    await client.create_topic(stream, "t")
    await client.send_messages(stream, "t", 0, [b"from-http", SendMessage(b"h", {"a": 1})])
    async with IggyClient(f"iggy://iggy:iggy@{server.address}") as tcp:
        polled = await tcp.poll_messages(stream, "t", partition_id=0,
                                         polling_strategy=PollingStrategy.First())
        assert [m.payload for m in polled] == [b"from-http", b"h"]
        via_tcp = list(polled)[1]
        await tcp.send_messages(stream, "t", 0, [b"from-tcp"])
    back = await client.poll_messages(stream, "t", partition_id=0,
                                      polling_strategy=PollingStrategy.First())
    assert [m.payload for m in back] == [b"from-http", b"h", b"from-tcp"]
    same = list(back)[1]
    assert (same.id, same.offset, same.timestamp, same.origin_timestamp, same.user_headers) \
        == (via_tcp.id, via_tcp.offset, via_tcp.timestamp, via_tcp.origin_timestamp,
            via_tcp.user_headers)
    await client.delete_stream(stream)


async def test_a_big_batch_with_u128_ids_reads_the_same_over_http_and_tcp(server, client,
                                                                        unique):
    """A poll-sized batch (1000 messages, random u128 ids, no headers: the shape the compiled
    JSON readers take on both ends) sent over HTTP is what TCP reads, and HTTP reads what
    TCP reads, ids, checksums and timestamps included."""
    stream = unique("s")
    await client.create_stream(stream)
    await client.create_topic(stream, "t")
    ids = [int.from_bytes(os.urandom(16), "little") | 1 << 127 for _ in range(1000)]
    payloads = [os.urandom(1 + i % 997) for i in range(1000)]
    await client.send_messages(stream, "t", 0, [SendMessage(p, None, mid)
                                                for p, mid in zip(payloads, ids)])
    await client.send_messages(stream, "t", 0, payloads[:10])      # a second stored batch
    async with IggyClient(f"iggy://iggy:iggy@{server.address}") as tcp:
        via_tcp = list(await tcp.poll_messages(stream, "t", partition_id=0, count=2000,
                                               polling_strategy=PollingStrategy.First()))
    via_http = list(await client.poll_messages(stream, "t", partition_id=0, count=2000,
                                               polling_strategy=PollingStrategy.First()))
    assert [m.id for m in via_tcp[:1000]] == ids
    assert [m.payload for m in via_tcp] == payloads + payloads[:10]
    assert [(m.id, m.payload, m.offset, m.checksum, m.timestamp, m.origin_timestamp)
            for m in via_http] == [(m.id, m.payload, m.offset, m.checksum, m.timestamp,
                                    m.origin_timestamp) for m in via_tcp]
    # Big replies one after another are read into the buffer the last one left (the link
    # keeps it): smaller, larger and interleaved with small ones, each reads back whole.
    for offset, count in ((10, 600), (0, 1010), (999, 2), (5, 900), (0, 1010)):
        polled = await client.poll_messages(stream, "t", partition_id=0, count=count,
                                            polling_strategy=PollingStrategy.Offset(offset))
        assert [(m.id, m.payload) for m in polled] == [
            (m.id, m.payload) for m in via_tcp[offset:offset + count]]
    await client.delete_stream(stream)


def test_sync_client_over_http(server, unique):
    stream = unique("s")
    http_ready(server)
    with SyncIggyClient(http_url(server)) as client:
        client.create_stream(stream)
        client.create_topic(stream, "t")
        client.send_messages(stream, "t", 0, [b"a", b"b"])
        polled = client.poll_messages(stream, "t", partition_id=0,
                                      polling_strategy=PollingStrategy.First())
        assert [m.payload for m in polled] == [b"a", b"b"]
        client.delete_stream(stream)


async def test_token_is_refreshed_before_it_expires(spawn, tmp_path):
    srv = http_ready(spawn(tmp_path / "server", env={"IGGY_HTTP_JWT_ACCESS_TOKEN_EXPIRY": "10 s",
                                                     "IGGY_HTTP_JWT_CLOCK_SKEW": "0 s"}))
    async with IggyClient(http_url(srv), heartbeat_interval=0) as client:
        first = client._link.token
        await asyncio.sleep(8.3)               # past 80% of the token's 10 s
        await client.get_streams()
        assert client._link.token != first
        await asyncio.sleep(2.5)               # the first token has expired by now
        await client.get_streams()


async def test_unreachable_server(unique):
    from iggy_fast.testing import free_port
    with pytest.raises(errors.CannotEstablishConnection):
        async with IggyClient(f"iggy+http://iggy:iggy@127.0.0.1:{free_port()}",
                              connect_timeout=5):
            pass


async def test_https_with_a_verified_certificate(spawn, tmp_path, unique):
    cert, key = self_signed(str(tmp_path))
    srv = http_ready(spawn(tmp_path / "server", env={"IGGY_HTTP_TLS_ENABLED": "true",
                                                     "IGGY_HTTP_TLS_CERT_FILE": cert,
                                                     "IGGY_HTTP_TLS_KEY_FILE": key}))
    options = f"?tls=true&tls_ca_file={cert}&tls_domain=localhost"
    async with IggyClient(http_url(srv, options=options)) as client:
        stream = unique("s")
        await client.create_stream(stream)
        await client.create_topic(stream, "t")
        await client.send_messages(stream, "t", 0, [b"secure"])
        polled = await client.poll_messages(stream, "t", partition_id=0,
                                            polling_strategy=PollingStrategy.First())
        assert [m.payload for m in polled] == [b"secure"]
    other, _ = self_signed(str(tmp_path / "other"))          # a CA that did not sign it
    with pytest.raises(errors.CannotEstablishConnection):
        async with IggyClient(http_url(srv, options=f"?tls=true&tls_ca_file={other}"),
                              connect_timeout=5):
            pass
    with pytest.raises(errors.CannotEstablishConnection):    # plain HTTP to an HTTPS port
        async with IggyClient(http_url(srv), connect_timeout=5):
            pass


def test_byte_sizes_read_back():
    for n in (0, 1, 999, 1000, 69_092, 123_456_789, 10**15):
        assert abs(size(byte_size(n)) - n) <= n / 1000


def test_send_json_is_what_the_server_reads_back():
    """The link's send body, parsed by the server's route decoder, is the client's batch."""
    batch, count = build_batch([b"", b"x" * 1000, SendMessage(b"h", {"k": "v", "n": 7}, 2**100),
                                SendMessage("s", None, 5)])
    origin = int.from_bytes(batch[24:32], "little")
    body = send_json(b'{"kind":"partition_id","value":"AQAAAA=="}', batch)
    req = js.decode_request(lambda p, q, b: js.decode_send(p, q, b, origin),
                            {"stream_id": "s", "topic_id": "t"}, {}, bytes(body))
    assert (req.partitioning, req.partitioning_value, req.count) == (2, b"\x01\0\0\0", count)
    assert bytes(req.batch) == bytes(batch)
    with pytest.raises(errors.InvalidCommand):
        send_json(b"{}", batch[:-1])


def test_poll_json_reads_back_as_the_binary_reply():
    """Stored batches written as the server's poll JSON come back as the same messages."""
    stored = []
    for base, timestamp, rows in ((10, 1_000, [(2**127 + 1, b"a", b"", 0), (7, b"", b"", 3)]),
                                  (12, 2_000, [(8, b"c" * 300, encode_headers({"k": 1}), 0)])):
        b = bytearray(_wire.build_batch(rows, 500))
        b[8:24] = base.to_bytes(8, "little") + timestamp.to_bytes(8, "little")
        stored.append(bytes(b))
    binary = PolledMessages(struct.pack("<IQI", 3, 12, 3) + b"".join(stored))
    via_json = PolledMessages(polled_payload(bytes(polled_json(3, 12, stored))))
    assert (via_json.partition_id, via_json.current_offset, via_json.count) == (3, 12, 3)
    assert list(via_json) == list(binary)
    assert list(PolledMessages(polled_payload(bytes(polled_json(0, 0, []))))) == []


async def test_reconnect_after_server_restart(fresh_server):
    """The server's restart ends its tokens (a new signing secret): the link notices the lost
    connection, and the client reconnects and logs in again."""
    srv = http_ready(fresh_server.start())
    async with IggyClient(http_url(srv), reconnection_interval=0.2,
                          heartbeat_interval=0.5) as c:
        await outlive_a_restart(c, srv)
