"""Login (Register, op 1) and logout (op 3): PROTOCOL.md §1.8 and §5.2.

Both login flavours arrive as op 1 with no command code, so the body shape decides: after the
version prefix, a password login is [username Name][pw_len u8][pw][ctx_len u32][ctx] consuming
the body exactly; otherwise it is a token login [token_len u8][token][ctx_len u32][ctx].
"""

from __future__ import annotations

import asyncio

from iggy_fast._wire import Reader, Writer
from iggy_fast.protocol.errors import IggyError
from iggy_fast.protocol.codes import (PROTOCOL_VERSION, PROTOCOL_VERSION_MIN, SERVER_VERSION,
                                      EvictionReason)
from iggy_fast.server.dispatch import Eviction, command


def _version_ok(client_version: int) -> bool:
    # Accept 0.11.x: at least our version with the patch zeroed, same major.minor.
    return (client_version >= (PROTOCOL_VERSION_MIN)
            and client_version >> 10 <= PROTOCOL_VERSION >> 10)


def _password_shape(body, pos: int):
    try:
        r = Reader(body, pos)
        username = r.name()
        password = r.short_string()
        r.long_string()
        r.expect_end()
        return username, password
    except IggyError:
        return None


def _token_shape(body, pos: int):
    try:
        r = Reader(body, pos)
        token = r.short_string()
        r.long_string()
        r.expect_end()
        return token
    except IggyError:
        return None


@command(40, "login", auth=False)
def login(server, client, r: Reader, now: int):
    try:
        version = r.u32()
        r.name()
        r.name()
    except IggyError:
        raise Eviction(EvictionReason.MALFORMED_LOGIN) from None
    if not _version_ok(version):
        raise Eviction(EvictionReason.INCOMPATIBLE_PROTOCOL, PROTOCOL_VERSION, PROTOCOL_VERSION_MIN)
    body = bytes(r.view(r.remaining))
    # Checking an argon2 hash takes ~20 ms of CPU: do it on a worker thread (argon2-cffi
    # releases the GIL) so that one login does not stall every other connection.
    return _authenticate(server, client, body, now)


async def _authenticate(server, client, body: bytes, now: int):
    loop = asyncio.get_running_loop()
    user = None
    failure = EvictionReason.MALFORMED_LOGIN
    creds = _password_shape(body, 0)
    if creds is not None:
        try:
            user = await loop.run_in_executor(None, server.users.authenticate, *creds)
        except IggyError as e:
            failure = EvictionReason.USER_INACTIVE if e.code == 47 else EvictionReason.INVALID_CREDENTIALS
    if user is None:
        token = _token_shape(body, 0)
        if token is not None and server.tokens is not None:
            try:
                user = server.tokens.authenticate(token, now)
            except IggyError as e:
                if creds is None:
                    failure = EvictionReason.USER_INACTIVE if e.code == 47 else EvictionReason.INVALID_TOKEN
    if user is None:
        raise Eviction(failure)
    if server.users.find(user.id) is not user:
        # Deleted while its password was being checked: its sessions have already ended.
        raise Eviction(EvictionReason.INVALID_CREDENTIALS)
    if client.user_id is not None:
        server.logout(client)
    client.user_id = user.id
    client.session = server.new_session()
    return (Writer().u32(user.id).u64(client.session).u32(PROTOCOL_VERSION)
            .name(SERVER_VERSION).buf)


@command(39, "logout", auth=False)
def logout(server, client, r: Reader, now: int):
    server.logout(client)
    return None
