"""Personal access tokens: create (with expiry), list, delete through the SDK's raw calls, log in
with AutoLogin.personal_access_token, refusals for expired, deleted and foreign tokens, limits,
hashes only on disk, and survival across a restart."""

from __future__ import annotations

import asyncio
import os
import sqlite3

import pytest
from apache_iggy import AutoLogin, GlobalPermissions, IggyClient, Permissions, TcpConfig

from conftest import ServerProcess
from iggy_fast._wire import Reader, Writer
from sdk_errors import expect_code

NEVER = 2**64 - 1


async def create_token(c, name, expiry=0):
    reply = await c.send_binary_request(42, Writer().name(name).u64(expiry).getvalue())
    return Reader(reply).name()


async def list_tokens(c):
    r = Reader(await c.send_binary_request(41, b""))
    out = []
    while not r.at_end():
        out.append((r.name(), r.u64()))
    return out


async def token_client(srv, token):
    c = IggyClient(TcpConfig(server_address=srv.address,
                             auto_login=AutoLogin.personal_access_token(token)))
    await asyncio.wait_for(c.connect(), 15)
    return c


@pytest.fixture
async def srv(tmp_path):
    s = ServerProcess(tmp_path / "pat").start()
    yield s
    assert s.stop() == 0


async def root(srv):
    c = IggyClient(srv.address)
    await c.connect()
    await c.login_user("iggy", "iggy")
    return c


async def test_token_login_list_delete_and_restart(srv):
    c = await root(srv)
    token = await create_token(c, "service-a")
    await create_token(c, "short-lived", 60_000_000)
    slashed = await create_token(c, "team/svc")           # '/' is fine in a name
    names = dict(await list_tokens(c))
    assert names["service-a"] == 0 and names["short-lived"] > 0 and names["team/svc"] == 0
    t = await token_client(srv, token)
    await t.create_stream("by-token")            # acts as root, the token's owner
    assert (await t.get_stream("by-token")) is not None
    # Only a hash is stored.
    db = sqlite3.connect(os.path.join(srv.data_dir, "metadata.db"))
    stored = b"".join(v for (v,) in db.execute("SELECT value FROM kv WHERE key LIKE 'tokens/%'"))
    assert token.encode() not in stored and b"hash" in stored
    assert srv.stop() == 0
    srv.start()
    t = await token_client(srv, token)
    assert (await t.get_stream("by-token")) is not None
    await (await token_client(srv, slashed)).ping()
    c = await root(srv)
    await c.send_binary_request(43, Writer().name("service-a").getvalue())
    await c.send_binary_request(43, Writer().name("team/svc").getvalue())
    assert [n for n, _ in await list_tokens(c)] == ["short-lived"]
    with pytest.raises(Exception):
        bad = await token_client(srv, token)
        await asyncio.wait_for(bad.get_streams(), 5)


def raw_token_login(address, token):
    from iggy_fast.client import BlockingClient
    with BlockingClient(address) as b:
        b.login_with_token(token)


async def test_expired_unknown_and_foreign_tokens(srv):
    from iggy_fast.protocol.errors import IggyError
    c = await root(srv)
    await c.create_user("worker", "pass-123",
                        permissions=Permissions(GlobalPermissions(read_streams=True)))
    w = IggyClient(srv.address)
    await w.connect()
    await w.login_user("worker", "pass-123")
    expiring = await create_token(w, "tiny", 300_000)          # 0.3 s
    raw_token_login(srv.address, expiring)                     # valid for now
    await asyncio.sleep(0.5)
    with pytest.raises(IggyError) as e:
        raw_token_login(srv.address, expiring)
    assert e.value.code == 53                                  # eviction reason 10
    with pytest.raises(IggyError) as e:
        raw_token_login(srv.address, "x" * 43)
    assert e.value.code == 53
    # A worker's token logs in as the worker, never as anyone else.
    worker_token = await create_token(w, "mine")
    t = await token_client(srv, worker_token)
    await t.get_streams()
    with pytest.raises(RuntimeError, match="nauthorized"):
        await t.create_stream("not-allowed")
    # The worker cannot delete root's tokens: names are per user.
    await create_token(c, "root-token")
    await expect_code(w.send_binary_request(43, Writer().name("root-token").getvalue()), 20)
    assert "root-token" in [n for n, _ in await list_tokens(c)]
    await c.get_streams()                                      # root is still served


async def test_token_limits_and_duplicates(tmp_path):
    srv = ServerProcess(tmp_path / "lim",
                        env={"IGGY_PERSONAL_ACCESS_TOKEN_MAX_TOKENS_PER_USER": "2"}).start()
    try:
        c = await root(srv)
        other = await root(srv)
        # Names are 3..30 UTF-8 bytes: 'é' counts two. Refused names answer 50.
        for bad in ("ab", "x" * 31, "é" * 16):                  # 16 characters, 32 bytes
            await expect_code(create_token(c, bad), 50)
            await other.ping()
        await create_token(c, "éa")                             # 2 characters, 3 bytes
        await expect_code(create_token(c, "éa"), 51)
        await create_token(c, "two", NEVER)
        await expect_code(create_token(c, "three"), 52)
        assert sorted(n for n, _ in await list_tokens(c)) == ["two", "éa"]
        await other.get_streams()
    finally:
        assert srv.stop() == 0


async def test_expiry_beyond_the_u64_clock(srv):
    """now + expiry past 2**64-1 is refused with 56 (Iggy's sum wraps into the past and is
    refused as an expired expiry), not an internal error; u64::MAX itself means never, and the
    largest expiry that still fits is stored as an instant."""
    c = await root(srv)
    other = await root(srv)
    for expiry in (NEVER - 1, NEVER - 10**6, 2**64 - 2**40):
        await expect_code(create_token(c, "overflow", expiry), 56)
        await other.ping()
    await create_token(c, "never", NEVER)
    await create_token(c, "far", 2**63)
    listed = dict(await list_tokens(c))
    assert "overflow" not in listed
    assert listed["never"] == 0 and 2**63 < listed["far"] < NEVER
