"""`GET /metrics` and `GET /stats/rates` over HTTP on a server subprocess: authentication as in
Iggy (a bearer JWT or personal access token, 401 without), the counts sent over TCP found in
the scrape, HTTP requests counted under their transport, the lag after producing 1000 and
committing 400 (GetStats, /stats/rates and /metrics agree), the permission /stats/rates needs,
and `[http.metrics]` enabled and endpoint.
"""

from __future__ import annotations

import aiohttp
import pytest
from apache_iggy import Consumer, IggyClient, PollingStrategy
from apache_iggy import SendMessage as Message

from conftest import ROOT, ServerProcess


def base(srv) -> str:
    return f"http://127.0.0.1:{srv.http_port}"


async def jwt(session, srv, username="iggy", password="iggy") -> str:
    async with session.post(f"{base(srv)}/users/login",
                            json={"username": username, "password": password}) as r:
        assert r.status == 200, await r.text()
        return (await r.json())["access_token"]["token"]


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


async def scrape(session, srv, token: str, path: str = "/metrics") -> dict[str, float]:
    async with session.get(base(srv) + path, headers=bearer(token)) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await r.text()
    return {key: float(value) for key, _, value in
            (line.rpartition(" ") for line in text.splitlines() if not line.startswith("#"))}


async def sdk(srv) -> IggyClient:
    client = IggyClient(srv.address)
    await client.connect()
    await client.login_user(*ROOT)
    return client


async def test_metrics_need_a_token(server):
    async with aiohttp.ClientSession() as s:
        for headers in ({}, {"Authorization": "Bearer not-a-token"},
                        {"Authorization": "Basic aWdneTppZ2d5"},
                        {"Authorization": "Bearer a.b.c"}):
            for path in ("/metrics", "/stats/rates"):
                async with s.get(base(server) + path, headers=headers) as r:
                    assert r.status == 401, (path, headers)
                    assert (await r.json())["code"]


async def test_scrape_finds_what_was_sent_with_jwt_and_personal_token(server, unique):
    stream = unique("m")
    c = await sdk(server)
    await c.create_stream(stream)
    await c.create_topic(stream=stream, name="t", partitions_count=2)
    for _ in range(3):
        await c.send_messages(stream, "t", 1, [Message(b"p" * 50) for _ in range(100)])
    await c.poll_messages(stream=stream, topic="t", partition_id=1, consumer=Consumer.Single(2),
                          polling_strategy=PollingStrategy.Offset(0), count=120,
                          auto_commit=False)
    async with aiohttp.ClientSession() as s:
        token = await jwt(s, server)
        async with s.post(f"{base(server)}/personal-access-tokens", headers=bearer(token),
                          json={"name": unique("scraper"), "expiry": 0}) as r:
            assert r.status == 200, await r.text()
            pat = (await r.json())["token"]
        for credential in (token, pat):
            m = await scrape(s, server, credential)
            p1 = f'stream="{stream}",topic="t",partition="1"'
            assert m[f"iggy_messages_sent_total{{{p1}}}"] == 300
            assert m[f"iggy_messages_polled_total{{{p1}}}"] == 120
            assert m[f'iggy_messages_sent_total{{stream="{stream}",topic="t",'
                     f'partition="0"}}'] == 0
            assert m['iggy_requests_total{transport="tcp",command="send_messages"}'] >= 3
            assert m['iggy_connections{transport="tcp"}'] >= 1
            assert m['iggy_request_duration_seconds_count{command="send_messages"}'] >= 3
        # The HTTP requests themselves: the personal token's creation, over HTTP.
        assert m['iggy_requests_total{transport="http",command='
                 '"create_personal_access_token"}'] >= 1


async def test_lag_600_after_1000_produced_and_400_committed(server, unique):
    stream = unique("lag")
    c = await sdk(server)
    await c.create_stream(stream)
    await c.create_topic(stream=stream, name="t", partitions_count=1)
    await c.create_consumer_group(stream, "t", "g")
    for _ in range(10):
        await c.send_messages(stream, "t", 0, [Message(b"x") for _ in range(100)])
    reader = await sdk(server)
    await reader.join_consumer_group(stream, "t", "g")
    got = 0
    while got < 400:
        got += len(await reader.poll_messages(
            stream=stream, topic="t", partition_id=0, consumer=Consumer.Group("g"),
            polling_strategy=PollingStrategy.Next(), count=400 - got, auto_commit=True))
    assert got == 400
    stats = await c.get_stats()
    assert stats.messages_count >= 1000 and stats.consumer_groups_count >= 1
    async with aiohttp.ClientSession() as s:
        token = await jwt(s, server)
        async with s.get(f"{base(server)}/stats/rates", headers=bearer(token)) as r:
            assert r.status == 200
            doc = await r.json()
        group, = [g for g in doc["consumer_groups"] if g["stream"] == stream]
        assert (group["group"], group["members"], group["lag"]) == ("g", 1, 600)
        assert group["partitions"] == [{"partition_id": 0, "committed_offset": 399,
                                        "high_watermark": 999, "lag": 600,
                                        "lag_seconds": group["partitions"][0]["lag_seconds"]}]
        topic, = [t for t in doc["topics"] if t["stream"] == stream]
        assert (topic["messages"], topic["messages_sent_total"],
                topic["messages_polled_total"]) == (1000, 1000, 400)
        assert set(topic["rates"]) == {"1s", "10s", "60s"}
        m = await scrape(s, server, token)
        g = f'stream="{stream}",topic="t",group="g",partition="0"'
        assert m[f"iggy_consumer_group_lag_messages{{{g}}}"] == 600
        assert m[f"iggy_consumer_group_committed_offset{{{g}}}"] == 399
        assert m[f'iggy_partition_high_watermark{{stream="{stream}",topic="t",'
                 f'partition="0"}}'] == 999


async def test_rates_need_read_servers(server, unique):
    name = unique("u")
    async with aiohttp.ClientSession() as s:
        root = await jwt(s, server)
        async with s.post(f"{base(server)}/users", headers=bearer(root),
                          json={"username": name, "password": "secret1",
                                "status": "active"}) as r:
            assert r.status in (200, 201), await r.text()
        token = await jwt(s, server, name, "secret1")
        async with s.get(f"{base(server)}/stats/rates", headers=bearer(token)) as r:
            assert r.status == 403
        # /metrics is any authenticated user's, as in Iggy.
        assert "iggy_streams" in await scrape(s, server, token)


@pytest.mark.parametrize("env, served, absent", [
    ({"IGGY_HTTP_METRICS_ENABLED": "false"}, None, ["/metrics", "/stats/rates"]),
    ({"IGGY_HTTP_METRICS_ENDPOINT": "/prometheus"}, "/prometheus", ["/metrics"]),
])
async def test_metrics_settings(tmp_path, env, served, absent):
    srv = ServerProcess(tmp_path / "server", env=env).start()
    try:
        async with aiohttp.ClientSession() as s:
            token = await jwt(s, srv)
            if served:
                assert "iggy_streams" in await scrape(s, srv, token, served)
            for path in absent:
                async with s.get(base(srv) + path, headers=bearer(token)) as r:
                    assert r.status == 404, path
    finally:
        srv.stop()


def test_metrics_endpoint_must_be_a_path(tmp_path):
    srv = ServerProcess(tmp_path / "server", env={"IGGY_HTTP_METRICS_ENDPOINT": "metrics"})
    with pytest.raises(RuntimeError, match="http.metrics.endpoint"):
        srv.start()
    srv.stop()
