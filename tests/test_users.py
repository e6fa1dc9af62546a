"""Users through the official SDK: create, get, list, update, delete, change password, update
permissions; root protections; inactive users; sessions ending with their user; restarts."""

from __future__ import annotations

import pytest
from apache_iggy import (GlobalPermissions, IggyClient, Permissions, StreamPermissions,
                         UserStatus)

from conftest import ServerProcess
from iggy_fast._wire import Reader, Writer
from iggy_fast.client import BlockingClient
from iggy_fast.protocol.errors import IggyError
from sdk_errors import expect_code


async def login(server, user, password):
    c = IggyClient(server.address)
    await c.connect()
    await c.login_user(user, password)
    return c


async def test_user_lifecycle(server, client, unique):
    name = unique("user")
    details = await client.create_user(name, "pass-123",
                                       permissions=Permissions(GlobalPermissions(read_streams=True)))
    assert details.username == name and details.id > 0
    assert details.permissions.global_permissions.read_streams
    got = await client.get_user(name)
    assert got.id == details.id and got.status == UserStatus.Active
    assert (await client.get_user(details.id)).username == name
    users = await client.get_users()
    assert [u.id for u in users] == sorted(u.id for u in users) and users[0].username == "iggy"
    assert name in [u.username for u in users]
    renamed = unique("renamed")
    await client.update_user(name, username=renamed)
    assert await client.get_user(name) is None
    await client.update_permissions(renamed, None)
    assert (await client.get_user(renamed)).permissions is None
    await client.change_password(renamed, "pass-123", "pass-456")
    c = await login(server, renamed, "pass-456")
    await c.ping()
    await client.delete_user(renamed)
    assert await client.get_user(renamed) is None


async def test_user_errors(server, client, unique):
    name = unique("dup")
    await client.create_user(name, "pass-123")
    await expect_code(client.create_user(name, "pass-123"), 46)
    await expect_code(client.delete_user("iggy"), 48)
    await expect_code(client.update_permissions(0, Permissions(GlobalPermissions())), 49)
    await expect_code(client.change_password(name, "wrong-current", "pass-999"), 42)
    await expect_code(client.update_user(name, username="x" * 51), 43)
    await expect_code(client.update_user(name, username="ab"), 43)
    # Unknown users: None for a read, 20 for every change.
    missing = unique("missing")
    assert await client.get_user(missing) is None
    await expect_code(client.delete_user(missing), 20)
    await expect_code(client.update_user(missing, username=unique("new")), 20)
    await expect_code(client.update_permissions(missing, None), 20)
    await expect_code(client.change_password(missing, "pass-123", "pass-999"), 20)
    assert await client.get_user("iggy") is not None     # root untouched
    assert (await client.get_user(name)).username == name
    c = await login(server, name, "pass-123")            # the password did not change
    await c.ping()
    await client.get_users()                             # the root session is still served


async def test_inactive_user_cannot_log_in(server, client, unique):
    name = unique("sleepy")
    await client.create_user(name, "pass-123", status=UserStatus.Inactive)
    # Refused with Eviction reason 11 (UserInactive). Raw frames: the SDK takes 5 s to
    # report this eviction.
    with BlockingClient(server.address) as raw, pytest.raises(IggyError) as e:
        raw.login(name, "pass-123")
    assert e.value.code == 40 and "reason 11" in str(e.value)
    await client.get_users()                             # everyone else is still served
    await client.update_user(name, status=UserStatus.Active)
    c = IggyClient(server.address)
    await c.connect()
    await c.login_user(name, "pass-123")
    assert (await c.get_user(name)).status == UserStatus.Active


async def test_deleting_a_user_ends_its_sessions(server, client, unique):
    name = unique("gone")
    await client.create_user(name, "pass-123",
                             permissions=Permissions(GlobalPermissions(read_streams=True)))
    with BlockingClient(server.address, timeout=10) as c:
        c.login(name, "pass-123")
        c.call(201)
        await client.delete_user(name)
        with pytest.raises((ConnectionError, OSError)):
            c.call(201)


# Global flags manage_users and read_topics (PROTOCOL.md §3.1), no stream entries.
ADMIN_PERMISSIONS = bytes([0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0])


def test_a_user_deleting_itself_keeps_no_session_and_no_token(server, unique):
    """A user that deletes itself gets its reply, then its session is over: it cannot act
    again, cannot mint tokens, its other connections close and leave their groups, and none of
    it carries over to the next user who gets the same (reused) id."""
    with BlockingClient(server.address) as root:
        root.login()
        s = unique("selfdel")
        root.call(202, Writer().name(s).getvalue())
        root.call(302, Writer().identifier(s).u32(1).name("t").getvalue())
        root.call(602, Writer().identifier(s).identifier("t").name("g").getvalue())
        admin = unique("admin")
        pw = b"pass-123"
        root.call(33, Writer().name(admin).u8(len(pw)).raw(pw).u8(1).u8(1)
                  .u32(len(ADMIN_PERMISSIONS)).raw(ADMIN_PERMISSIONS).getvalue())
        me = BlockingClient(server.address)
        twin = BlockingClient(server.address)
        admin_id = me.login(admin, "pass-123")
        twin.login(admin, "pass-123")
        group = Writer().identifier(s).identifier("t").identifier("g").getvalue()
        twin.call(604, group)
        token = Reader(me.call(42, Writer().name("before").u64(0).getvalue()).body).name()

        me.call(34, Writer().identifier(admin).getvalue())        # answered: status 0
        with pytest.raises(IggyError) as e:
            me.call(20)                                           # no session any more
        assert e.value.code == 40
        with pytest.raises((ConnectionError, OSError)):
            twin.call(20)                                         # closed
        members = Reader(root.call(600, group).body)
        members.u32(), members.u32()
        assert members.u32() == 0                                 # it left the group

        heir = unique("heir")
        reply = Reader(root.call(33, create_user_body(heir, "pass-456")).body)
        assert reply.u32() == admin_id                            # the id is reused
        with pytest.raises(IggyError) as e:                       # a token of the deleted
            with BlockingClient(server.address) as t:             # user is refused
                t.login_with_token(token)
        assert e.value.code == 53
        with pytest.raises(IggyError) as e:                       # and the old connection
            me.call(42, Writer().name("after").u64(0).getvalue())  # still cannot mint one
        assert e.value.code == 40
        me.close()
        with BlockingClient(server.address) as h:                 # the heir has no tokens
            h.login(heir, "pass-456")
            assert h.call(41).body == b""
        root.ping()


def create_user_body(username: str, password: str) -> bytes:
    pw = password.encode()
    return Writer().name(username).u8(len(pw)).raw(pw).u8(1).u8(0).getvalue()


def test_name_and_password_bounds_count_utf8_bytes(server, unique):
    """Usernames are 3..50 bytes, passwords 3..100 bytes (PROTOCOL.md §5.2.1), counted in
    UTF-8 bytes: 'é' is two."""
    with BlockingClient(server.address) as c, BlockingClient(server.address) as other:
        c.login()
        other.login()
        for username, password, code in (
                ("ab", "pass-123", 43), ("x" * 51, "pass-123", 43),
                ("é" * 26, "pass-123", 43),                      # 26 characters, 52 bytes
                (" lead", "pass-123", 43),
                (unique("pw"), "pw", 44), (unique("pw"), "p" * 101, 44),
                (unique("pw"), "é" * 51, 44)):                   # 51 characters, 102 bytes
            with pytest.raises(IggyError) as e:
                c.call(33, create_user_body(username, password))
            assert e.value.code == code, (username, password)
            other.ping()                                 # everyone else is still served
        # Short in characters but long enough in bytes: accepted.
        short = "é" + unique("")[1:2]                     # 2 characters, 3 bytes
        c.call(33, create_user_body(short, "éa"))        # "éa": 2 characters, 3 bytes
        with BlockingClient(server.address) as s:
            s.login(short, "éa")
            s.call(20)
        with pytest.raises(IggyError) as e:               # rename beyond 50 bytes
            c.call(35, Writer().identifier(short).u8(1).name("é" * 26).u8(0).getvalue())
        assert e.value.code == 43
        users = Reader(c.call(32).body)
        names = []
        while not users.at_end():
            users.u32(), users.u64(), users.u8()
            names.append(users.name())
            users.raw(users.u32())
        assert short in names and "ab" not in names and "é" * 26 not in names


def test_change_password_checks_permission_before_the_name(server, unique):
    """Without manage_users, changing any other user's password is refused with 41 whether
    that user exists or not: the answer does not tell which usernames exist."""
    with BlockingClient(server.address) as root:
        root.login()
        plain = unique("plain")
        root.call(33, create_user_body(plain, "pass-123"))
        with BlockingClient(server.address) as c:
            c.login(plain, "pass-123")
            for target in ("iggy", unique("ghost")):
                body = (Writer().identifier(target).u8(4).raw(b"iggy").u8(8).raw(b"hijacked")
                        .getvalue())
                with pytest.raises(IggyError) as e:
                    c.call(37, body)
                assert e.value.code == 41, target
            c.call(20)
        root.login("iggy", "iggy")                       # root's password did not change


def test_forged_session_on_a_write_changes_nothing(server, unique):
    """A write command carrying a session number this connection was not given is refused
    (eviction, which the SDK reports as 40) and creates nothing."""
    with BlockingClient(server.address) as c, BlockingClient(server.address) as root:
        c.login()
        root.login()
        name = unique("forged")
        c.core.session += 1000
        with pytest.raises(IggyError) as e:
            c.call(33, create_user_body(name, "pass-123"))
        assert e.value.code == 40
        assert root.call(31, Writer().identifier(name).getvalue()).body == b""
        root.ping()


async def test_users_and_permissions_survive_a_restart(tmp_path):
    srv = ServerProcess(tmp_path / "u").start()
    c = await login(srv, "iggy", "iggy")
    perms = Permissions(GlobalPermissions(read_streams=True),
                        {3: StreamPermissions(send_messages=True)})
    await c.create_user("keeper", "pass-123", permissions=perms)
    assert srv.stop() == 0
    srv.start()
    c = await login(srv, "iggy", "iggy")
    user = await c.get_user("keeper")
    assert user.permissions.global_permissions.read_streams
    assert user.permissions.streams[3].send_messages
    k = await login(srv, "keeper", "pass-123")
    await k.get_streams()
    with pytest.raises(RuntimeError):
        await k.create_stream("nope")
    assert srv.stop() == 0
