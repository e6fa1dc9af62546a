"""The server's heart, independent of any transport: state, users, connected clients.

`Server` owns the metadata store, the data model and the command dispatcher. Transports create
one `Client` per connection, pass each request frame to `server.dispatcher.handle()`, and call
`server.disconnect()` when the connection ends.
"""

from __future__ import annotations

import logging
import os
import time

from iggy_fast.server.dispatch import Dispatcher
from iggy_fast.server.storage.durability import Durability
from iggy_fast.server.groups import Groups
from iggy_fast.server.storage.retention import Maintenance
from iggy_fast.server.metadata import SqliteMetadataStore
from iggy_fast.server.service.authz import Authorizer
from iggy_fast.server.state import State
from iggy_fast.server.tokens import Tokens
from iggy_fast.server.users import Users

log = logging.getLogger("iggy_fast.server")


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
    def __init__(self, cfg: dict, now_us: int | None = None):
        self.cfg = cfg
        now = now_us if now_us is not None else time.time_ns() // 1000
        self.started_at = now
        self.data_dir = cfg["system"]["path"]
        os.makedirs(self.data_dir, exist_ok=True)
        self.store = SqliteMetadataStore(self.data_dir,
                                         fsync=bool(cfg["system"]["state"]["enforce_fsync"]))
        self.state = State(self.store, self.data_dir, cfg)
        self.state.load()
        self.users = Users(self.store)
        self.users.load()
        self.generated_root_password = self.users.ensure_root(
            cfg["root"]["username"], cfg["root"]["password"], now)
        # (interval in seconds, callable(now_us)) run by the app in the background:
        # retention, token expiry, heartbeat timeouts, background syncs.
        self.periodic_tasks: list = []
        self.authz = Authorizer(self.users)
        self.durability = Durability(self)
        self.maintenance = Maintenance(self)
        self.clients: dict[int, Client] = {}
        self._next_client_id = 1
        self._next_session = 1
        self.disconnect_hooks = []        # callables(client): consumer groups leave, ...
        self.tokens = Tokens(self)
        self.groups = Groups(self)
        self.users.changed += [self.authz.forget, self.tokens.forget_user]
        self.listen_ports = {"tcp": 0, "quic": 0, "http": 0, "websocket": 0}
        self.dispatcher = Dispatcher(self)

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
