"""`IggyClient`: the asyncio client, one typed method per server command.

    async with IggyClient("iggy://iggy:iggy@127.0.0.1:8090") as client:
        await client.create_stream("orders")
        await client.create_topic("orders", "eu", partitions_count=3)
        sent = await client.send_messages("orders", "eu", Partitioning.balanced(), [b"hi"])
        polled = await client.poll_messages("orders", "eu", partition_id=sent.partition_id,
                                            polling_strategy=PollingStrategy.First(), count=10)
        for message in polled:
            print(message.offset, message.payload)

Layers. A command method encodes its arguments (protocol/client_codec.py), sends them over
the current `Link` (one connection: client/transports/) and decodes the answer into a typed
result (protocol/models.py); a server status comes back as its IggyError subclass. Which Link
class serves a transport is the `TRANSPORTS` table, imported on first use: TCP and TLS
(`TcpLink`), QUIC, WebSocket and HTTP as their modules land.

Staying connected. `connect()` tries the configured addresses in order and logs in on the
first that accepts (automatic login: credentials from the connection string or config, or
the last `login_user`/`login_with_personal_access_token`). A heartbeat task pings when the
connection has been idle for `heartbeat_interval`, so the server's idle timeout never ends
it. When the connection is lost (the server restarts, a node dies), the request in flight
fails with Disconnected (it may or may not have been applied, so it is not retried), and one
background task reconnects: every address in turn, backing off from `reconnection_interval`
doubling to `reconnection_max`, logging in again, then running the `on_reconnect` callbacks
(a consumer rejoins its group there). Requests made meanwhile wait for it, at most `timeout`
seconds each.

Cluster routing. Against an iggy-fast cluster, a partition's requests (sends to a partition
the client names, which every IggyProducer send is, and a single consumer's polls and offsets
naming a partition) go straight to the partition's leader, over a small pool of connections
(one per leader node, opened and logged in when first needed), instead of through the node
the client dialled, which would forward them; the leaders are learnt with GetPartitionLeaders
(an iggy-fast extension) and learnt again when a leader fails or moves. Everything else stays
on the main connection, and against a server that does not know that command (one node, an
Apache Iggy server) every request does: client/cluster.py. It is on when the client is given
several addresses (a cluster's nodes); a client given one address sends exactly what it sent
before (not one request more) unless `route_to_leaders=True`; `route_to_leaders=False` turns
it off.

Errors, all IggyError subclasses (protocol/errors.py): a server status as its class
(StreamIdNotFound...); InvalidCredentials / InvalidPersonalAccessToken for a refused login;
CannotEstablishConnection when no address answers; Disconnected when the connection ends
under a request; RequestTimeout when an answer takes longer than `timeout`; NotConnected
before `connect()` or after `close()`; UndecodableReply for a reply that does not parse;
TooBigMessagePayload / RequestTooLarge for a send that no server would take (nothing is sent);
InvalidConnectionString for a bad connection string; FeatureUnavailable for a transport that
is not in this build.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import ssl
import time

from iggy_fast.client import cluster
from iggy_fast.client.connection_string import ClientConfig, parse
from iggy_fast.client.transports import Link
from iggy_fast.client.types import (CONSUMER_KIND, Consumer, Partitioning, PollingStrategy,
                                    build_batch)
from iggy_fast.protocol import client_codec as codec
from iggy_fast.protocol.codes import PARTITION_ID, STREAM_SCOPE, TOPIC_SCOPE, USER_SCOPE
from iggy_fast.protocol.errors import (CannotEstablishConnection, FeatureUnavailable,
                                       IggyError, InvalidConfiguration, NotConnected,
                                       TransientNotAccepted)
from iggy_fast.protocol.models import (ClientInfo, ClientInfoDetails, ConsumerGroup,
                                       ConsumerGroupDetails, ConsumerOffset, Identity,
                                       OptionSpec, Permissions, PersonalAccessToken,
                                       PolledMessages, RawPersonalAccessToken, Sent, Stream,
                                       StreamDetails, Topic, TopicDetails, User, UserDetails)
from iggy_fast.protocol.results import ClusterMetadata, GroupAssignment, Stats

log = logging.getLogger("iggy_fast.client")

# transport name -> "module:Link class"; a transport is one line here.
TRANSPORTS = {
    "tcp": "iggy_fast.client.transports.tcp:TcpLink",
    "quic": "iggy_fast.client.transports.quic:QuicLink",
    "ws": "iggy_fast.client.transports.websocket:WebSocketLink",
    "http": "iggy_fast.client.transports.http:HttpLink",
}

# The constructor keywords a transport's Link takes from a ClientConfig, for a Link class that
# has no `from_config` of its own (the TLS settings: QUIC is always TLS, ws becomes wss).
# Without a CA file the server's certificate is not verified, as over TCP.
LINK_OPTIONS = {
    "quic": lambda c: {"server_name": c.tls_domain or "localhost",
                       "tls_ca_file": c.tls_ca_file},
    "ws": lambda c: {"tls": c.tls, "ca_file": c.tls_ca_file,
                     "verify": c.tls_ca_file is not None, "domain": c.tls_domain},
}

_SCOPES = {"topic": TOPIC_SCOPE, "stream": STREAM_SCOPE, "user": USER_SCOPE}
Ident = int | str


def link_class(transport: str) -> type[Link]:
    """The Link class serving `transport`, imported now."""
    spec = TRANSPORTS.get(transport)
    if spec is None:
        raise InvalidConfiguration(f"unknown transport {transport!r} (one of "
                                   f"{', '.join(TRANSPORTS)})")
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        raise FeatureUnavailable(f"transport {transport!r} not available: this build has no "
                                 f"{module}") from None


def make_link(transport: str, address: str, config: ClientConfig) -> Link:
    """A Link to `address` for `transport`, configured from `config`."""
    cls = link_class(transport)
    if cls.from_config.__func__ is Link.from_config.__func__ and transport in LINK_OPTIONS:
        return cls(address, config.timeout, **LINK_OPTIONS[transport](config))
    return cls.from_config(address, config)


def _config(conn, options) -> ClientConfig:
    if conn is None:
        config = ClientConfig()
    elif isinstance(conn, ClientConfig):
        config = conn
    elif "://" in conn:
        config = parse(conn)
    else:
        config = ClientConfig(addresses=conn)
    return config.with_(**options) if options else config


class IggyClient:
    """An asyncio client of one Iggy server (or a list of nodes to fail over between).

    `conn` is a connection string (`iggy://user:pass@host:port?options`, see
    connection_string.py), a plain `host:port` (TCP, no automatic login), or a ClientConfig;
    keyword arguments override config fields (`IggyClient(url, timeout=5)`).
    `route_to_leaders` sends a partition's requests to its leader in an iggy-fast cluster
    (client/cluster.py); None (the default): when several addresses are given.
    """

    def __init__(self, conn: str | ClientConfig | None = None, *,
                 route_to_leaders: bool | None = None, **options):
        self.config = _config(conn, options)
        c = self.config
        if route_to_leaders is None:
            route_to_leaders = len(c.addresses) > 1
        # The leader map and the leaders' links (None: every request on the one connection).
        self._router = cluster.Router(self) if route_to_leaders and cluster.routable(
            c.transport) else None
        self._credentials: tuple | None = (
            ("password", c.username, c.password) if c.username is not None
            else ("token", c.token) if c.token is not None else None)
        self._link: Link | None = None
        self._address_index = 0
        self._started = False               # connect() succeeded and close() not called
        self._reconnecting: asyncio.Task | None = None
        self._heartbeat: asyncio.Task | None = None
        self._idle_since = 0.0
        self.identity: Identity | None = None
        self.reconnects = 0                 # how many times the connection was re-established
        self.on_reconnect: list = []        # async callables(client), run after each re-login

    @classmethod
    def from_connection_string(cls, connection_string: str, **options) -> "IggyClient":
        return cls(parse(connection_string), **options)

    async def __aenter__(self) -> "IggyClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    @property
    def address(self) -> str | None:
        """The address of the node connected now (None when not connected)."""
        return self._link.address if self._link is not None and not self._link.closed else None

    @property
    def connected(self) -> bool:
        return self.address is not None

    # -- connection life cycle --------------------------------------------------------------

    async def connect(self) -> None:
        """Connect to the first address that answers (and log in, if credentials are set);
        start the heartbeat. Raises CannotEstablishConnection or the login's error."""
        if self._started and self.connected:
            return
        await self._establish()
        self._started = True
        if self._heartbeat is None and self.config.heartbeat_interval:
            self._heartbeat = asyncio.get_running_loop().create_task(self._heartbeat_loop())

    async def close(self) -> None:
        """Drop the connection and stop the heartbeat and any reconnection."""
        self._started = False
        for task in (self._heartbeat, self._reconnecting):
            if task is not None:
                task.cancel()
        self._heartbeat = self._reconnecting = None
        if self._router is not None:
            await self._router.close()
        if self._link is not None:
            await self._link.close()
            self._link = None

    disconnect = close

    async def _establish(self) -> None:
        """One pass over the addresses, starting with the last that worked."""
        c = self.config
        failures = []
        for k in range(len(c.addresses)):
            i = (self._address_index + k) % len(c.addresses)
            link = make_link(c.transport, c.addresses[i], c)
            try:
                await asyncio.wait_for(link.connect(), c.connect_timeout)
                if self._credentials is not None:
                    await self._login_on(link)
            except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError,
                    TimeoutError) as e:
                await link.close()
                failures.append(f"{c.addresses[i]}: {str(e) or type(e).__name__}")
                continue
            except BaseException:
                await link.close()
                raise
            self._link, self._address_index = link, i
            self._idle_since = time.monotonic()
            return
        tls = " with TLS" if c.tls else ""
        raise CannotEstablishConnection(
            f"no server answered over {c.transport}{tls} ({'; '.join(failures)}): check that "
            f"the server runs, listens on that address and transport, and the TLS settings")

    async def _login_on(self, link: Link) -> Identity:
        kind, *secret = self._credentials
        try:
            if kind == "password":
                body = await link.login(*secret)
            else:
                body = await link.token_login(secret[0])
        except (ConnectionError, TimeoutError):
            raise
        except IggyError as e:
            who = f"user {secret[0]!r}" if kind == "password" else "the access token"
            check = ("the username and password, and that the user is active"
                     if kind == "password" else "that the token exists and has not expired")
            raise IggyError.from_code(
                e.code, f"{link.address} refused the login of {who} ({e}): check {check}"
            ) from None
        self.identity = codec.read_identity(body)
        return self.identity

    def _reconnect(self) -> asyncio.Task:
        """The one task re-establishing the connection (started if none runs)."""
        if self._reconnecting is None or self._reconnecting.done():
            task = asyncio.get_running_loop().create_task(self._reconnect_loop())
            task.add_done_callback(_reported)
            self._reconnecting = task
        return self._reconnecting

    async def _reconnect_loop(self) -> None:
        c = self.config
        lost = self._link.error if self._link is not None else None
        log.warning("connection lost (%s); reconnecting", lost)
        if c.reestablish_after:
            await asyncio.sleep(c.reestablish_after)
        delay, attempts = c.reconnection_interval, 0
        while True:
            try:
                await self._establish()
                break
            except CannotEstablishConnection as e:
                attempts += 1
                if c.reconnection_retries is not None and attempts > c.reconnection_retries:
                    raise CannotEstablishConnection(
                        f"gave up reconnecting after {attempts} attempts: {e}") from None
                log.warning("reconnect attempt %d failed (%s); next in %.1f s", attempts, e,
                            delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, c.reconnection_max)
        self.reconnects += 1
        log.warning("reconnected to %s", self._link.address)
        for callback in self.on_reconnect:
            await callback(self)

    async def _ready(self) -> Link:
        """The live link, waiting (at most `timeout`) for a reconnection if one is needed."""
        if not self._started:
            raise NotConnected("the client is not connected: call connect() first (or it "
                               "was closed)")
        task = self._reconnect()
        try:
            await asyncio.wait_for(asyncio.shield(task), self.config.timeout)
        except asyncio.TimeoutError:
            raise CannotEstablishConnection(
                f"not reconnected within {self.config.timeout} s (still trying "
                f"{', '.join(self.config.addresses)})") from None
        return self._link

    async def _heartbeat_loop(self) -> None:
        interval = self.config.heartbeat_interval
        pool_pinged = time.monotonic()
        while True:
            await asyncio.sleep(max(0.05, self._idle_since + interval - time.monotonic()))
            if self._router is not None and time.monotonic() - pool_pinged >= interval:
                pool_pinged = time.monotonic()      # (the leaders' links: not timed per use)
                self._router.heartbeat()
            link = self._link
            if link is None or link.closed:
                if self._reconnecting is None or self._reconnecting.done():
                    self._reconnect()
                self._idle_since = time.monotonic()
                continue
            if time.monotonic() - self._idle_since < interval:
                continue
            try:
                await link.request(1)
                self._idle_since = time.monotonic()
            except (ConnectionError, TimeoutError) as e:
                # The link recorded its loss; the next pass starts the reconnection.
                log.warning("heartbeat to %s failed: %s", link.address, e)

    async def _call(self, code: int, body=b"", extra=()) -> memoryview:
        link = self._link
        if link is None or link.closed:
            link = await self._ready()
        reply = await link.request(code, body, extra)
        self._idle_since = time.monotonic()
        return reply

    async def _partition_call(self, stream, topic, partition_id: int, code: int, body,
                              extra=()) -> memoryview:
        """A request for one partition: over its leader's link when the router knows it
        (client/cluster.py), else over the main connection (whose node forwards it); in
        order with the partition's earlier requests even when its route changes."""
        router = self._router
        if router is None or not router.supported:
            return await self._call(code, body, extra)
        key = (stream, topic, partition_id)
        lane = router.lanes.get(key)
        link = router.pick(stream, topic, partition_id)
        if link is None or lane is None or lane.link is not link or lane.waiting:
            if lane is None:
                lane = router.lane(key)
            link = await self._route(lane, stream, topic, partition_id)
        else:
            lane.pending += 1
        main = link is self._link
        try:
            reply = await link.request(code, body, extra)
        except (ConnectionError, TimeoutError):
            # Not sent again (it may have been applied): the caller decides, as on the main
            # connection; the next request goes where the cluster says the leader is now.
            if not main:
                router.failed(link, stream, topic)
            raise
        except TransientNotAccepted:
            router.stale(stream, topic)
            raise
        finally:
            lane.done()
        if main:
            self._idle_since = time.monotonic()
        return reply

    async def _route(self, lane, stream, topic, partition_id: int) -> Link:
        """The slow path of a partition request: find its link (the leader's, or the main
        connection) in turn with the partition's other requests, and count it in flight.
        The lane's lock is released with no await before the caller writes the request, so
        the next request in line cannot overtake it."""
        router = self._router
        lane.waiting += 1       # (until counted in flight: the fast path must queue too)
        try:
            async with lane.lock:
                link = router.pick(stream, topic, partition_id)
                if link is None:
                    link = await router.find(stream, topic, partition_id)
                if link is None:
                    link = self._link
                    if link is None or link.closed:
                        link = await self._ready()
                if lane.link is not link:
                    await lane.move(link)
                lane.pending += 1
        finally:
            lane.waiting -= 1
        return link

    # -- session -----------------------------------------------------------------------------

    async def login_user(self, username: str, password: str) -> Identity:
        """Log in; the credentials are kept to log in again after a reconnect."""
        self._credentials = ("password", username, password)
        link = self._link if self._link is not None and not self._link.closed else \
            await self._ready()
        return await self._login_on(link)

    async def login_with_personal_access_token(self, token: str) -> Identity:
        self._credentials = ("token", token)
        link = self._link if self._link is not None and not self._link.closed else \
            await self._ready()
        return await self._login_on(link)

    async def logout_user(self) -> None:
        """Log out; a reconnect no longer logs in."""
        await self._call(39)
        self._credentials = None
        self.identity = None

    # -- system ------------------------------------------------------------------------------

    async def ping(self) -> None:
        await self._call(1)

    async def get_stats(self) -> Stats:
        return codec.read_stats(await self._call(10))

    async def get_snapshot(self, compression: int = 1, types=(100,)) -> bytes:
        """A ZIP of server diagnostics (§5.1.3); iggy-fast answers FeatureUnavailable."""
        body = bytes([compression, len(types), *types])
        return bytes(await self._call(11, body))

    async def get_cluster_metadata(self) -> ClusterMetadata:
        return codec.read_cluster_metadata(await self._call(12))

    async def describe_options(self, scope: str | int = "topic") -> list[OptionSpec]:
        """The option keys a scope ("topic", "stream", "user") accepts."""
        number = _SCOPES.get(scope, scope)
        if number not in _SCOPES.values():
            raise ValueError(f"scope {scope!r} is not one of {', '.join(_SCOPES)}")
        return codec.read_options(await self._call(13, codec.describe_options(number)))

    async def get_me(self) -> ClientInfoDetails:
        return codec.read_client(await self._call(20))

    async def get_client(self, client_id: int) -> ClientInfoDetails | None:
        return codec.read_client(await self._call(21, codec.get_client(client_id)))

    async def get_clients(self) -> list[ClientInfo]:
        return codec.read_clients(await self._call(22))

    # -- users and tokens --------------------------------------------------------------------

    async def get_user(self, user_id: Ident) -> UserDetails | None:
        return codec.read_user(await self._call(31, codec.user_ref(user_id)))

    async def get_users(self) -> list[User]:
        return codec.read_users(await self._call(32))

    async def create_user(self, username: str, password: str, status: int = 1,
                          permissions: Permissions | None = None) -> UserDetails:
        """`status`: 1 active, 2 inactive."""
        body = codec.create_user(username, password, status, permissions)
        return codec.read_created_user(await self._call(33, body))

    async def delete_user(self, user_id: Ident) -> None:
        await self._call(34, codec.user_ref(user_id))

    async def update_user(self, user_id: Ident, username: str | None = None,
                          status: int | None = None) -> None:
        await self._call(35, codec.update_user(user_id, username, status))

    async def update_permissions(self, user_id: Ident,
                                 permissions: Permissions | None) -> None:
        await self._call(36, codec.update_permissions(user_id, permissions))

    async def change_password(self, user_id: Ident, current_password: str,
                              new_password: str) -> None:
        await self._call(37, codec.change_password(user_id, current_password, new_password))

    async def get_personal_access_tokens(self) -> list[PersonalAccessToken]:
        return codec.read_tokens(await self._call(41))

    async def create_personal_access_token(self, name: str,
                                           expiry=0) -> RawPersonalAccessToken:
        """`expiry`: a timedelta or µs; 0 the server's default, U64_MAX never."""
        body = codec.create_personal_access_token(name, expiry)
        return codec.read_token(await self._call(42, body))

    async def delete_personal_access_token(self, name: str) -> None:
        await self._call(43, codec.delete_personal_access_token(name))

    # -- streams -----------------------------------------------------------------------------

    async def get_stream(self, stream_id: Ident) -> StreamDetails | None:
        return codec.read_stream(await self._call(200, codec.stream_ref(stream_id)))

    async def get_streams(self) -> list[Stream]:
        return codec.read_streams(await self._call(201))

    async def create_stream(self, name: str) -> StreamDetails:
        return codec.read_created_stream(await self._call(202, codec.create_stream(name)))

    async def delete_stream(self, stream_id: Ident) -> None:
        await self._call(203, codec.stream_ref(stream_id))

    async def update_stream(self, stream_id: Ident, name: str) -> None:
        await self._call(204, codec.update_stream(stream_id, name))

    async def purge_stream(self, stream_id: Ident) -> None:
        await self._call(205, codec.stream_ref(stream_id))

    # -- topics, partitions, segments --------------------------------------------------------

    async def get_topic(self, stream_id: Ident, topic_id: Ident) -> TopicDetails | None:
        return codec.read_topic(await self._call(300, codec.topic_ref(stream_id, topic_id)))

    async def get_topics(self, stream_id: Ident) -> list[Topic]:
        return codec.read_topics(await self._call(301, codec.stream_ref(stream_id)))

    async def create_topic(self, stream: Ident, name: str, partitions_count: int = 1,
                           compression_algorithm: str | None = None, message_expiry=None,
                           max_topic_size: int | None = None, segment_size: int | None = None,
                           messages_required_to_save: int | None = None,
                           size_of_messages_required_to_save: int | None = None,
                           preallocate_segments: bool | None = None,
                           durability: str | None = None,
                           consumer_offset_durability: str | None = None,
                           options: dict[str, str] | None = None) -> TopicDetails:
        """Options left None take the server's defaults; `message_expiry` is a timedelta or
        µs (U64_MAX: never), sizes are bytes (`max_topic_size` U64_MAX: unlimited)."""
        entries = codec.topic_options(
            compression_algorithm, message_expiry, max_topic_size, segment_size,
            messages_required_to_save, size_of_messages_required_to_save,
            preallocate_segments, durability, consumer_offset_durability, options)
        body = codec.create_topic(stream, name, partitions_count, entries)
        return codec.read_created_topic(await self._call(302, body))

    async def update_topic(self, stream_id: Ident, topic_id: Ident, name: str,
                           compression_algorithm: str | None = None, message_expiry=None,
                           max_topic_size: int | None = None,
                           options: dict[str, str] | None = None) -> None:
        """Rename and change the options given (the others keep their values)."""
        entries = codec.topic_options(compression_algorithm, message_expiry, max_topic_size,
                                      options=options)
        await self._call(304, codec.update_topic(stream_id, topic_id, name, entries))

    async def delete_topic(self, stream_id: Ident, topic_id: Ident) -> None:
        await self._call(303, codec.topic_ref(stream_id, topic_id))

    async def purge_topic(self, stream_id: Ident, topic_id: Ident) -> None:
        await self._call(305, codec.topic_ref(stream_id, topic_id))

    async def create_partitions(self, stream_id: Ident, topic_id: Ident,
                                partitions_count: int) -> None:
        await self._call(402, codec.partitions(stream_id, topic_id, partitions_count))

    async def delete_partitions(self, stream_id: Ident, topic_id: Ident,
                                partitions_count: int) -> None:
        """Delete the last `partitions_count` partitions (the highest ids)."""
        await self._call(403, codec.partitions(stream_id, topic_id, partitions_count))

    async def delete_segments(self, stream_id: Ident, topic_id: Ident, partition_id: int,
                              segments_count: int) -> None:
        body = codec.delete_segments(stream_id, topic_id, partition_id, segments_count)
        await self._call(503, body)

    # -- consumer groups ---------------------------------------------------------------------

    async def get_consumer_group(self, stream_id: Ident, topic_id: Ident,
                                 group_id: Ident) -> ConsumerGroupDetails | None:
        body = codec.group_ref(stream_id, topic_id, group_id)
        return codec.read_consumer_group(await self._call(600, body))

    async def get_consumer_groups(self, stream_id: Ident,
                                  topic_id: Ident) -> list[ConsumerGroup]:
        body = codec.topic_ref(stream_id, topic_id)
        return codec.read_consumer_groups(await self._call(601, body))

    async def create_consumer_group(self, stream_id: Ident, topic_id: Ident,
                                    name: str) -> ConsumerGroupDetails:
        body = codec.create_consumer_group(stream_id, topic_id, name)
        return codec.read_created_consumer_group(await self._call(602, body))

    async def delete_consumer_group(self, stream_id: Ident, topic_id: Ident,
                                    group_id: Ident) -> None:
        await self._call(603, codec.group_ref(stream_id, topic_id, group_id))

    async def join_consumer_group(self, stream_id: Ident, topic_id: Ident,
                                  group_id: Ident) -> None:
        """Join as this connection (membership ends with it: rejoin in `on_reconnect`)."""
        await self._call(604, codec.group_ref(stream_id, topic_id, group_id))

    async def leave_consumer_group(self, stream_id: Ident, topic_id: Ident,
                                   group_id: Ident) -> None:
        await self._call(605, codec.group_ref(stream_id, topic_id, group_id))

    async def sync_consumer_group(self, stream_id: Ident, topic_id: Ident,
                                  group_id: Ident) -> GroupAssignment | None:
        """This member's partitions and the group's generation; None if not a member."""
        body = codec.group_ref(stream_id, topic_id, group_id)
        return codec.read_assignment(await self._call(606, body))

    # -- offsets -----------------------------------------------------------------------------

    async def get_consumer_offset(self, stream_id: Ident, topic_id: Ident,
                                  partition_id: int | None = None,
                                  consumer: Consumer | Ident = 1) -> ConsumerOffset | None:
        c = Consumer.of(consumer)
        body = codec.get_consumer_offset(c.kind, c.id, stream_id, topic_id, partition_id)
        return codec.read_consumer_offset(
            await self._consumer_call(c, stream_id, topic_id, partition_id, 120, body))

    async def store_consumer_offset(self, stream_id: Ident, topic_id: Ident, offset: int,
                                    partition_id: int | None = None,
                                    consumer: Consumer | Ident = 1) -> None:
        c = Consumer.of(consumer)
        body = codec.store_consumer_offset(c.kind, c.id, stream_id, topic_id, partition_id,
                                           offset)
        await self._consumer_call(c, stream_id, topic_id, partition_id, 121, body)

    async def delete_consumer_offset(self, stream_id: Ident, topic_id: Ident,
                                     partition_id: int | None = None,
                                     consumer: Consumer | Ident = 1) -> None:
        c = Consumer.of(consumer)
        body = codec.delete_consumer_offset(c.kind, c.id, stream_id, topic_id, partition_id)
        await self._consumer_call(c, stream_id, topic_id, partition_id, 122, body)

    # -- messages ----------------------------------------------------------------------------

    async def send_messages(self, stream: Ident, topic: Ident,
                            partitioning: Partitioning | int | None, messages) -> Sent | None:
        """Send messages (bytes, str, memoryview or SendMessage) as one batch; returns where
        they went (partition and offsets). `partitioning`: a Partitioning, a partition id,
        or None for balanced."""
        batch, count = build_batch(messages)
        return await self.send_batch(stream, topic, partitioning, batch, count)

    async def send_batch(self, stream: Ident, topic: Ident,
                         partitioning: Partitioning | int | None, batch, count: int
                         ) -> Sent | None:
        """Send an encoded batch (§7.3) of `count` messages as it is: the batch goes to the
        socket as the caller's buffer, never copied (for producers that build batches). It
        may be one buffer or a list of buffers that together are the batch (a header, then
        frames), written in order."""
        p = Partitioning.of(partitioning)
        body = codec.send_messages(stream, topic, p.kind, p.value, count)
        pieces = tuple(batch) if isinstance(batch, (list, tuple)) else (batch,)
        if self._router is None or p.kind != PARTITION_ID:
            # One server, or the server chooses the partition (then the node dialled does).
            return codec.read_sent(await self._call(101, body, pieces), count)
        partition_id = partitioning if type(partitioning) is int else \
            int.from_bytes(p.value, "little")
        return codec.read_sent(
            await self._partition_call(stream, topic, partition_id, 101, body, pieces), count)

    async def poll_messages(self, stream: Ident, topic: Ident, *,
                            partition_id: int | None = None,
                            polling_strategy: PollingStrategy | None = None, count: int = 100,
                            auto_commit: bool = False,
                            consumer: Consumer | Ident = 1) -> PolledMessages:
        """Poll up to `count` messages (default strategy: Next); the answer is a view over
        the reply buffer (PolledMessages), decoding a message only when asked for."""
        s = polling_strategy or PollingStrategy.Next()
        c = Consumer.of(consumer)
        body = codec.poll_messages(c.kind, c.id, stream, topic, partition_id, s.kind, s.value,
                                   count, auto_commit)
        return codec.read_polled(
            await self._consumer_call(c, stream, topic, partition_id, 100, body))

    async def flush_unsaved_buffer(self, stream_id: Ident, topic_id: Ident,
                                   partition_id: int, fsync: bool = False) -> None:
        body = codec.flush_unsaved_buffer(stream_id, topic_id, partition_id, fsync)
        await self._partition_call(stream_id, topic_id, partition_id, 102, body)

    def _consumer_call(self, c: Consumer, stream, topic, partition_id, code: int, body):
        """A poll or offset request: a single consumer's naming its partition goes to the
        leader; a group member's stays on the connection that joined (the leader checks the
        member owns the partition), and one naming no partition where the server picks."""
        if self._router is not None and c.kind == CONSUMER_KIND and partition_id is not None:
            return self._partition_call(stream, topic, partition_id, code, body)
        return self._call(code, body)

    async def get_partition_leaders(self, stream: Ident, topic: Ident):
        """Each partition's leader (an iggy-fast cluster's extension, code 9000): a list of
        PartitionLeader(partition_id, epoch, node, address) for this client's transport.
        FeatureUnavailable from a single node, InvalidCommand from an Apache Iggy server."""
        number = cluster.transport_number(self.config.transport)
        body = codec.get_partition_leaders(stream, topic, number)
        return codec.read_partition_leaders(await self._call(9000, body))

    async def send_binary_request(self, code: int, payload: bytes = b"") -> bytes:
        """Any command by its code and body; the reply's payload as bytes."""
        return bytes(await self._call(code, payload))


def _reported(task: asyncio.Task) -> None:
    """A reconnection nobody waited for still has its failure logged."""
    if not task.cancelled() and task.exception() is not None:
        log.error("reconnection failed: %s", task.exception())
