"""The official SDK's HTTP client (apache-iggy 0.9.0, `iggy+http://` connection strings and
HttpConfig) against the server: login by password (and with the JWT a personal access token
login earns), every IggyClient method that HTTP carries, data crossing between HTTP and TCP;
and HTTPS with a certificate made in the test."""

from __future__ import annotations

import ssl

import aiohttp
import pytest
from apache_iggy import (Consumer, GlobalPermissions, HttpConfig, IggyClient, Permissions,
                         PollingStrategy, SendMessage, UserStatus)

from conftest import ServerProcess
from test_http import started
from iggy_fast.server.transports.tls import self_signed

pytestmark = pytest.mark.timeout(120)


async def http_client(srv, credentials="iggy:iggy") -> IggyClient:
    started(srv)
    c = IggyClient.from_connection_string(
        f"iggy+http://{credentials}@127.0.0.1:{srv.http_port}")
    await c.connect()
    return c


async def test_sdk_over_http_every_method(server):
    c = await http_client(server)
    await c.login_user("iggy", "iggy")
    await c.ping()
    await c.create_stream("sdk-h")
    assert (await c.get_stream("sdk-h")).name == "sdk-h"
    assert await c.get_stream("sdk-h-missing") is None
    assert "sdk-h" in [s.name for s in await c.get_streams()]
    await c.create_topic("sdk-h", "t", 2, compression_algorithm="gzip")
    topic = await c.get_topic("sdk-h", "t")
    assert topic.partitions_count == 2 and topic.name == "t"
    assert [t.name for t in await c.get_topics("sdk-h")] == ["t"]
    sent = await c.send_messages("sdk-h", "t", 1, [SendMessage(b"m%d" % i) for i in range(5)])
    assert sent is not None
    got = await c.poll_messages("sdk-h", "t", consumer=Consumer.Single(1),
                                polling_strategy=PollingStrategy.First(), count=10,
                                auto_commit=True, partition_id=1)
    assert [m.payload() for m in got] == [b"m%d" % i for i in range(5)]
    assert [m.offset() for m in got] == [0, 1, 2, 3, 4]
    # auto_commit stored offset 4: the next poll from Next is empty.
    nxt = await c.poll_messages("sdk-h", "t", consumer=Consumer.Single(1),
                                polling_strategy=PollingStrategy.Next(), count=10,
                                auto_commit=False, partition_id=1)
    assert nxt == []
    # A group poll with a partition is a plain consumer poll over HTTP (no membership).
    grp = await c.poll_messages("sdk-h", "t", consumer=Consumer.Group(9),
                                polling_strategy=PollingStrategy.Offset(3), count=10,
                                auto_commit=False, partition_id=1)
    assert [m.offset() for m in grp] == [3, 4]
    stats = await c.get_stats()
    assert stats.streams_count >= 1 and stats.messages_count >= 5
    assert "compression_algorithm" in [o.key for o in await c.describe_options("topic")]
    assert (await c.get_user(0)).username == "iggy"
    assert "iggy" in [u.username for u in await c.get_users()]
    perms = Permissions(GlobalPermissions(read_streams=True))
    await c.create_user("sdk-h-bob", "secret123", UserStatus.Active, perms)
    await c.update_user("sdk-h-bob", "sdk-h-bobby")
    await c.update_permissions("sdk-h-bobby", None)
    await c.change_password("sdk-h-bobby", "secret123", "secret456")
    assert (await c.get_user("sdk-h-bobby")).username == "sdk-h-bobby"
    await c.delete_user("sdk-h-bobby")
    assert await c.get_user("sdk-h-bobby") is None
    await c.create_consumer_group("sdk-h", "t", "g1")
    assert (await c.get_consumer_group("sdk-h", "t", "g1")).name == "g1"
    assert [g.name for g in await c.get_consumer_groups("sdk-h", "t")] == ["g1"]
    with pytest.raises(RuntimeError, match="Feature is unavailable"):
        await c.join_consumer_group("sdk-h", "t", "g1")     # refused by the SDK itself
    await c.update_topic("sdk-h", "t", "t2")
    await c.create_partitions("sdk-h", "t2", 2)
    assert (await c.get_topic("sdk-h", "t2")).partitions_count == 4
    await c.delete_partitions("sdk-h", "t2", 1)
    await c.purge_topic("sdk-h", "t2")
    await c.update_stream("sdk-h", "sdk-h2")
    await c.purge_stream("sdk-h2")
    await c.delete_consumer_group("sdk-h2", "t2", "g1")
    await c.delete_topic("sdk-h2", "t2")
    await c.delete_stream("sdk-h2")
    assert await c.get_stream("sdk-h2") is None
    await c.logout_user()
    with pytest.raises(RuntimeError):
        await c.get_streams()                # the token was revoked by the logout


async def test_sdk_http_and_tcp_share_the_data(server):
    h = await http_client(server)
    await h.login_user("iggy", "iggy")
    t = IggyClient(server.address)
    await t.connect()
    await t.login_user("iggy", "iggy")
    await t.create_stream("sdk-x")
    await t.create_topic("sdk-x", "t", 1)
    await h.send_messages("sdk-x", "t", 0, [SendMessage(b"over-http")])
    await t.send_messages("sdk-x", "t", 0, [SendMessage(b"over-tcp")])
    for c in (h, t):
        got = await c.poll_messages("sdk-x", "t", consumer=Consumer.Single(1),
                                    polling_strategy=PollingStrategy.First(), count=10,
                                    auto_commit=False, partition_id=0)
        assert [m.payload() for m in got] == [b"over-http", b"over-tcp"]
    await t.delete_stream("sdk-x")


async def test_sdk_uses_the_jwt_of_a_personal_access_token_login(server):
    started(server)
    async with aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{server.http_port}"
        async with session.post(base + "/users/login",
                                json={"username": "iggy", "password": "iggy"}) as r:
            jwt = (await r.json())["access_token"]["token"]
        auth = {"Authorization": f"Bearer {jwt}"}
        async with session.post(base + "/personal-access-tokens",
                                json={"name": "sdk-pat", "expiry": 0}, headers=auth) as r:
            token = (await r.json())["token"]
        # The SDK's HTTP client has no token login of its own (HttpConfig: no AutoLogin):
        # the token logs in here, and the SDK is handed the JWT it earned.
        async with session.post(base + "/personal-access-tokens/login",
                                json={"token": token}) as r:
            assert r.status == 200
            pat_jwt = (await r.json())["access_token"]["token"]
    c = IggyClient(HttpConfig(api_url=f"http://127.0.0.1:{server.http_port}", jwt=pat_jwt))
    await c.connect()
    assert "iggy" in [u.username for u in await c.get_users()]
    await c.create_stream("sdk-pat-s")
    await c.delete_stream("sdk-pat-s")
    # A garbage JWT is refused.
    bad = IggyClient(HttpConfig(api_url=f"http://127.0.0.1:{server.http_port}", jwt="x.y.z"))
    await bad.connect()
    with pytest.raises(RuntimeError, match="Unauthenticated"):
        await bad.get_streams()


async def test_https_with_a_certificate_made_here(tmp_path):
    cert, key = self_signed(str(tmp_path / "tls"))
    srv = started(ServerProcess(tmp_path / "https", env={"IGGY_HTTP_TLS_ENABLED": "true",
                                                         "IGGY_HTTP_TLS_CERT_FILE": cert,
                                                         "IGGY_HTTP_TLS_KEY_FILE": key}).start())
    try:
        ctx = ssl.create_default_context(cafile=cert)
        async with aiohttp.ClientSession() as session:
            base = f"https://127.0.0.1:{srv.http_port}"
            async with session.get(base + "/ping", ssl=ctx) as r:
                assert (r.status, await r.text()) == (200, "pong")
            async with session.post(base + "/users/login", ssl=ctx,
                                    json={"username": "iggy", "password": "iggy"}) as r:
                assert r.status == 200
                auth = {"Authorization": f"Bearer {(await r.json())['access_token']['token']}"}
            async with session.post(base + "/streams", json={"name": "tls-s"}, ssl=ctx,
                                    headers=auth) as r:
                assert r.status == 200
            # A client that does not trust the certificate is refused by its own check.
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with session.get(base + "/ping"):
                    pass
            # Plain HTTP on the HTTPS port gets no answer it could mistake for one.
            with pytest.raises(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{srv.http_port}/ping") as r:
                    assert r.status != 200
        assert "HTTP (TLS) listening" in srv.log()
    finally:
        assert srv.stop() == 0
