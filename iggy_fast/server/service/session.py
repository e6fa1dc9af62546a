"""Login and logout (PROTOCOL.md §1.8, §5.2).

A login failure ends the session with an Eviction (wrong credentials 9, bad token 10,
inactive user 11, malformed 15); on success the connection gets the user and a fresh session
number. A body that fits both login shapes tries the password first, then the token.
"""

from __future__ import annotations

import asyncio

from iggy_fast.protocol import requests as rq
from iggy_fast.protocol.codes import EvictionReason
from iggy_fast.protocol.errors import Eviction, IggyError, UserInactive
from iggy_fast.protocol.results import Session
from iggy_fast.server.service import Context


async def login(ctx: Context, req: rq.Login) -> Session:
    server, client = ctx.server, ctx.client
    user = None
    failure = EvictionReason.MALFORMED_LOGIN
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
            user = server.tokens.authenticate(req.token, ctx.now)
        except IggyError as e:
            if req.credentials is None:
                failure = (EvictionReason.USER_INACTIVE if e.code == UserInactive.code
                           else EvictionReason.INVALID_TOKEN)
    if user is None:
        raise Eviction(failure)
    if server.users.find(user.id) is not user:
        # Deleted while its password was being checked: its sessions have already ended.
        raise Eviction(EvictionReason.INVALID_CREDENTIALS)
    if client.user_id is not None:
        server.logout(client)
    client.user_id = user.id
    client.session = server.new_session()
    return Session(user.id, client.session)


def logout(ctx: Context, req: rq.Logout) -> None:
    ctx.server.logout(ctx.client)
