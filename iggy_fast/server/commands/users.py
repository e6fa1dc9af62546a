"""Users and personal access tokens: PROTOCOL.md §5.3 and §5.4.

A User record is [id u32][created_at u64][status u8][username Name][options_len u32][options];
UserDetails appends `00 00 00 00` (no permissions) or `01 [perms_len u32][permissions]`.
Anyone may read its own record and change its own password; everything else needs read_users
(get, list) or manage_users (the rest), as Iggy's permissioner says. Unknown users answer 20 to
those allowed to ask and 41 to everyone else, so that names cannot be probed.
"""

from __future__ import annotations

from iggy_fast._wire import Reader, Writer
from iggy_fast.protocol.errors import ResourceNotFound, Unauthorized, UnsupportedOptionKey
from iggy_fast.server.authz import Grants
from iggy_fast.server.dispatch import command
from iggy_fast.server.options import parse_tlv


def user_record(w: Writer, u) -> Writer:
    return w.u32(u.id).u64(u.created_at).u8(u.status).name(u.username).u32(0)


def user_details(u) -> bytearray:
    w = user_record(Writer(), u)
    if u.permissions is None:
        return w.u32(0).buf
    return w.u8(1).u32(len(u.permissions)).raw(u.permissions).buf


def _permissions(r: Reader) -> bytes | None:
    if not r.u8():
        return None
    block = r.raw(r.u32())
    Grants.parse(block)           # refuse a malformed block before it is stored
    return block


def _no_options(r: Reader) -> None:
    if r.remaining and parse_tlv(r.rest()):
        raise UnsupportedOptionKey()


@command(31, "get_user")
def get_user(server, client, r: Reader, now: int):
    user = server.users.find(r.identifier())
    if user is None:
        if not server.authz.allowed_global(client, "read_users"):
            raise Unauthorized()
        return None
    if user.id != client.user_id:
        server.authz.require_global(client, "read_users")
    return user_details(user)


@command(32, "get_users")
def get_users(server, client, r: Reader, now: int):
    server.authz.require_global(client, "read_users")
    w = Writer()
    for uid in sorted(server.users.by_id):
        user_record(w, server.users.by_id[uid])
    return w.buf


@command(33, "create_user")
async def create_user(server, client, r: Reader, now: int):
    server.authz.require_global(client, "manage_users")
    username = r.name()
    password = r.short_string()
    status = r.u8()
    permissions = _permissions(r)
    _no_options(r)
    return user_details(await server.users.create(username, password, status, permissions, now))


@command(34, "delete_user")
async def delete_user(server, client, r: Reader, now: int):
    server.authz.require_global(client, "manage_users")
    ident = r.identifier()
    r.expect_end()
    user = await server.users.delete(ident)
    # Deleting a user ends every live session of that user, the caller's too (Iggy drops all
    # the user's clients): user ids are reused, so a session left behind would act as whoever
    # gets the id next. Logging out also leaves the sessions' consumer groups. Other
    # connections are closed; the caller's stays open so that it still gets this reply, and
    # its next request is refused as unauthenticated.
    for other in list(server.clients.values()):
        if other.user_id == user.id:
            server.logout(other)
            if other is not client and other.close is not None:
                other.close()


@command(35, "update_user")
async def update_user(server, client, r: Reader, now: int):
    server.authz.require_global(client, "manage_users")
    ident = r.identifier()
    username = r.name() if r.u8() else None
    status = r.u8() if r.u8() else None
    _no_options(r)
    await server.users.update(ident, username, status)


@command(36, "update_permissions")
async def update_permissions(server, client, r: Reader, now: int):
    server.authz.require_global(client, "manage_users")
    ident = r.identifier()
    permissions = _permissions(r)
    r.expect_end()
    await server.users.set_permissions(ident, permissions)


@command(37, "change_password")
async def change_password(server, client, r: Reader, now: int):
    ident = r.identifier()
    current = r.short_string()
    new = r.short_string()
    r.expect_end()
    # Permission before existence: a caller without manage_users learns nothing about which
    # usernames exist (41 for any user but itself, known or not).
    user = server.users.find(ident)
    if user is None or user.id != client.user_id:
        server.authz.require_global(client, "manage_users")
    if user is None:
        raise ResourceNotFound()
    await server.users.change_password(user.id, current, new)


# -- personal access tokens ------------------------------------------------------------

@command(41, "get_personal_access_tokens")
def get_personal_access_tokens(server, client, r: Reader, now: int):
    w = Writer()
    for name, expiry_at in server.tokens.list(client.user_id):
        w.name(name).u64(expiry_at)
    return w.buf


@command(42, "create_personal_access_token")
async def create_personal_access_token(server, client, r: Reader, now: int):
    name = r.name()
    expiry = r.u64()
    r.expect_end()
    return Writer().name(await server.tokens.create(client.user_id, name, expiry, now)).buf


@command(43, "delete_personal_access_token")
async def delete_personal_access_token(server, client, r: Reader, now: int):
    name = r.name()
    r.expect_end()
    await server.tokens.delete(client.user_id, name)
