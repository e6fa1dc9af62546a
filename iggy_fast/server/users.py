"""Users and their credentials (PROTOCOL.md §5.3, §10).

Passwords are stored only as argon2id hashes (argon2-cffi). The root user has id 0, is created
on first start with the configured credentials and can be neither deleted, deactivated, renamed
(48, CannotDeleteUser) nor given permissions (49); only its password may change. Other users
get the lowest free id. Permissions are kept as the wire block of §3.1 (None = none).
Users persist under "users/<id>" in the MetadataStore; memory follows it by applying committed
changes (see state.py). Hashing and verifying (~20 ms of CPU each) run on worker threads.

Guessing is made slow and unrewarding: an unknown username is checked against a dummy hash
made at start with the same parameters, so it costs what a wrong password costs and names
cannot be told apart by timing; `LoginGuard` delays attempts from an address, or for a
username, that failed too often.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import OrderedDict

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from iggy_fast.protocol.errors import (CannotChangePermissions, CannotDeleteUser, InvalidCommand,
                                       InvalidCredentials, InvalidPassword, InvalidUsername,
                                       ResourceNotFound, UserAlreadyExists, UserInactive)
from iggy_fast.server.metadata import Change, MetadataStore

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
        user = cls(uid, "", "", 0, 0, None)
        user.update_from(v)
        return user

    def update_from(self, v: dict) -> None:
        self.username = v["username"]
        self.password_hash = v["password_hash"]
        self.status = v["status"]
        self.created_at = v["created_at"]
        self.permissions = bytes.fromhex(v["permissions"]) if v["permissions"] is not None else None


class Users:
    """The users, following the metadata store: changed only by applying committed changes."""

    def __init__(self, store: MetadataStore, lock: asyncio.Lock,
                 login_max_delay: int = 8_000_000):
        self.store = store
        self.lock = lock                # the metadata lock (see state.py)
        self.by_id: dict[int, User] = {}
        self.changed = []               # callables(user_id): caches to drop, sessions to end
        self.guard = LoginGuard(login_max_delay)
        # What an unknown username is checked against: the same work as a real user's hash.
        self._dummy_hash = hash_password(secrets.token_urlsafe(18))

    def apply(self, change: Change) -> None:
        changed = []
        for key in change.deletes:
            if key.startswith("users/"):
                uid = int(key[6:])
                if self.by_id.pop(uid, None) is not None:
                    changed.append(uid)
        for key, v in change.puts:
            if key.startswith("users/"):
                uid = int(key[6:])
                user = self.by_id.get(uid)
                if user is None:
                    self.by_id[uid] = User.from_record(uid, v)
                else:       # the same object: a login checking its password keeps it
                    user.update_from(v)
                changed.append(uid)
        for uid in changed:
            for hook in self.changed:
                hook(uid)

    async def ensure_root(self, username: str, password: str, now: int) -> str | None:
        """Create the root user on first start; returns a generated password to show once."""
        if ROOT_ID in self.by_id:
            return None
        generated = None
        if not password:
            generated = password = secrets.token_urlsafe(18)
        root = User(ROOT_ID, username, await _in_thread(hash_password, password), ACTIVE, now,
                    None)
        async with self.lock:
            await self._save(root)
        return generated

    async def _save(self, user: User) -> None:
        await self.store.commit(puts=[(f"users/{user.id}", user.record())])

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
        """The user these credentials name; raises 42 (wrong) or 47 (inactive).
        Slow (argon2): the login handler runs it on a worker thread."""
        user = self.find(username)
        stored = user.password_hash if user is not None else self._dummy_hash
        if not verify_password(stored, password) or user is None:
            raise InvalidCredentials()
        if user.status != ACTIVE:
            raise UserInactive()
        return user

    # -- management ----------------------------------------------------------------------

    async def create(self, username: str, password: str, status: int,
                     permissions: bytes | None, now: int) -> User:
        check_username(username)
        check_password(password)
        if status not in (ACTIVE, INACTIVE):
            raise InvalidCommand(f"user status {status}")
        if self.find(username) is not None:     # before spending a hash on it
            raise UserAlreadyExists()
        password_hash = await _in_thread(hash_password, password)
        async with self.lock:
            if self.find(username) is not None:
                raise UserAlreadyExists()
            uid = 0
            while uid in self.by_id:
                uid += 1
            await self._save(User(uid, username, password_hash, status, now, permissions))
            return self.by_id[uid]

    async def update(self, ident, username: str | None, status: int | None) -> User:
        async with self.lock:
            user = self.get(ident)
            if username is not None:
                check_username(username)
                other = self.find(username)
                if other is not None and other is not user:
                    raise UserAlreadyExists()
            if status is not None and status not in (ACTIVE, INACTIVE):
                raise InvalidCommand(f"user status {status}")
            # Iggy does not guard these; its nearest code is 48 (CannotDeleteUser): root
            # renamed or deactivated would be as lost to its operators as root deleted.
            if user.id == ROOT_ID and status == INACTIVE:
                raise CannotDeleteUser("root cannot be deactivated")
            if user.id == ROOT_ID and username is not None and username != user.username:
                raise CannotDeleteUser("root cannot be renamed")
            changed = _copy(user)
            if username is not None:
                changed.username = username
            if status is not None:
                changed.status = status
            await self._save(changed)
            return user

    async def delete(self, ident) -> User:
        async with self.lock:
            user = self.get(ident)
            if user.id == ROOT_ID:
                raise CannotDeleteUser()
            await self.store.commit(deletes=[f"users/{user.id}"],
                                    delete_prefixes=[f"tokens/{user.id}/"])
            return user

    async def set_permissions(self, ident, permissions: bytes | None) -> None:
        async with self.lock:
            user = self.get(ident)
            if user.id == ROOT_ID:
                raise CannotChangePermissions()
            changed = _copy(user)
            changed.permissions = permissions
            await self._save(changed)

    async def change_password(self, ident, current: str, new: str) -> None:
        user = self.get(ident)
        check_password(new)
        checked = user.password_hash
        if not await _in_thread(verify_password, checked, current):
            raise InvalidCredentials()
        new_hash = await _in_thread(hash_password, new)
        async with self.lock:
            if self.by_id.get(user.id) is not user:
                raise ResourceNotFound()            # deleted while the hashes were computed
            if user.password_hash != checked:       # changed meanwhile: `current` is stale
                raise InvalidCredentials()
            changed = _copy(user)
            changed.password_hash = new_hash
            await self._save(changed)


class LoginGuard:
    """Failed password logins by client address and by username, and how long the next
    attempt waits.

    Only checked failures count. Up to FREE failures within WINDOW cost nothing; after that
    the attempts of that address or username are spaced out: each waits for the previous
    one's slot plus a delay that doubles from FIRST up to `cap` ([login] max_delay): 5
    failures, then 0.25 s, 0.5 s, ... 8 s between attempts; a cap of 0 turns the throttle
    off. An attempt that would wait longer than the cap (a queue of parallel guesses) waits
    the cap and is refused unchecked. A success forgets its username's failures (not its
    address's: one success does not clear an attack from a shared address).

    Parallel guesses over many connections: at most CONCURRENT password checks per address run
    at once (`checking`); the others wait their turn, so every guess sees the failures of all
    but one or two before it, and an attempt admitted while its address or name is throttled
    is spaced as if the attempts still being checked had failed too. Legitimate parallel
    logins (a pool of connections from one application) just queue behind 20 ms checks: they
    are never refused.

    The table holds at most MAX_KEYS entries, the least recently failed dropped first, so a
    spray of random usernames cannot grow it without bound. Times are µs, passed in: no clock
    is read here. (Tokens are 256-bit secrets: no guessing to slow down, so token logins are
    only logged.)
    """

    FREE = 5
    CONCURRENT = 2
    FIRST = 250_000
    WINDOW = 300_000_000
    MAX_KEYS = 10_000

    def __init__(self, cap: int):
        self.cap = cap
        # key -> [failures, last failure, earliest next attempt, attempts being checked]
        self._entries: OrderedDict[tuple, list] = OrderedDict()
        # address -> [semaphore of FREE checks, tasks holding or waiting for it]
        self._gates: dict[str, list] = {}

    def _delay(self, failures: int) -> int:
        if failures < self.FREE:
            return 0
        return min(self.FIRST << min(failures - self.FREE, 32), self.cap)

    def _entry(self, key: tuple, now: int) -> list:
        entry = self._entries.get(key)
        if entry is None or (now - entry[1] > self.WINDOW and not entry[3]):
            entry = self._entries[key] = [0, now, 0, 0]
        self._entries.move_to_end(key)
        while len(self._entries) > self.MAX_KEYS:
            self._entries.popitem(last=False)
        return entry

    @contextlib.asynccontextmanager
    async def checking(self, address: str):
        """Hold one of the address's FREE concurrent password checks."""
        gate = self._gates.get(address)
        if gate is None:
            gate = self._gates[address] = [asyncio.Semaphore(self.CONCURRENT), 0]
        gate[1] += 1
        try:
            async with gate[0]:
                yield
        finally:
            gate[1] -= 1
            if not gate[1]:
                del self._gates[address]

    def admit(self, keys: list[tuple], now: int) -> tuple[int, bool]:
        """(µs this attempt must wait, whether it may then be checked at all). An attempt
        that may be checked must be `resolved` afterwards."""
        if not self.cap:
            return 0, True
        entries = [self._entry(key, now) for key in keys]
        throttled = [e for e in entries if e[0] >= self.FREE]
        start = max([now] + [e[2] for e in throttled])
        if start - now > self.cap:
            return self.cap, False
        for e in entries:
            e[3] += 1
        for e in throttled:
            e[2] = start + self._delay(e[0] + e[3])
        return start - now, True

    def resolved(self, keys: list[tuple], failed: bool, now: int) -> None:
        """The attempt was checked: a failure counts for its address and its name; a success
        forgets its name's failures (not its address's)."""
        if not self.cap:
            return
        for key in keys:
            entry = self._entries.get(key)
            if entry is None:
                continue
            entry[3] = max(0, entry[3] - 1)
            if failed:
                entry[0] += 1
                entry[1] = now
                entry[2] = max(entry[2], now + self._delay(entry[0]))
        if not failed:
            self._entries.pop(keys[1], None)

    def __len__(self) -> int:
        return len(self._entries)


def _copy(user: User) -> User:
    return User.from_record(user.id, user.record())


async def _in_thread(fn, *args):
    """argon2 takes ~20 ms of CPU and releases the GIL: run it beside the loop."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
