"""Users and their credentials.

Passwords are stored only as argon2id hashes (argon2-cffi). The root user has id 0, is created
on first start with the configured credentials and can be neither deleted nor restricted.
Users persist under "users/<id>" in the MetadataStore.
"""

from __future__ import annotations

import logging
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from iggy_fast.errors import IggyError
from iggy_fast.server.metadata import MetadataStore

log = logging.getLogger("iggy_fast.users")

ROOT_ID = 0
ACTIVE, INACTIVE = 1, 2

# Cheaper than argon2-cffi's defaults (64 MiB, 3 passes) but still memory-hard: a login must
# not stall the event loop for long. Verification reads the parameters from the hash itself.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


class User:
    def __init__(self, uid: int, username: str, password_hash: str, status: int,
                 created_at: int, permissions: bytes | None):
        self.id = uid
        self.username = username
        self.password_hash = password_hash
        self.status = status
        self.created_at = created_at
        self.permissions = permissions      # the wire permissions block, or None

    def record(self) -> dict:
        return {"username": self.username, "password_hash": self.password_hash,
                "status": self.status, "created_at": self.created_at,
                "permissions": self.permissions.hex() if self.permissions is not None else None}

    @classmethod
    def from_record(cls, uid: int, v: dict) -> "User":
        perms = bytes.fromhex(v["permissions"]) if v["permissions"] is not None else None
        return cls(uid, v["username"], v["password_hash"], v["status"], v["created_at"], perms)


class Users:
    def __init__(self, store: MetadataStore):
        self.store = store
        self.by_id: dict[int, User] = {}

    def load(self) -> None:
        for key, v in self.store.scan("users/"):
            uid = int(key.split("/")[1])
            self.by_id[uid] = User.from_record(uid, v)

    def ensure_root(self, username: str, password: str, now: int) -> str | None:
        """Create the root user on first start; returns a generated password to show once."""
        if ROOT_ID in self.by_id:
            return None
        generated = None
        if not password:
            generated = password = secrets.token_urlsafe(18)
        root = User(ROOT_ID, username, hash_password(password), ACTIVE, now, None)
        self.save(root)
        return generated

    def save(self, user: User) -> None:
        self.store.apply(puts=[(f"users/{user.id}", user.record())])
        self.by_id[user.id] = user

    def find(self, ident) -> User | None:
        if isinstance(ident, int):
            return self.by_id.get(ident)
        for u in self.by_id.values():
            if u.username == ident:
                return u
        return None

    def get(self, ident) -> User:
        user = self.find(ident)
        if user is None:
            raise IggyError.from_code(20)
        return user

    def authenticate(self, username: str, password: str) -> User:
        """The user these credentials name; raises 42 (wrong) or 47 (inactive)."""
        user = self.find(username)
        if user is None or not verify_password(user.password_hash, password):
            raise IggyError.from_code(42)
        if user.status != ACTIVE:
            raise IggyError.from_code(47)
        return user
