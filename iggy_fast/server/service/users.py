"""Users and personal access tokens (PROTOCOL.md §5.3, §5.4).

Anyone may read its own record and change its own password; everything else needs read_users
(get, list) or manage_users (the rest), as Iggy's permissioner says. Unknown users answer 20
to those allowed to ask and 41 to everyone else, so that names cannot be probed. Tokens are
always the caller's own.

A changed password ends the user's other sessions (whoever held the old password is out);
the connection that changed its own password stays logged in. Deleting a user ends all of
its sessions. Root can be neither deleted, deactivated, renamed nor given other permissions
(users.py says which code answers which).
"""

from __future__ import annotations

from iggy_fast.protocol import requests as rq
from iggy_fast.protocol.errors import ResourceNotFound, Unauthorized
from iggy_fast.server.service import Context
from iggy_fast.server.service.authz import Grants


def get_user(ctx: Context, req: rq.GetUser):
    authz, client = ctx.server.authz, ctx.client
    user = ctx.server.users.find(req.user)
    if user is None:
        if not authz.allowed_global(client, "read_users"):
            raise Unauthorized()
        return None
    if user.id != client.user_id:
        authz.require_global(client, "read_users")
    return user


def get_users(ctx: Context, req: rq.GetUsers) -> list:
    ctx.server.authz.require_global(ctx.client, "read_users")
    by_id = ctx.server.users.by_id
    return [by_id[uid] for uid in sorted(by_id)]


async def create_user(ctx: Context, req: rq.CreateUser):
    ctx.server.authz.require_global(ctx.client, "manage_users")
    Grants.parse(req.permissions)      # refuse a malformed block before it is stored
    return await ctx.server.users.create(req.username, req.password, req.status,
                                         req.permissions, ctx.now)


async def delete_user(ctx: Context, req: rq.DeleteUser) -> None:
    server, client = ctx.server, ctx.client
    server.authz.require_global(client, "manage_users")
    user = await server.users.delete(req.user)
    # Deleting a user ends every live session of that user, the caller's too (Iggy drops all
    # the user's clients): user ids are reused, so a session left behind would act as whoever
    # gets the id next. The caller's connection stays open so that it still gets this reply,
    # and its next request is refused as unauthenticated.
    _end_sessions(ctx, user.id, keep_connection=client)


def _end_sessions(ctx: Context, user_id: int, keep_connection=None, keep_session=None) -> None:
    """Log out every session of `user_id` but `keep_session`'s, closing their connections
    but `keep_connection`'s (logging out also leaves the sessions' consumer groups)."""
    server = ctx.server
    for other in list(server.clients.values()):
        if other.user_id == user_id and other is not keep_session:
            server.logout(other)
            if other is not keep_connection and other.close is not None:
                other.close()


async def update_user(ctx: Context, req: rq.UpdateUser) -> None:
    ctx.server.authz.require_global(ctx.client, "manage_users")
    await ctx.server.users.update(req.user, req.username, req.status)


async def update_permissions(ctx: Context, req: rq.UpdatePermissions) -> None:
    ctx.server.authz.require_global(ctx.client, "manage_users")
    Grants.parse(req.permissions)
    await ctx.server.users.set_permissions(req.user, req.permissions)


async def change_password(ctx: Context, req: rq.ChangePassword) -> None:
    users = ctx.server.users
    # Permission before existence: a caller without manage_users learns nothing about which
    # usernames exist (41 for any user but itself, known or not).
    user = users.find(req.user)
    if user is None or user.id != ctx.client.user_id:
        ctx.server.authz.require_global(ctx.client, "manage_users")
    if user is None:
        raise ResourceNotFound()
    await users.change_password(user.id, req.current, req.new)
    # Whoever logged in with the old password is logged out; only the connection that
    # changed its own password keeps its session.
    _end_sessions(ctx, user.id, keep_session=ctx.client)


# -- personal access tokens ------------------------------------------------------------------

def get_personal_access_tokens(ctx: Context, req: rq.GetPersonalAccessTokens) -> list:
    """(name, expiry_at µs) of the caller's tokens."""
    return ctx.server.tokens.list(ctx.client.user_id)


async def create_personal_access_token(ctx: Context, req: rq.CreatePersonalAccessToken) -> str:
    """The raw token, shown once."""
    return await ctx.server.tokens.create(ctx.client.user_id, req.name, req.expiry, ctx.now)


async def delete_personal_access_token(ctx: Context, req: rq.DeletePersonalAccessToken) -> None:
    await ctx.server.tokens.delete(ctx.client.user_id, req.name)
