"""Login and logout (PROTOCOL.md §1.8, §5.2).

A login failure ends the session with an Eviction (wrong credentials 9, bad token 10,
inactive user 11, malformed 15); on success the connection gets the user and a fresh session
number. A body that fits both login shapes tries the password first, then the token.

Defences against guessing: an unknown username costs the same argon2 check as a wrong
password (users.py), every failed attempt is logged (WARNING: the client's address and the
username, never a password or token), and attempts from an address or for a username that
failed too often are delayed, and at most a few password checks per address run at once
(users.LoginGuard; password logins only). The delay is an asyncio sleep of this one login:
the loop and every other client carry on.
"""

from __future__ import annotations

import asyncio
import logging

from iggy_fast.protocol import requests as rq
from iggy_fast.protocol.codes import EvictionReason
from iggy_fast.protocol.errors import Eviction, IggyError, UserInactive
from iggy_fast.protocol.results import Session
from iggy_fast.server.service import Context

log = logging.getLogger("iggy_fast.login")

_FAILURES = {EvictionReason.INVALID_CREDENTIALS: "wrong credentials",
             EvictionReason.INVALID_TOKEN: "invalid token",
             EvictionReason.USER_INACTIVE: "inactive user"}


def _host(address: str) -> str:
    """The client's IP address without its port ("[::1]:5000" -> "::1")."""
    host, sep, _port = address.rpartition(":")
    return host.strip("[]") if sep else address


async def login(ctx: Context, req: rq.Login) -> Session:
    server, client = ctx.server, ctx.client
    if req.credentials is None and req.token is None:
        raise Eviction(EvictionReason.MALFORMED_LOGIN)
    if req.credentials is None:         # 256-bit tokens cannot be guessed: no throttle
        user, failure = await _authenticate(server, req, ctx.now)
        wait_us = 0
    else:
        guard = server.users.guard
        username = req.credentials[0]
        keys = [("address", _host(client.address)), ("user", username)]
        async with guard.checking(keys[0][1]):
            wait_us, checked = guard.admit(keys, ctx.now)
            if wait_us:
                await asyncio.sleep(wait_us / 1e6)
            if not checked:
                log.warning("login from %s as %r refused unchecked: too many failed attempts",
                            client.address, username)
                raise Eviction(EvictionReason.INVALID_CREDENTIALS)
            user, failure = await _authenticate(server, req, ctx.now + wait_us)
            guard.resolved(keys, user is None, ctx.now + wait_us)
    if user is None:
        who = f"as {req.credentials[0]!r}" if req.credentials is not None else "with a token"
        log.warning("failed login from %s %s: %s%s", client.address, who, _FAILURES[failure],
                    f" (delayed {wait_us / 1e6:.2f} s)" if wait_us else "")
        raise Eviction(failure)
    if server.users.find(user.id) is not user:
        # Deleted while its password was being checked: its sessions have already ended.
        raise Eviction(EvictionReason.INVALID_CREDENTIALS)
    if client.user_id is not None:
        server.logout(client)
    client.user_id = user.id
    client.session = server.new_session()
    return Session(user.id, client.session)


async def _authenticate(server, req: rq.Login, now: int):
    """(the user, None), or (None, the eviction reason). One of credentials and token is
    given."""
    user = None
    failure = EvictionReason.INVALID_TOKEN
    if req.credentials is not None:
        # Checking an argon2 hash takes ~20 ms of CPU: do it on a worker thread (argon2-cffi
        # releases the GIL) so that one login does not stall every other connection.
        loop = asyncio.get_running_loop()
        try:
            user = await loop.run_in_executor(None, server.users.authenticate,
                                              *req.credentials)
        except IggyError as e:
            failure = (EvictionReason.USER_INACTIVE if e.code == UserInactive.code
                       else EvictionReason.INVALID_CREDENTIALS)
    if user is None and req.token is not None:
        try:
            user = server.tokens.authenticate(req.token, now)
        except IggyError as e:
            if req.credentials is None:
                failure = (EvictionReason.USER_INACTIVE if e.code == UserInactive.code
                           else EvictionReason.INVALID_TOKEN)
    return user, failure


def logout(ctx: Context, req: rq.Logout) -> None:
    ctx.server.logout(ctx.client)
