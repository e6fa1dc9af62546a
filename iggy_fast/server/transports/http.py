"""The HTTP REST transport (PROTOCOL.md §11.3): aiohttp routes over the JSON codec and the
same service functions as the binary transports.

Each route is one row of `ROUTES`: method, path, command code, the JSON decoder and encoder
(protocol/json.py) and the success status. A request is authenticated (a Bearer JWT, jwt.py),
its body parsed and decoded into the typed request, and served by
`server.dispatcher.call(client, code, request, now)`: the service layer decides permissions,
exactly as for TCP. Errors are Iggy's error JSON `{id, code, reason, field}` with the status
Iggy gives them (404 for the not-found family, 401 unauthenticated, 403 unauthorized, 503 for
transient ones, 400 for the rest); a GET of one object that does not exist is 404
`not_found`.

The `Client` of a request: one per request, connected when the request is decoded and
disconnected when it is answered, carrying the token's user. HTTP has no session to keep
(no consumer-group membership, no heartbeat): a per-request client keeps no state that could
outlive its token, a logout, a deleted user or a dropped connection, and `GET /clients` shows
the HTTP requests in flight. Logins go through the command table's login (code 40) with such
a client, so an HTTP password login is checked, throttled and logged like a binary one
(service/session.py, LoginGuard); the JWT is issued only after it succeeds.

Other parts of the server add their own routes: a function appended to `ROUTE_HOOKS` is called
with each new endpoint and adds to `endpoint.app.router`; its handlers reach the server as
`endpoint.server` and check callers with `endpoint.authenticate(request, allow_pat=True)` (a
JWT or a personal access token as the bearer, as Iggy's /metrics accepts). An IggyError they
raise is answered as Iggy's error JSON like any other.

Request bodies above `[http] max_request_size` are refused with 413. CORS (`[http.cors]`) is a
middleware: it answers preflights (OPTIONS with Access-Control-Request-Method) itself and adds
the allow/expose headers to replies for allowed origins. HTTPS when `[http.tls]` is enabled
(configured certificate files; HTTP has no self-signed option, as in Iggy). Unlike Iggy, the
flush route the official client calls (`GET …/messages/flush/{partition_id}/fsync={bool}`)
is served, and `POST /snapshot` answers FeatureUnavailable (5). Bytes that are not HTTP get
aiohttp's plain 400 and one WARNING line.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import time
from typing import Callable, NamedTuple

from aiohttp import web

from iggy_fast import ui
from iggy_fast.config import parse_size, split_address
from iggy_fast.http_body import WholeBody, read_body
from iggy_fast.protocol import json as js
from iggy_fast.protocol.codes import EVICTION_ERROR_CODES, EvictionReason
from iggy_fast.protocol.errors import (Eviction, FeatureUnavailable, IggyError,
                                       Unauthenticated, UserInactive)
from iggy_fast.server.jwt import JwtManager, as_list
from iggy_fast.server.transports import Endpoint, tls
from iggy_fast.server.transports.sockets import bind
from iggy_fast.server.users import ACTIVE

log = logging.getLogger("iggy_fast.http")

JSON = "application/json"
NOT_FOUND_STATUSES = frozenset({1009, 2010, 3007, 4000, 100, 5000, 5003, 5006, 3021, 20})
UNAUTHENTICATED_STATUSES = frozenset({40, 77, 78, 53})
SHUTDOWN_TIMEOUT = 1.0      # seconds a request in flight may take to finish at shutdown
# A reply body above this is a WholeBody (http_body.py); below, aiohttp's copy of it costs
# less than the second write.
LARGE_BODY = 64 * 1024
# How much of a request body aiohttp buffers before it stops reading the socket. Its default
# (256 KiB, paused past twice that) paused and resumed the socket in about one send in three
# of a 1000 x 1000 B batch (1.4 MB of JSON): two epoll changes and a loop turn each time.
READ_BUFSIZE = 1024 * 1024


def http_status(code: int) -> int:
    if code in NOT_FOUND_STATUSES:
        return 404
    if code in UNAUTHENTICATED_STATUSES:
        return 401
    if code == 41:
        return 403
    if code in (57, 58):
        return 503
    return 400


def error_response(e: IggyError) -> web.Response:
    status = http_status(e.code)
    headers = {"Retry-After": "1"} if status == 503 else None
    return web.Response(status=status, body=js.error_body(e), content_type=JSON,
                        headers=headers)


def _http_error(status: int, code: str, reason: str) -> web.Response:
    """An HTTP-layer error (no Iggy code): Iggy's error JSON with the status as its id."""
    return web.Response(status=status, content_type=JSON, body=js.dumps(
        {"id": status, "code": code, "reason": reason, "field": None}))


def not_found() -> web.Response:
    return _http_error(404, "not_found", "Resource not found")


def login_error(e: Eviction) -> IggyError:
    """The error a failed login is shown as (HTTP has no Eviction frames)."""
    if e.reason == EvictionReason.USER_INACTIVE:
        return UserInactive()
    return IggyError.from_code(EVICTION_ERROR_CODES.get(e.reason, 42))


class _PeerErrors(logging.LoggerAdapter):
    """aiohttp's connection-level logger: a request that is not HTTP (a malformed request
    line or header, which aiohttp answers 400 itself) is the peer's fault, worth one WARNING
    line, not a traceback."""

    def exception(self, msg, *args, exc_info=None, **kwargs):
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        reason = " ".join(str(exc).split())[:200] if exc is not None else ""
        self.warning(msg + ": %s %s", *args, type(exc).__name__, reason)


class Route(NamedTuple):
    method: str
    path: str
    code: int                        # the command it serves (codes.COMMANDS)
    decode: Callable                 # (path, query, body) -> typed request
    encode: Callable | None          # result -> JSON bytes; None: no body
    status: int = 200                # on success


S, T = "/streams/{stream_id}", "/streams/{stream_id}/topics/{topic_id}"
ROUTES = [
    Route("GET", "/stats", 10, js.decode_get_stats, js.encode_stats),
    Route("GET", "/cluster/metadata", 12, js.decode_get_cluster_metadata,
          js.encode_cluster_metadata),
    Route("GET", "/options/{scope}", 13, js.decode_describe_options, js.encode_options),
    Route("GET", "/clients", 22, js.decode_get_clients, js.encode_clients),
    Route("GET", "/clients/{client_id}", 21, js.decode_get_client, js.encode_client_details),
    Route("GET", "/users", 32, js.decode_get_users, js.encode_users),
    Route("POST", "/users", 33, js.decode_create_user, js.encode_user_details),
    Route("GET", "/users/{user_id}", 31, js.decode_get_user, js.encode_user_details),
    Route("PUT", "/users/{user_id}", 35, js.decode_update_user, None, 204),
    Route("DELETE", "/users/{user_id}", 34, js.decode_delete_user, None, 204),
    Route("PUT", "/users/{user_id}/password", 37, js.decode_change_password, None, 204),
    Route("PUT", "/users/{user_id}/permissions", 36, js.decode_update_permissions, None, 204),
    Route("GET", "/personal-access-tokens", 41, js.decode_get_pats, js.encode_tokens),
    Route("POST", "/personal-access-tokens", 42, js.decode_create_pat, js.encode_token),
    Route("DELETE", "/personal-access-tokens/{name}", 43, js.decode_delete_pat, None, 204),
    Route("GET", "/streams", 201, js.decode_get_streams, js.encode_streams),
    Route("POST", "/streams", 202, js.decode_create_stream, js.encode_stream_details),
    Route("GET", S, 200, js.decode_get_stream, js.encode_stream_details),
    Route("PUT", S, 204, js.decode_update_stream, None, 204),
    Route("DELETE", S, 203, js.decode_delete_stream, None, 204),
    Route("DELETE", S + "/purge", 205, js.decode_purge_stream, None, 204),
    Route("GET", S + "/topics", 301, js.decode_get_topics, js.encode_topics),
    Route("POST", S + "/topics", 302, js.decode_create_topic, js.encode_topic_details),
    Route("GET", T, 300, js.decode_get_topic, js.encode_topic_details),
    Route("PUT", T, 304, js.decode_update_topic, None, 204),
    Route("DELETE", T, 303, js.decode_delete_topic, None, 204),
    Route("DELETE", T + "/purge", 305, js.decode_purge_topic, None, 204),
    Route("POST", T + "/partitions", 402, js.decode_create_partitions, None, 200),
    Route("DELETE", T + "/partitions", 403, js.decode_delete_partitions, None, 204),
    Route("DELETE", T + "/partitions/{partition_id}", 503, js.decode_delete_segments, None,
          204),
    Route("GET", T + "/consumer-groups", 601, js.decode_get_groups, js.encode_groups),
    Route("POST", T + "/consumer-groups", 602, js.decode_create_group,
          js.encode_group_details),
    Route("GET", T + "/consumer-groups/{group_id}", 600, js.decode_get_group,
          js.encode_group_details),
    Route("DELETE", T + "/consumer-groups/{group_id}", 603, js.decode_delete_group, None, 204),
    Route("GET", T + "/messages", 100, js.decode_poll, js.encode_polled),
    Route("POST", T + "/messages", 101, js.decode_send, js.encode_sent, 201),
    Route("GET", T + "/messages/flush/{partition_id}/{fsync:fsync=(?:true|false)}", 102,
          js.decode_flush, None, 204),
    Route("GET", T + "/consumer-offsets", 120, js.decode_get_offset, js.encode_stored_offset),
    Route("PUT", T + "/consumer-offsets", 121, js.decode_store_offset, None, 204),
    Route("DELETE", T + "/consumer-offsets/{consumer_id}", 122, js.decode_delete_offset, None,
          204),
]


# Callables(endpoint) that add routes to every HTTP endpoint made (see the module docstring).
ROUTE_HOOKS: list[Callable[["HttpEndpoint"], None]] = []


class HttpEndpoint(Endpoint):
    section = "http"
    name = "HTTP"

    def __init__(self, cfg: dict):
        super().__init__(cfg)
        http = cfg["http"]
        self.ssl = None
        if http["tls"]["enabled"]:
            self.ssl = tls.configured_context(http["tls"], "http.tls")
        self.jwt = JwtManager(http["jwt"])
        self.cors = {key: as_list(value) if key.startswith(("allowed_", "exposed_")) else value
                     for key, value in http["cors"].items()}
        self.server = None
        self.runner = None
        self._closing = None
        self.max_request_size = parse_size(http["max_request_size"])
        self.app = web.Application(client_max_size=self.max_request_size,
                                   middlewares=[self._cors, self._errors])
        for route in ROUTES:
            self.app.router.add_route(route.method, route.path, self._handler(route))
        add = self.app.router.add_route
        add("GET", "/ping", self._ping)
        add("POST", "/users/login", self._login)
        add("POST", "/personal-access-tokens/login", self._login)
        add("POST", "/users/refresh-token", self._refresh)
        add("DELETE", "/users/logout", self._logout)
        add("POST", "/snapshot", self._unavailable)
        for hook in ROUTE_HOOKS:
            hook(self)
        if http["web_ui"]:
            ui.add_routes(self.app)            # the dashboard's static files at /ui
        self.sockets = bind(self.name, http["address"])

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, server) -> None:
        self.server = server
        server.periodic_tasks.append((60.0, self.jwt.forget_expired))
        self.runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT,
                                    logger=_PeerErrors(log, {}), read_bufsize=READ_BUFSIZE)
        await self.runner.setup()
        for sock in self.sockets:
            await web.SockSite(self.runner, sock, ssl_context=self.ssl).start()
        port = self.sockets[0].getsockname()[1]
        server.listen_ports[self.section] = port
        log.info("HTTP%s listening on %s:%d", " (TLS)" if self.ssl else "",
                 split_address(self.cfg["http"]["address"])[0], port)

    def close(self) -> None:
        if self.runner is None:
            for sock in self.sockets:
                sock.close()
        elif self._closing is None:
            self._closing = asyncio.ensure_future(self.runner.cleanup())

    async def wait_closed(self) -> None:
        if self._closing is not None:
            await self._closing

    # -- authentication --------------------------------------------------------------------

    def authenticate(self, request: web.Request, allow_pat: bool = False):
        """The user the request's `Authorization: Bearer` token names: a JWT of this server
        (or, with allow_pat, a personal access token). Unauthenticated (401) otherwise."""
        user, _claims = self._bearer(request, allow_pat)
        return user

    def _bearer(self, request: web.Request, allow_pat: bool = False):
        """(user, claims) of the request's bearer token (claims None for a PAT)."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("missing access token (Authorization: Bearer)")
        return self._check_token(token.strip(), allow_pat)

    def _check_token(self, token: str, allow_pat: bool = False):
        if allow_pat and token.count(".") != 2:     # not a JWT: a personal access token
            try:
                return self.server.tokens.authenticate(token, time.time_ns() // 1000), None
            except IggyError:
                raise Unauthenticated("invalid access token") from None
        claims = self.jwt.check(token)
        user = self.server.users.find(int(claims["sub"]))
        # The user may have been deleted (and its id reused), deactivated, or given another
        # password since.
        if user is None or claims.get("uca") != user.created_at or user.status != ACTIVE:
            raise Unauthenticated("the token's user no longer exists or is inactive")
        if claims.get("pwd") != self.jwt.password_tag(user):
            raise Unauthenticated("the password changed since this token was issued")
        return user, claims

    def _address(self, request: web.Request) -> str:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if not peer:
            return "unknown"
        host = f"[{peer[0]}]" if ":" in peer[0] else peer[0]
        return f"{host}:{peer[1]}"

    def _identity(self, user) -> web.Response:
        token, expiry = self.jwt.issue(user, int(time.time()))
        return web.Response(body=js.identity(user.id, token, expiry), content_type=JSON)

    # -- handlers --------------------------------------------------------------------------

    def _handler(self, route: Route):
        async def handle(request: web.Request) -> web.Response:
            server = self.server
            user, _ = self._bearer(request)
            req = js.decode_request(route.decode, request.match_info, request.query,
                                    await read_body(request.content,
                                                    request.content_length,
                                                    self.max_request_size))
            client = server.connect(self.name, self._address(request))
            try:
                client.user_id = user.id
                result = server.dispatcher.call(client, route.code, req,
                                                time.time_ns() // 1000)
                if inspect.isawaitable(result):
                    result = await result
                return self._reply(route, request, result)
            finally:
                server.disconnect(client)
        handle.__name__ = f"http_{route.code}"
        return handle

    @staticmethod
    def _reply(route: Route, request: web.Request, result) -> web.Response:
        if result is None:
            if route.method == "GET" and route.encode is not None:
                return not_found()
            return web.Response(status=route.status)
        if route.code == 101:           # a send: Iggy's durability header, 202 without ack
            if request.query.get("ack") == "none":
                return web.Response(status=202, headers={"iggy-durability": "none"})
            return web.Response(status=201, body=route.encode(result), content_type=JSON,
                                headers={"iggy-durability": "replicated-memory"})
        body = route.encode(result)
        if len(body) > LARGE_BODY:          # a poll's messages: written without a copy
            return web.Response(status=route.status, body=WholeBody(body, content_type=JSON))
        return web.Response(status=route.status, body=body, content_type=JSON)

    async def _ping(self, request: web.Request) -> web.Response:
        return web.Response(text="pong")

    async def _login(self, request: web.Request) -> web.Response:
        """Password (`/users/login`) or personal access token login: the binary login's
        checks with a client of this request, then a JWT for the user."""
        body = js.parse_body(await request.read())
        by_token = request.path.startswith("/personal-access-tokens")
        req = (js.decode_token_login if by_token else js.decode_login)({}, {}, body)
        server = self.server
        client = server.connect(self.name, self._address(request))
        try:
            session = await server.dispatcher.call(client, 40, req, time.time_ns() // 1000)
        except Eviction as e:
            raise login_error(e) from None
        finally:
            server.disconnect(client)
        user = server.users.find(session.user_id)
        if user is None:                      # deleted in the meantime
            raise login_error(Eviction(EvictionReason.INVALID_CREDENTIALS))
        return self._identity(user)

    async def _refresh(self, request: web.Request) -> web.Response:
        """{token}: a valid token is exchanged for a new one, and revoked."""
        body = js.parse_body(await request.read())
        user, claims = self._check_token(js.decode_token_login({}, {}, body).token)
        self.jwt.revoke(claims)
        return self._identity(user)

    async def _logout(self, request: web.Request) -> web.Response:
        _user, claims = self._bearer(request)
        self.jwt.revoke(claims)
        return web.Response(status=204)

    async def _unavailable(self, request: web.Request) -> web.Response:
        self._bearer(request)
        raise FeatureUnavailable("snapshots are not available in this version")

    # -- middlewares -----------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler):
        """Iggy's error JSON for every failure, whoever raised it."""
        try:
            return await handler(request)
        except IggyError as e:
            return error_response(e)
        except web.HTTPRequestEntityTooLarge as e:
            return _http_error(413, "payload_too_large", e.text or "request too large")
        except web.HTTPNotFound:
            return not_found()
        except web.HTTPMethodNotAllowed:
            return _http_error(405, "method_not_allowed", "Method not allowed")
        except web.HTTPException:
            raise
        except ConnectionError:
            # The client went away mid-request (a body cut short): nobody to answer.
            log.debug("%s %s: the client closed the connection", request.method, request.path)
            return web.Response(status=400)
        except Exception:
            log.exception("internal error serving %s %s", request.method, request.path)
            return _http_error(500, "internal_error", "Internal server error")

    @web.middleware
    async def _cors(self, request: web.Request, handler):
        cors = self.cors
        origin = request.headers.get("Origin")
        if not cors["enabled"] or origin is None:
            return await handler(request)
        allowed = cors["allowed_origins"]
        if "*" not in allowed and origin not in allowed:
            return await handler(request)
        headers = {"Access-Control-Allow-Origin":
                   "*" if "*" in allowed and not cors["allow_credentials"] else origin,
                   "Vary": "Origin"}
        if cors["allow_credentials"]:
            headers["Access-Control-Allow-Credentials"] = "true"
        if (request.method == "OPTIONS"
                and "Access-Control-Request-Method" in request.headers):
            headers["Access-Control-Allow-Methods"] = ", ".join(cors["allowed_methods"])
            headers["Access-Control-Allow-Headers"] = ", ".join(cors["allowed_headers"])
            headers["Access-Control-Max-Age"] = "3600"
            return web.Response(status=204, headers=headers)
        response = await handler(request)
        if cors["exposed_headers"]:
            headers["Access-Control-Expose-Headers"] = ", ".join(cors["exposed_headers"])
        response.headers.update(headers)
        return response

