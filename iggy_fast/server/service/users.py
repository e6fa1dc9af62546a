"""Users and personal access tokens (PROTOCOL.md §5.3, §5.4).

Anyone may read its own record and change its own password; everything else needs read_users
(get, list) or manage_users (the rest), as Iggy's permissioner says. Unknown users answer 20
to those allowed to ask and 41 to everyone else, so that names cannot be probed. Tokens are
always the caller's own.
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


def create_user(ctx: Context, req: rq.CreateUser):
    ctx.server.authz.require_global(ctx.client, "manage_users")
    Grants.parse(req.permissions)      # refuse a malformed block before it is stored
    return ctx.server.users.create(req.username, req.password, req.status, req.permissions,
                                   ctx.now)


def delete_user(ctx: Context, req: rq.DeleteUser) -> None:
    server, client = ctx.server, ctx.client
    server.authz.require_global(client, "manage_users")
    user = server.users.delete(req.user)
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


def update_user(ctx: Context, req: rq.UpdateUser) -> None:
    ctx.server.authz.require_global(ctx.client, "manage_users")
    ctx.server.users.update(req.user, req.username, req.status)


def update_permissions(ctx: Context, req: rq.UpdatePermissions) -> None:
    ctx.server.authz.require_global(ctx.client, "manage_users")
    Grants.parse(req.permissions)
    ctx.server.users.set_permissions(req.user, req.permissions)


def change_password(ctx: Context, req: rq.ChangePassword) -> None:
    users = ctx.server.users
    # Permission before existence: a caller without manage_users learns nothing about which
    # usernames exist (41 for any user but itself, known or not).
    user = users.find(req.user)
    if user is None or user.id != ctx.client.user_id:
        ctx.server.authz.require_global(ctx.client, "manage_users")
    if user is None:
        raise ResourceNotFound()
    users.change_password(user.id, req.current, req.new)


# -- personal access tokens ------------------------------------------------------------------

def get_personal_access_tokens(ctx: Context, req: rq.GetPersonalAccessTokens) -> list:
    """(name, expiry_at µs) of the caller's tokens."""
    return ctx.server.tokens.list(ctx.client.user_id)


def create_personal_access_token(ctx: Context, req: rq.CreatePersonalAccessToken) -> str:
    """The raw token, shown once."""
    return ctx.server.tokens.create(ctx.client.user_id, req.name, req.expiry, ctx.now)


def delete_personal_access_token(ctx: Context, req: rq.DeletePersonalAccessToken) -> None:
    ctx.server.tokens.delete(ctx.client.user_id, req.name)
