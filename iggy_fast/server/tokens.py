"""Personal access tokens (PROTOCOL.md §5.4): long-lived credentials for services.

A token is 32 random bytes (URL-safe base64, 43 characters), shown once at creation. Only its
SHA-256 is stored: a token is as strong as a 256-bit key, so a slow password hash would add
nothing but login latency. Tokens persist under "tokens/<user_id>/<name>"; expired ones are
refused at login (eviction reason 10) and removed by a periodic cleaner. Deleting a user
deletes its tokens; each token also records its owner's creation time, so that even a token
left behind could never log in as a later user given the same (reused) id.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets

from iggy_fast.protocol.errors import (InvalidPersonalAccessToken,
                                       InvalidPersonalAccessTokenExpiry,
                                       InvalidPersonalAccessTokenName,
                                       PersonalAccessTokenAlreadyExists,
                                       PersonalAccessTokensLimitReached, ResourceNotFound,
                                       Unauthenticated, UserInactive)
from iggy_fast.server.metadata import Change
from iggy_fast.server.users import ACTIVE

log = logging.getLogger("iggy_fast.tokens")

NEVER = 2**64 - 1
NAME_LENGTH = (3, 30)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Tokens:
    """Tokens by user, following the metadata store (see state.py)."""

    def __init__(self, server):
        self.server = server
        self.store = server.store
        self.lock = server.metadata_lock
        self.limit = int(server.cfg["personal_access_token"]["max_tokens_per_user"])
        self.by_user: dict[int, dict[str, dict]] = {}   # user -> name -> {hash, expiry_at}
        server.periodic_tasks.append((60.0, self.remove_expired))

    def apply(self, change: Change) -> None:
        for prefix in change.delete_prefixes:
            if prefix.startswith("tokens/"):        # a deleted user's tokens
                self.by_user.pop(int(prefix.split("/")[1]), None)
        for key in change.deletes:
            if key.startswith("tokens/"):
                _, uid, name = key.split("/", 2)
                self.by_user.get(int(uid), {}).pop(name, None)
        for key, v in change.puts:
            if key.startswith("tokens/"):
                _, uid, name = key.split("/", 2)
                self.by_user.setdefault(int(uid), {})[name] = v

    def list(self, user_id: int) -> list[tuple[str, int]]:
        return sorted((name, t["expiry_at"]) for name, t in self.by_user.get(user_id, {}).items())

    async def create(self, user_id: int, name: str, expiry: int, now: int) -> str:
        async with self.lock:
            owner = self.server.users.find(user_id)
            if owner is None:           # a session never outlives its user; refuse if one did
                raise Unauthenticated()
            if not NAME_LENGTH[0] <= len(name.encode()) <= NAME_LENGTH[1]:
                raise InvalidPersonalAccessTokenName("token name must be 3..30 bytes")
            mine = self.by_user.get(user_id, {})
            if name in mine:
                raise PersonalAccessTokenAlreadyExists()
            if len(mine) >= self.limit:
                raise PersonalAccessTokensLimitReached()
            # 0 = server default (never), u64::MAX = never, otherwise a duration in µs. An
            # expiry instant past u64 is refused as Iggy refuses it (its sum wraps to the
            # past): 56.
            expiry_at = 0 if expiry in (0, NEVER) else now + expiry
            if expiry_at > NEVER:
                raise InvalidPersonalAccessTokenExpiry("token expiry beyond the u64 clock")
            token = secrets.token_urlsafe(32)
            # The owner's creation time names the user, not just the id: ids are reused, and a
            # token must never log in as a later user who got its owner's id.
            record = {"hash": _digest(token), "expiry_at": expiry_at,
                      "owner_created_at": owner.created_at}
            await self.store.commit(puts=[(f"tokens/{user_id}/{name}", record)])
            return token

    async def delete(self, user_id: int, name: str) -> None:
        async with self.lock:
            if name not in self.by_user.get(user_id, {}):
                raise ResourceNotFound(f"no token named {name}")
            await self.store.commit(deletes=[f"tokens/{user_id}/{name}"])

    def authenticate(self, token: str, now: int):
        """The user a token belongs to; 53 for unknown or expired, 47 for an inactive user."""
        digest = _digest(token)
        for uid, tokens in self.by_user.items():
            for record in tokens.values():
                if hmac.compare_digest(record["hash"], digest):
                    if record["expiry_at"] and record["expiry_at"] <= now:
                        raise InvalidPersonalAccessToken("token expired")
                    user = self.server.users.find(uid)
                    if user is None or record.get("owner_created_at",
                                                  user.created_at) != user.created_at:
                        raise InvalidPersonalAccessToken()
                    if user.status != ACTIVE:
                        raise UserInactive()
                    return user
        raise InvalidPersonalAccessToken()

    async def remove_expired(self, now: int) -> None:
        async with self.lock:
            expired = [(uid, name) for uid, tokens in self.by_user.items()
                       for name, record in tokens.items()
                       if record["expiry_at"] and record["expiry_at"] <= now]
            if expired:
                await self.store.commit(deletes=[f"tokens/{uid}/{name}" for uid, name in expired])
        for uid, name in expired:
            log.info("removed expired token %r of user %d", name, uid)
