"""The HTTP REST API over real HTTP (aiohttp client) against the server subprocess: every route
of PROTOCOL.md §11.3 with its JSON shape, the error statuses and Iggy's error JSON, JWT login,
refresh, logout and refusal, personal access tokens, limits, CORS, and data crossing between
HTTP and TCP. The official SDK's HTTP client and HTTPS are in test_http_sdk.py."""

from __future__ import annotations

import asyncio
import base64
import socket
import struct

import aiohttp
import jwt as pyjwt
import pytest
from apache_iggy import Consumer, IggyClient, PollingStrategy, SendMessage

from conftest import ServerProcess, wait_for

pytestmark = pytest.mark.timeout(120)


def started(srv: ServerProcess) -> ServerProcess:
    """`srv` once HTTP accepts too: start() waits for TCP only, and HTTP starts after it."""
    assert wait_for(lambda: _accepts(srv.http_port)), srv.log()
    return srv


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Api:
    """A logged-in (or not) HTTP caller: `await api.get(path)` -> (status, JSON or text)."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str | None = None):
        self.session, self.base, self.token = session, base, token

    async def call(self, method: str, path: str, json=None, data=None, params=None,
                   headers=None):
        h = dict(headers or {})
        if self.token is not None:
            h.setdefault("Authorization", f"Bearer {self.token}")
        async with self.session.request(method, self.base + path, json=json, data=data,
                                        params=params, headers=h) as r:
            raw = await r.read()
            if r.content_type == "application/json":
                return r.status, await r.json()
            return r.status, raw.decode(errors="replace")

    async def get(self, path, **kw):
        return await self.call("GET", path, **kw)

    async def post(self, path, json=None, **kw):
        return await self.call("POST", path, json=json, **kw)

    async def put(self, path, json=None, **kw):
        return await self.call("PUT", path, json=json, **kw)

    async def delete(self, path, **kw):
        return await self.call("DELETE", path, **kw)

    async def login(self, username="iggy", password="iggy") -> "Api":
        status, body = await self.post("/users/login", {"username": username,
                                                        "password": password})
        assert status == 200, body
        return Api(self.session, self.base, body["access_token"]["token"])


@pytest.fixture
async def http(server):
    started(server)
    async with aiohttp.ClientSession() as session:
        yield Api(session, f"http://127.0.0.1:{server.http_port}")


@pytest.fixture
async def root(http):
    return await http.login()


def assert_error(status, body, want_status: int, want_id: int, code: str | None = None):
    """Iggy's error JSON: {id, code, reason, field}."""
    assert status == want_status, body
    assert set(body) == {"id", "code", "reason", "field"}, body
    assert body["id"] == want_id, body
    if code is not None:
        assert body["code"] == code, body


async def make_topic(root: Api, stream: str, topic: str = "t", partitions: int = 1):
    status, s = await root.post("/streams", {"name": stream})
    assert status == 200, s
    status, t = await root.post(f"/streams/{stream}/topics",
                                {"name": topic, "partitions_count": partitions,
                                 "compression_algorithm": "none", "message_expiry": 0,
                                 "max_topic_size": 0})
    assert status == 200, t
    return s, t


async def send(root: Api, stream, topic, payloads, partition=0, **kw):
    body = {"partitioning": {"kind": "partition_id",
                             "value": b64(struct.pack("<I", partition))},
            "messages": [{"id": i + 1, "payload": b64(p)} for i, p in enumerate(payloads)]}
    return await root.post(f"/streams/{stream}/topics/{topic}/messages", body, **kw)


# -- system ---------------------------------------------------------------------------------

async def test_ping_needs_no_token(http):
    assert await http.get("/ping") == (200, "pong")


async def test_requests_without_a_body_keep_being_served(root):
    """aiohttp hands every bodiless request one shared empty-body reader; reading it must
    end each time (an iteration over it once spun forever on the second GET)."""
    for _ in range(3):
        status, _ = await asyncio.wait_for(root.get("/stats"), 10)
        assert status == 200
        status, _ = await asyncio.wait_for(root.get("/streams"), 10)
        assert status == 200


async def test_stats_cluster_options_clients(root):
    status, stats = await root.get("/stats")
    assert status == 200
    assert stats["iggy_server_version"] and isinstance(stats["process_id"], int)
    assert stats["memory_usage"].endswith("B")          # byte sizes are readable strings
    assert isinstance(stats["run_time"], int) and stats["cache_metrics"] == {}
    status, meta = await root.get("/cluster/metadata")
    assert status == 200 and meta["nodes"][0]["role"] == "leader"
    assert meta["nodes"][0]["status"] == "healthy"
    assert set(meta["nodes"][0]["endpoints"]) == {"tcp", "quic", "http", "websocket"}
    status, options = await root.get("/options/topic")
    assert status == 200
    by_key = {o["key"]: o for o in options}
    assert by_key["compression_algorithm"]["kind"] == "string"
    assert bytes(by_key["compression_algorithm"]["default_value"]) == b"none"
    assert await root.get("/options/stream") == (200, [])
    assert_error(*await root.get("/options/nothing"), 400, 4, "invalid_format")
    status, clients = await root.get("/clients")
    assert status == 200
    me = [c for c in clients if c["transport"] == "HTTP"]
    assert me and me[0]["user_id"] == 0           # this very request's client
    status, one = await root.get(f"/clients/{me[0]['client_id']}")
    assert status == 404                          # it ended with its request
    assert_error(*await root.get("/clients/abc"), 400, 4)


async def test_snapshot_is_refused_as_unavailable(root):
    assert_error(*await root.post("/snapshot", {"compression": "Deflated",
                                                "snapshot_types": ["All"]}), 400, 5)


# -- authentication -------------------------------------------------------------------------

async def test_login_claims_refresh_and_logout(http, server):
    status, body = await http.post("/users/login", {"username": "iggy", "password": "iggy"})
    assert status == 200 and body["user_id"] == 0
    token, expiry = body["access_token"]["token"], body["access_token"]["expiry"]
    claims = pyjwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == "iggy.apache.org" and claims["aud"] == "iggy.apache.org"
    assert claims["sub"] == "0" and claims["exp"] == expiry
    assert claims["exp"] - claims["iat"] == 3600 and claims["nbf"] == claims["iat"]
    api = Api(http.session, http.base, token)
    assert (await api.get("/streams"))[0] == 200
    status, refreshed = await http.post("/users/refresh-token", {"token": token})
    assert status == 200
    new = Api(http.session, http.base, refreshed["access_token"]["token"])
    assert new.token != token
    assert_error(*await api.get("/streams"), 401, 40)          # the old token is revoked
    assert (await new.get("/streams"))[0] == 200
    assert await new.delete("/users/logout") == (204, "")
    assert_error(*await new.get("/streams"), 401, 40)          # revoked by the logout
    assert_error(*await http.post("/users/refresh-token", {"token": new.token}), 401, 40)


async def test_missing_forged_and_foreign_tokens_are_401(http):
    assert_error(*await http.get("/streams"), 401, 40, "unauthenticated")
    bad = Api(http.session, http.base, "not-a-jwt")
    assert_error(*await bad.get("/streams"), 401, 40)
    forged = pyjwt.encode({"sub": "0", "jti": "x", "iss": "iggy.apache.org",
                           "aud": "iggy.apache.org", "iat": 0, "nbf": 0, "exp": 2**40},
                          "a guessed secret, long enough for HS256", algorithm="HS256")
    assert_error(*await Api(http.session, http.base, forged).get("/streams"), 401, 40)
    # A token without a signature at all (alg none) is refused too.
    unsigned = pyjwt.encode({"sub": "0", "jti": "y", "exp": 2**40}, None, algorithm="none")
    assert_error(*await Api(http.session, http.base, unsigned).get("/streams"), 401, 40)


async def test_wrong_password_and_malformed_login(http, server):
    assert_error(*await http.post("/users/login", {"username": "http-nobody",
                                                   "password": "nope"}),
                 400, 42, "invalid_credentials")
    # The binary login's checks ran: the failure is logged like a TCP one (LoginGuard).
    assert "failed login from 127.0.0.1" in server.log()
    assert "as 'http-nobody': wrong credentials" in server.log()
    assert_error(*await http.post("/users/login", {"username": "iggy"}), 400, 4)
    assert_error(*await http.post("/users/login", {"username": 1, "password": "x"}), 400, 4)


async def test_expired_token_is_401(tmp_path):
    env = {"IGGY_HTTP_JWT_ACCESS_TOKEN_EXPIRY": "1 s", "IGGY_HTTP_JWT_CLOCK_SKEW": "0 s"}
    srv = started(ServerProcess(tmp_path / "exp", env=env).start())
    try:
        async with aiohttp.ClientSession() as session:
            api = await Api(session, f"http://127.0.0.1:{srv.http_port}").login()
            assert (await api.get("/streams"))[0] == 200
            await asyncio.sleep(2.5)
            assert_error(*await api.get("/streams"), 401, 40)
    finally:
        assert srv.stop() == 0


async def test_personal_access_tokens_login_expiry_and_delete(root, http):
    status, created = await root.post("/personal-access-tokens", {"name": "svc-http",
                                                                   "expiry": 0})
    assert status == 200 and set(created) == {"token"}
    status, tokens = await root.get("/personal-access-tokens")
    assert status == 200 and {"name": "svc-http", "expiry_at": None} in tokens
    status, body = await http.post("/personal-access-tokens/login",
                                   {"token": created["token"]})
    assert status == 200 and body["user_id"] == 0
    pat_api = Api(http.session, http.base, body["access_token"]["token"])
    assert (await pat_api.get("/streams"))[0] == 200
    # A PAT is a login credential, not a bearer token for the API.
    raw = Api(http.session, http.base, created["token"])
    assert_error(*await raw.get("/streams"), 401, 40)
    assert await root.delete("/personal-access-tokens/svc-http") == (204, "")
    assert_error(*await http.post("/personal-access-tokens/login",
                                  {"token": created["token"]}), 401, 53)
    assert_error(*await root.delete("/personal-access-tokens/svc-http"), 404, 20)
    # An expired token is refused: 1 µs of validity is over by the time it is used.
    status, short = await root.post("/personal-access-tokens", {"name": "brief", "expiry": 1})
    assert status == 200
    assert_error(*await http.post("/personal-access-tokens/login",
                                  {"token": short["token"]}), 401, 53)
    await root.delete("/personal-access-tokens/brief")


async def test_jwt_is_refused_by_the_binary_login(root, server):
    c = IggyClient(server.address)
    await c.connect()
    with pytest.raises(RuntimeError):
        # The SDK's TCP login sends a password login: a JWT is no password.
        await c.login_user("iggy", root.token)


# -- users and permissions ------------------------------------------------------------------

async def test_users_crud_permissions_and_403(root, http):
    perms = {"global": {"read_streams": True},
             "streams": {"0": {"read_stream": True, "poll_messages": True,
                               "topics": {"1": {"read_topic": True}}}}}
    status, user = await root.post("/users", {"username": "http-alice", "password": "secret1",
                                              "status": "active", "permissions": perms})
    assert status == 200, user
    assert user["username"] == "http-alice" and user["status"] == "active"
    assert user["permissions"]["global"]["read_streams"] is True
    assert user["permissions"]["global"]["manage_users"] is False
    assert user["permissions"]["streams"]["0"]["topics"]["1"]["read_topic"] is True
    uid = user["id"]
    status, users = await root.get("/users")
    assert status == 200 and "http-alice" in [u["username"] for u in users]
    assert (await root.get(f"/users/{uid}"))[1]["id"] == uid
    assert (await root.get("/users/http-alice"))[1]["id"] == uid
    assert_error(*await root.get("/users/nobody-here"), 404, 404, "not_found")
    assert await root.put(f"/users/{uid}", {"username": "http-alice2"}) == (204, "")
    alice = await http.login("http-alice2", "secret1")
    assert_error(*await alice.post("/streams", {"name": "alice-no"}), 403, 41, "unauthorized")
    assert_error(*await alice.get("/users"), 403, 41)
    assert (await alice.get("/streams"))[0] == 200
    assert await root.put(f"/users/{uid}/permissions",
                          {"permissions": {"global": {"manage_streams": True}}}) == (204, "")
    status, s = await alice.post("/streams", {"name": "alice-yes"})
    assert status == 200, s
    assert await alice.put(f"/users/{uid}/password", {"current_password": "secret1",
                                                      "new_password": "secret2"}) == (204, "")
    assert_error(*await http.post("/users/login", {"username": "http-alice2",
                                                   "password": "secret1"}), 400, 42)
    # A changed password ends the tokens issued under the old one, as it ends TCP sessions.
    assert_error(*await alice.get("/streams"), 401, 40)
    alice = await http.login("http-alice2", "secret2")
    assert (await alice.get("/streams"))[0] == 200
    assert await root.put(f"/users/{uid}", {"status": "inactive"}) == (204, "")
    assert_error(*await alice.get("/streams"), 401, 40)       # inactive: tokens stop working
    assert_error(*await http.post("/users/login", {"username": "http-alice2",
                                                   "password": "secret2"}), 400, 47)
    assert await root.delete(f"/users/{uid}") == (204, "")
    assert_error(*await alice.get("/streams"), 401, 40)       # deleted: so do its tokens
    assert_error(*await root.delete(f"/users/{uid}"), 404, 20)
    assert_error(*await root.post("/users", {"username": "x1", "password": "secret",
                                             "status": "sleeping"}), 400, 4, "invalid_format")
    await root.delete("/streams/alice-yes")


# -- streams, topics, partitions, segments, groups ------------------------------------------

async def test_streams_topics_partitions_groups(root):
    stream, topic = await make_topic(root, "http-s1", "t1", partitions=2)
    assert stream["name"] == "http-s1" and stream["topics"] == [] and stream["size"] == "0 B"
    assert topic["partitions_count"] == 2 and len(topic["partitions"]) == 2
    assert topic["compression_algorithm"] == "none"
    assert topic["options"]["compression_algorithm"] == {"value": "none", "explicit": True}
    status, streams = await root.get("/streams")
    assert status == 200 and "http-s1" in [s["name"] for s in streams]
    status, one = await root.get("/streams/http-s1")
    assert status == 200 and one["topics_count"] == 1 and one["topics"][0]["name"] == "t1"
    assert (await root.get(f"/streams/{one['id']}"))[1]["name"] == "http-s1"
    assert_error(*await root.get("/streams/no-such"), 404, 404, "not_found")
    assert_error(*await root.post("/streams", {"name": "http-s1"}), 400, 1012)
    status, topics = await root.get("/streams/http-s1/topics")
    assert status == 200 and [t["name"] for t in topics] == ["t1"]
    assert await root.get("/streams/no-such/topics") == (200, [])     # as over TCP
    assert_error(*await root.get("/streams/http-s1/topics/nope"), 404, 404)
    assert await root.put("/streams/http-s1/topics/t1",
                          {"name": "t1b", "compression_algorithm": "gzip",
                           "message_expiry": 10_000_000}) == (204, "")
    status, t = await root.get("/streams/http-s1/topics/t1b")
    assert t["compression_algorithm"] == "gzip" and t["message_expiry"] == 10_000_000
    assert await root.post("/streams/http-s1/topics/t1b/partitions",
                           {"partitions_count": 3}) == (200, "")
    assert (await root.get("/streams/http-s1/topics/t1b"))[1]["partitions_count"] == 5
    assert await root.delete("/streams/http-s1/topics/t1b/partitions",
                             params={"partitions_count": "2"}) == (204, "")
    assert (await root.get("/streams/http-s1/topics/t1b"))[1]["partitions_count"] == 3
    assert_error(*await root.delete("/streams/http-s1/topics/t1b/partitions"), 400, 4)
    assert await root.delete("/streams/http-s1/topics/t1b/partitions/0",
                             params={"segments_count": "1"}) == (204, "")
    status, g = await root.post("/streams/http-s1/topics/t1b/consumer-groups", {"name": "g1"})
    assert status == 200 and g["name"] == "g1" and g["members"] == []
    assert g["partitions_count"] == 3
    status, groups = await root.get("/streams/http-s1/topics/t1b/consumer-groups")
    assert [x["name"] for x in groups] == ["g1"]
    assert (await root.get("/streams/http-s1/topics/t1b/consumer-groups/g1"))[1]["id"] == g["id"]
    assert_error(*await root.get("/streams/http-s1/topics/t1b/consumer-groups/zz"), 404, 404)
    assert await root.delete("/streams/http-s1/topics/t1b/consumer-groups/g1") == (204, "")
    assert_error(*await root.delete("/streams/http-s1/topics/t1b/consumer-groups/g1"),
                 404, 5000)
    assert await root.delete("/streams/http-s1/topics/t1b/purge") == (204, "")
    assert await root.put("/streams/http-s1", {"name": "http-s1b"}) == (204, "")
    assert await root.delete("/streams/http-s1b/purge") == (204, "")
    assert await root.delete("/streams/http-s1b/topics/t1b") == (204, "")
    assert_error(*await root.delete("/streams/http-s1b/topics/t1b"), 404, 2010)
    assert await root.delete("/streams/http-s1b") == (204, "")
    assert_error(*await root.delete("/streams/http-s1b"), 404, 1009)


# -- messages and offsets -------------------------------------------------------------------

async def test_send_poll_headers_and_offsets(root):
    await make_topic(root, "http-m", "t", partitions=2)
    status, sent = await send(root, "http-m", "t", [b"a", b"bb", b"ccc"], partition=1)
    assert status == 201, sent
    assert sent == {"confirmations": [{"stream_id": sent["confirmations"][0]["stream_id"],
                                       "topic_id": 0, "partition_id": 1, "base_offset": 0}]}
    headers = [{"key": {"kind": "string", "value": b64(b"k")},
                "value": {"kind": "uint64", "value": b64(struct.pack("<Q", 7))}}]
    big_id = 2**127 + 5
    status, _ = await root.post("/streams/http-m/topics/t/messages", {
        "partitioning": {"kind": "partition_id", "value": b64(struct.pack("<I", 1))},
        "messages": [{"id": big_id, "payload": b64(b"with headers"),
                      "user_headers": headers}]})
    assert status == 201
    q = {"consumer_id": "7", "partition_id": "1", "kind": "offset", "value": "0",
         "count": "10"}
    status, polled = await root.get("/streams/http-m/topics/t/messages", params=q)
    assert status == 200, polled
    assert polled["partition_id"] == 1 and polled["count"] == 4
    assert polled["current_offset"] == 3
    msgs = polled["messages"]
    assert [base64.b64decode(m["payload"]) for m in msgs] == [b"a", b"bb", b"ccc",
                                                              b"with headers"]
    assert [m["header"]["offset"] for m in msgs] == [0, 1, 2, 3]
    assert [m["header"]["id"] for m in msgs] == [1, 2, 3, big_id]
    assert msgs[1]["header"]["payload_length"] == 2 and msgs[0]["user_headers"] == []
    assert msgs[3]["user_headers"] == headers
    assert msgs[3]["header"]["user_headers_length"] > 0
    # Balanced and key partitioning, and a poll from the last / next positions.
    status, _ = await root.post("/streams/http-m/topics/t/messages", {
        "partitioning": {"kind": "balanced"}, "messages": [{"id": 0, "payload": b64(b"x")}]})
    assert status == 201
    status, _ = await root.post("/streams/http-m/topics/t/messages", {
        "partitioning": {"kind": "messages_key", "value": b64(b"key")},
        "messages": [{"id": 0, "payload": b64(b"y")}]})
    assert status == 201
    status, last = await root.get("/streams/http-m/topics/t/messages",
                                  params={**q, "kind": "last", "count": "1"})
    assert [m["header"]["offset"] for m in last["messages"]] == [3]
    # Offsets: none stored yet, store, read, auto-commit, delete.
    oq = {"consumer_id": "7", "partition_id": "1"}
    assert_error(*await root.get("/streams/http-m/topics/t/consumer-offsets", params=oq),
                 404, 404)
    assert await root.put("/streams/http-m/topics/t/consumer-offsets",
                          {"consumer_id": 7, "partition_id": 1, "offset": 1}) == (204, "")
    status, off = await root.get("/streams/http-m/topics/t/consumer-offsets", params=oq)
    assert (status, off) == (200, {"partition_id": 1, "current_offset": 3,
                                   "stored_offset": 1})
    status, nxt = await root.get("/streams/http-m/topics/t/messages",
                                 params={**q, "kind": "next", "count": "2",
                                         "auto_commit": "true"})
    assert [m["header"]["offset"] for m in nxt["messages"]] == [2, 3]
    status, off = await root.get("/streams/http-m/topics/t/consumer-offsets", params=oq)
    assert off["stored_offset"] == 3
    assert await root.delete("/streams/http-m/topics/t/consumer-offsets/7",
                             params={"partition_id": "1"}) == (204, "")
    assert_error(*await root.get("/streams/http-m/topics/t/consumer-offsets", params=oq),
                 404, 404)
    # Flush, as the official client calls it, and a send without acknowledgement.
    assert await root.get("/streams/http-m/topics/t/messages/flush/1/fsync=true") == (204, "")
    status, text = await send(root, "http-m", "t", [b"z"], params={"ack": "none"})
    assert status == 202 and text == ""
    assert_error(*await send(root, "http-m", "t", [b"z"], partition=9), 404, 3007)
    assert_error(*await root.get("/streams/http-m/topics/t/messages",
                                 params={**q, "kind": "sideways"}), 400, 4)
    await root.delete("/streams/http-m")


async def test_http_and_tcp_see_the_same_messages(root, server):
    await make_topic(root, "http-x", "t")
    c = IggyClient(server.address)
    await c.connect()
    await c.login_user("iggy", "iggy")
    status, _ = await send(root, "http-x", "t", [b"from-http-1", b"from-http-2"])
    assert status == 201
    await c.send_messages("http-x", "t", 0, [SendMessage(b"from-tcp")])
    got = await c.poll_messages("http-x", "t", consumer=Consumer.Single(1),
                                polling_strategy=PollingStrategy.First(), count=10,
                                auto_commit=False, partition_id=0)
    assert [m.payload() for m in got] == [b"from-http-1", b"from-http-2", b"from-tcp"]
    status, polled = await root.get("/streams/http-x/topics/t/messages",
                                    params={"consumer_id": "1", "partition_id": "0",
                                            "kind": "first", "count": "10"})
    assert [base64.b64decode(m["payload"]) for m in polled["messages"]] == [
        b"from-http-1", b"from-http-2", b"from-tcp"]
    # The checksums HTTP shows are those the binary poll carries.
    assert [m["header"]["checksum"] for m in polled["messages"]] == [m.checksum()
                                                                     for m in got]
    await root.delete("/streams/http-x")


# -- bad input ------------------------------------------------------------------------------

async def test_malformed_json_wrong_types_and_unknown_routes(root, http):
    status, body = await root.call("POST", "/streams", data=b"{not json",
                                   headers={"Content-Type": "application/json"})
    assert_error(status, body, 400, 4, "invalid_format")
    assert_error(*await root.post("/streams", {"name": 5}), 400, 4)
    assert (await root.post("/streams", {"name": 5}))[1]["field"] == "name"
    assert_error(*await root.call("POST", "/streams", data=b"[1, 2]"), 400, 4)
    assert_error(*await root.post("/streams/x/topics", {"name": "t", "partitions_count": -1}),
                 400, 4)
    assert_error(*await root.post("/streams/x/topics", {"name": "t",
                                                        "partitions_count": True}), 400, 4)
    assert_error(*await root.post("/streams/x/topics", {"name": "t",
                                                        "partitions_count": 2.0}), 400, 4)
    await make_topic(root, "http-bad", "t")
    for bad in ({"messages": []}, {"messages": [{"payload": "%%%"}]},
                {"messages": [{"id": -1, "payload": ""}]}, {"messages": "nope"},
                {"partitioning": {"kind": "sideways"}, "messages": [{"payload": "eA=="}]},
                {"messages": [{"payload": "eA==", "user_headers": [{"key": 1}]}]},
                # a bad character in the first of many payloads (this crashed the server)
                {"messages": [{"payload": "AA*A"}] + [{"payload": b64(b"x" * 99)}] * 50}):
        assert_error(*await root.post("/streams/http-bad/topics/t/messages", bad), 400, 4)
    assert_error(*await root.get("/streams/http-bad/topics/t/messages",
                                 params={"consumer_id": "1", "count": "many"}), 400, 4)
    assert_error(*await root.get("/no/such/route"), 404, 404)
    assert_error(*await root.call("PATCH", "/streams"), 405, 405)
    # The server carries on serving.
    assert (await root.get("/streams"))[0] == 200
    await root.delete("/streams/http-bad")


async def test_request_body_over_the_limit_is_413(tmp_path):
    env = {"IGGY_HTTP_MAX_REQUEST_SIZE": "10 KB"}
    srv = started(ServerProcess(tmp_path / "lim", env=env).start())
    try:
        async with aiohttp.ClientSession() as session:
            api = await Api(session, f"http://127.0.0.1:{srv.http_port}").login()
            await make_topic(api, "big", "t")
            status, body = await send(api, "big", "t", [b"x" * 20_000])
            assert status == 413, body
            assert body["id"] == 413
            status, _ = await send(api, "big", "t", [b"x" * 1000])
            assert status == 201
    finally:
        assert srv.stop() == 0


# -- CORS -----------------------------------------------------------------------------------

async def test_cors_preflight_and_headers(tmp_path):
    env = {"IGGY_HTTP_CORS_ALLOWED_ORIGINS": "https://ui.example, https://two.example",
           "IGGY_HTTP_CORS_EXPOSED_HEADERS": "iggy-durability"}
    srv = started(ServerProcess(tmp_path / "cors", env=env).start())
    try:
        async with aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{srv.http_port}"
            pre = {"Origin": "https://ui.example", "Access-Control-Request-Method": "POST",
                   "Access-Control-Request-Headers": "authorization, content-type"}
            async with session.options(base + "/streams", headers=pre) as r:
                assert r.status == 204
                assert r.headers["Access-Control-Allow-Origin"] == "https://ui.example"
                assert "POST" in r.headers["Access-Control-Allow-Methods"]
                assert "authorization" in r.headers["Access-Control-Allow-Headers"]
            async with session.get(base + "/ping", headers={"Origin": "https://ui.example"}) as r:
                assert r.status == 200
                assert r.headers["Access-Control-Allow-Origin"] == "https://ui.example"
                assert r.headers["Access-Control-Expose-Headers"] == "iggy-durability"
            async with session.get(base + "/ping", headers={"Origin": "https://evil.example"}
                                   ) as r:
                assert "Access-Control-Allow-Origin" not in r.headers
            async with session.options(base + "/streams", headers={
                    **pre, "Origin": "https://evil.example"}) as r:
                assert "Access-Control-Allow-Origin" not in r.headers
    finally:
        assert srv.stop() == 0


async def test_broken_http_and_bodies_cut_short_leave_the_server_serving(server, http):
    for payload in (b"GARBAGE\r\n\r\n", b"\x00\xff" * 100 + b"\r\n\r\n",
                    b"GET /ping HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
        writer.write(payload)
        status_line = (await asyncio.wait_for(reader.readline(), 10)).split()
        assert status_line[1] == b"400", status_line
        writer.close()
    # A body that never arrives in full: the client gives up and closes.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
    writer.write(b"POST /users/login HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"a\"")
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    await asyncio.sleep(0.2)
    assert await http.get("/ping") == (200, "pong")
    # (The module's server fixture checks at the end that none of this logged a traceback.)
