"""The server's heart, independent of any transport: state, users, connected clients.

`Server` owns the metadata store, the data model and the command dispatcher; `start()` loads
the model from the store and subscribes it to the store's changes. Transports create one
`Client` per connection, pass each request frame to `server.dispatcher.handle()`, and call
`server.disconnect()` when the connection ends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from iggy_fast.config import parse_duration_us
from iggy_fast.server.connection import Connections
from iggy_fast.server.dispatch import Dispatcher
from iggy_fast.server.groups import Groups
from iggy_fast.server.metadata.sqlite import SqliteMetadataStore
from iggy_fast.server.metrics import Metrics
from iggy_fast.server.service.authz import Authorizer
from iggy_fast.server.state import State
from iggy_fast.server.storage.durability import Durability
from iggy_fast.server.storage.retention import Maintenance
from iggy_fast.server.tokens import Tokens
from iggy_fast.server.users import Users

log = logging.getLogger("iggy_fast.server")

# What this version writes; a data directory without it was written by an older one.
FORMAT, LAYOUT = "format", {"layout": 2}


class StartupError(Exception):
    """The server cannot start here (a port in use, an unusable data directory, data of an
    older layout): the message is one line for the user, printed without a traceback."""


class Client:
    """One connection's view of the server: who is logged in, which session, which groups."""

    __slots__ = ("id", "transport", "address", "user_id", "session", "groups",
                 "last_seen", "close")

    def __init__(self, cid: int, transport: str, address: str):
        self.id = cid
        self.transport = transport
        self.address = address
        self.user_id: int | None = None
        self.session = 0
        self.groups: set = set()      # (stream_id, topic_id, group_id) memberships
        self.last_seen = 0            # µs of the last request (heartbeat timeouts)
        self.close = None             # set by the transport: ends this connection


class Server:
    """Build it, then `await start()` (on the event loop) to load the metadata."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.started_at = 0
        self.data_dir = cfg["system"]["path"]
        os.makedirs(self.data_dir, exist_ok=True)
        self.store = SqliteMetadataStore(self.data_dir,
                                         fsync=bool(cfg["system"]["state"]["enforce_fsync"]))
        self.metadata_lock = asyncio.Lock()     # one metadata mutation decides at a time
        self.state = State(self.store, self.data_dir, cfg, self.metadata_lock)
        self.users = Users(self.store, self.metadata_lock,
                           parse_duration_us(cfg["login"]["max_delay"]))
        self.generated_root_password = None
        # (interval in seconds, callable(now_us), possibly async) run by the app in the
        # background: retention, token expiry, heartbeat timeouts, background syncs.
        self.periodic_tasks: list = []
        self.authz = Authorizer(self.users)
        self.durability = Durability(self)
        self.maintenance = Maintenance(self)
        self.clients: dict[int, Client] = {}
        self.connections = Connections(self)    # the [connections] limits, over all transports
        self._next_client_id = 1
        self._next_session = 1
        self.disconnect_hooks = []        # callables(client): consumer groups leave, ...
        self.tokens = Tokens(self)
        self.groups = Groups(self)
        self.users.changed.append(self.authz.forget)
        self.listen_ports = {"tcp": 0, "quic": 0, "http": 0, "websocket": 0}
        self.metrics = Metrics(self)
        self.dispatcher = Dispatcher(self)

    async def start(self, now_us: int | None = None) -> None:
        """Load the metadata into memory and follow the store from then on."""
        now = now_us if now_us is not None else time.time_ns() // 1000
        self.started_at = now
        snapshot = await self.store.load()
        stored = dict(snapshot.puts)
        if stored and stored.get(FORMAT) != LAYOUT:
            # No migration: there are no deployments of an older layout to carry over.
            raise StartupError(f"{self.data_dir} holds data in an older layout that this "
                               f"version does not read; start with an empty data directory")
        # In dependency order: groups live on topics, tokens name users.
        followers = [self.state.apply, self.users.apply, self.tokens.apply, self.groups.apply]
        for apply in followers:
            apply(snapshot)
            self.store.watch(apply)
        self.state.sweep()
        if not stored:
            await self.store.commit(puts=[(FORMAT, LAYOUT)], expect={FORMAT: None})
        self.generated_root_password = await self.users.ensure_root(
            self.cfg["root"]["username"], self.cfg["root"]["password"], now)

    def connect(self, transport: str, address: str) -> Client:
        client = Client(self._next_client_id, transport, address)
        self._next_client_id += 1
        self.clients[client.id] = client
        return client

    def new_session(self) -> int:
        session = self._next_session
        self._next_session += 1
        return session

    def logout(self, client: Client) -> None:
        for hook in self.disconnect_hooks:
            hook(client)
        client.user_id = None
        client.session = 0

    def disconnect(self, client: Client) -> None:
        self.logout(client)
        self.clients.pop(client.id, None)

    def close(self) -> None:
        self.durability.close()
        self.state.close()
        self.store.close()
