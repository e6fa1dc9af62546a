"""GetMe, GetClient and GetClients (PROTOCOL.md §5.1.6), with each client's consumer groups."""

from __future__ import annotations

import pytest

from iggy_fast._wire import Reader, Writer
from iggy_fast.client import BlockingClient
from iggy_fast.protocol.errors import IggyError


def record(r: Reader):
    return {"id": r.u32(), "user": r.u32(), "transport": r.u8(), "address": r.long_string(),
            "groups": r.u32()}


def test_me_client_and_clients(server):
    with BlockingClient(server.address) as a, BlockingClient(server.address) as b:
        a.login()
        b.login()
        name = f"cl-{id(a)}"
        a.call(202, Writer().name(name).getvalue())
        a.call(302, Writer().identifier(name).u32(2).name("t").getvalue())
        a.call(602, Writer().identifier(name).identifier("t").name("g").getvalue())
        a.call(604, Writer().identifier(name).identifier("t").identifier("g").getvalue())
        r = Reader(a.call(20).body)
        me = record(r)
        assert me["user"] == 0 and me["transport"] == 1 and me["groups"] == 1
        r.u32()                                       # the stream id
        tid, gid = r.u32(), r.u32()
        assert (tid, gid) == (0, 0)
        r.expect_end()
        r = Reader(b.call(21, me["id"].to_bytes(4, "little")).body)
        assert record(r)["address"] == me["address"]
        r = Reader(b.call(22).body)
        ids = []
        while not r.at_end():
            ids.append(record(r)["id"])
        assert me["id"] in ids and len(ids) >= 2
        assert b.call(21, (10**6).to_bytes(4, "little")).body == b""    # unknown: empty
        b.call(33, Writer().name("nobody-cl").u8(8).raw(b"pass-123").u8(1).u8(0).getvalue())
    with BlockingClient(server.address) as c:
        c.login("nobody-cl", "pass-123")
        c.call(20)                                                   # oneself: allowed
        for code, body in ((22, b""), (21, (1).to_bytes(4, "little"))):
            with pytest.raises(IggyError) as e:
                c.call(code, body)
            assert e.value.code == 41
        with BlockingClient(server.address) as other:
            other.login()
            assert other.call(22).body != b""              # everyone else is still served
