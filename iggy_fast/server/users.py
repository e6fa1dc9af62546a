"""Users and their credentials (PROTOCOL.md §5.3, §10).

Passwords are stored only as argon2id hashes (argon2-cffi). The root user has id 0, is created
on first start with the configured credentials and can be neither deleted nor restricted; other
users get the lowest free id. Permissions are kept as the wire block of §3.1 (None = none).
Users persist under "users/<id>" in the MetadataStore.
"""

from __future__ import annotations

import logging
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from iggy_fast.protocol.errors import (CannotChangePermissions, CannotDeleteUser, InvalidCommand,
                                       InvalidCredentials, InvalidPassword, InvalidUsername,
                                       ResourceNotFound, UserAlreadyExists, UserInactive)
from iggy_fast.server.metadata import MetadataStore

log = logging.getLogger("iggy_fast.users")

ROOT_ID = 0
ACTIVE, INACTIVE = 1, 2
USERNAME_LENGTH = (3, 50)
PASSWORD_LENGTH = (3, 100)

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


# Bounds count UTF-8 bytes, as the wire does (PROTOCOL.md §5.2.1): "ééé" is 6 bytes.
def check_username(name: str) -> str:
    if (not USERNAME_LENGTH[0] <= len(name.encode()) <= USERNAME_LENGTH[1]
            or name.strip() != name):
        raise InvalidUsername()
    return name


def check_password(password: str) -> str:
    if not PASSWORD_LENGTH[0] <= len(password.encode()) <= PASSWORD_LENGTH[1]:
        raise InvalidPassword()
    return password


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
        self.changed = []               # callables(user_id): caches to drop, sessions to end

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
        for hook in self.changed:
            hook(user.id)

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
            raise ResourceNotFound()
        return user

    def authenticate(self, username: str, password: str) -> User:
        """The user these credentials name; raises 42 (wrong) or 47 (inactive)."""
        user = self.find(username)
        if user is None or not verify_password(user.password_hash, password):
            raise InvalidCredentials()
        if user.status != ACTIVE:
            raise UserInactive()
        return user

    # -- management ----------------------------------------------------------------------

    def create(self, username: str, password: str, status: int, permissions: bytes | None,
               now: int) -> User:
        check_username(username)
        check_password(password)
        if status not in (ACTIVE, INACTIVE):
            raise InvalidCommand(f"user status {status}")
        if self.find(username) is not None:
            raise UserAlreadyExists()
        uid = 0
        while uid in self.by_id:
            uid += 1
        user = User(uid, username, hash_password(password), status, now, permissions)
        self.save(user)
        return user

    def update(self, ident, username: str | None, status: int | None) -> User:
        user = self.get(ident)
        if username is not None:
            check_username(username)
            other = self.find(username)
            if other is not None and other is not user:
                raise UserAlreadyExists()
        if status is not None and status not in (ACTIVE, INACTIVE):
            raise InvalidCommand(f"user status {status}")
        if user.id == ROOT_ID and status == INACTIVE:
            raise CannotDeleteUser("root cannot be deactivated")
        if username is not None:
            user.username = username
        if status is not None:
            user.status = status
        self.save(user)
        return user

    def delete(self, ident) -> User:
        user = self.get(ident)
        if user.id == ROOT_ID:
            raise CannotDeleteUser()
        self.store.apply(deletes=[f"users/{user.id}"], delete_prefixes=[f"tokens/{user.id}/"])
        del self.by_id[user.id]
        for hook in self.changed:
            hook(user.id)
        return user

    def set_permissions(self, ident, permissions: bytes | None) -> None:
        user = self.get(ident)
        if user.id == ROOT_ID:
            raise CannotChangePermissions()
        user.permissions = permissions
        self.save(user)

    def change_password(self, ident, current: str, new: str) -> None:
        user = self.get(ident)
        check_password(new)
        if not verify_password(user.password_hash, current):
            raise InvalidCredentials()
        user.password_hash = hash_password(new)
        self.save(user)
