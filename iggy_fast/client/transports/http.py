"""`HttpLink`: the async client over the HTTP REST API (`iggy+http://`, HTTPS with `tls=true`).

The client hands every Link binary request bodies and reads binary reply payloads (see
client/transports/__init__.py); this Link translates both ways with the existing codecs,
through protocol/json_client.py: the body is decoded by the server's binary decoder into its
typed request, which becomes the route, query and JSON of the REST API, and the reply's JSON
becomes the typed result the server's binary encoder turns into the payload the client reads.

Session. A login (`POST /users/login`, or `/personal-access-tokens/login` with a token) gives
a JWT, kept here and sent as `Authorization: Bearer` with every request. Once 80% of its
lifetime has passed the next request first exchanges it for a fresh one (`POST
/users/refresh-token`), so a long-lived client never meets an expired token; logout (`DELETE
/users/logout`) revokes it. A ping is `GET /ping`.

Errors. A failed request's error JSON `{id, code, reason}` raises the IggyError of its `id`
(protocol/errors.py); a 404 without an Iggy code on a GET of one object is the binary
protocol's empty answer ("no such object", which the client decodes as None). Commands the
REST API has no route for raise FeatureUnavailable before anything is sent. A connection that
breaks under a request raises Disconnected and closes the link (the client reconnects and logs
in again); no answer within `timeout` raises RequestTimeout.

One aiohttp ClientSession per link: its connection pool keeps HTTP/1.1 connections alive, so
concurrent requests of one client run in parallel over a few connections.
"""

from __future__ import annotations

import asyncio
import ssl
import time

import aiohttp
import orjson

from iggy_fast.client.transports import Link
from iggy_fast.http_body import WholeBody, read_body
from iggy_fast.protocol import json_client as jc
from iggy_fast.protocol.errors import (Disconnected, FeatureUnavailable, IggyError,
                                       NotConnected, RequestTimeout, RequestTooLarge)

REFRESH_AT = 0.8        # refresh a token once this share of its lifetime has passed
# A reply this large (a poll's messages) is read into the buffer the previous one left: a
# fresh megabyte each time costs the client a page fault per 4 KiB, more than its JSON.
BIG_REPLY = 64 * 1024
JSON_HEADERS = {"Content-Type": "application/json"}


def _bytes(piece) -> bytes | memoryview:
    return piece if isinstance(piece, (bytes, bytearray)) else memoryview(piece)


class HttpLink(Link):
    """The client's requests as HTTP REST calls to one server (see the module docstring)."""

    def __init__(self, address: str, timeout: float = 30.0, tls: bool = False,
                 ca_file: str | None = None, domain: str | None = None):
        super().__init__(address, timeout)
        self.url = f"{'https' if tls else 'http'}://{address}"
        self.ssl: ssl.SSLContext | bool = False if not tls else _context(ca_file)
        self.domain = domain
        self.session: aiohttp.ClientSession | None = None
        self.error: BaseException | None = None     # why the link ended, once it has
        self.token: str | None = None
        self._issued = self._expiry = 0.0           # unix seconds
        self._refreshing: asyncio.Lock | None = None
        self._spare: bytearray | None = None        # the buffer of the last big reply

    @classmethod
    def from_config(cls, address: str, config) -> "HttpLink":
        return cls(address, config.timeout, config.tls, config.tls_ca_file, config.tls_domain)

    # -- Link -----------------------------------------------------------------------------

    async def connect(self) -> None:
        self.session = aiohttp.ClientSession(
            self.url, timeout=aiohttp.ClientTimeout(total=self.timeout),
            json_serialize=lambda obj: orjson.dumps(obj).decode())
        self._refreshing = asyncio.Lock()
        await self._http("GET", "/ping", auth=False)       # is anything answering HTTP?

    @property
    def closed(self) -> bool:
        return self.session is None or self.session.closed

    async def close(self) -> None:
        if self.session is not None and not self.session.closed:
            if self.error is None:
                self.error = ConnectionError("closed by the client")
            await self.session.close()

    async def login(self, username: str, password: str) -> memoryview:
        return await self._login("/users/login", {"username": username, "password": password})

    async def token_login(self, token: str) -> memoryview:
        return await self._login("/personal-access-tokens/login", {"token": token})

    async def request(self, code: int, body=b"", extra=()) -> memoryview:
        if code == 1:
            await self._http("GET", "/ping", auth=False)
            return memoryview(b"")
        if code == 39:
            await self._http("DELETE", "/users/logout")
            self.token = None
            return memoryview(b"")
        route = jc.ROUTES.get(code)
        if route is None:
            raise FeatureUnavailable(f"command {code} is not available over HTTP: use TCP, "
                                     f"QUIC or WebSocket")
        req = route.decode(body)
        call = route.call(req)
        if code == 101:
            batch = _bytes(extra[0]) if len(extra) == 1 else b"".join(map(_bytes, extra))
            data = WholeBody(jc.send_body(req, batch), content_type="application/json")
        else:
            data = None if call.body is None else orjson.dumps(call.body)
        status, raw = await self._http(call.method, call.path, call.query, data,
                                       none_if_missing=call.method == "GET"
                                       and route.reply is not None)
        if status == 404 or route.reply is None or not raw:
            return memoryview(b"")
        reply = route.reply(raw)
        if len(raw) >= BIG_REPLY:           # read, converted and dropped: keep it for the next
            self._spare = raw
        return memoryview(reply)

    # -- the session's token --------------------------------------------------------------

    async def _login(self, path: str, body: dict) -> memoryview:
        _status, raw = await self._http("POST", path, data=orjson.dumps(body), auth=False)
        self._keep(raw)
        return memoryview(self._payload)

    def _keep(self, raw: bytes) -> None:
        self._payload, self.token, expiry = jc.session_payload(raw)
        self._issued, self._expiry = time.time(), float(expiry)

    async def _fresh_token(self) -> str | None:
        """The token to send, refreshed first when most of its lifetime has passed."""
        due = self._issued + (self._expiry - self._issued) * REFRESH_AT
        if self.token is None or time.time() < due:
            return self.token
        async with self._refreshing:
            if time.time() >= self._issued + (self._expiry - self._issued) * REFRESH_AT:
                _status, raw = await self._http("POST", "/users/refresh-token",
                                                data=orjson.dumps({"token": self.token}),
                                                auth=False)
                self._keep(raw)
        return self.token

    # -- one HTTP exchange ----------------------------------------------------------------

    async def _http(self, method: str, path: str, query=None, data=None, auth: bool = True,
                    none_if_missing: bool = False) -> tuple[int, bytearray]:
        """(status, body) of a successful request; the IggyError of a failed one."""
        if self.closed:
            raise NotConnected(f"not connected to {self.address}"
                               + (f" ({self.error})" if self.error else ""))
        headers = dict(JSON_HEADERS) if data is not None else {}
        if auth:
            token = await self._fresh_token()
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
        try:
            async with self.session.request(method, path, params=query, data=data,
                                            headers=headers, ssl=self.ssl,
                                            server_hostname=self.domain) as response:
                length = response.content_length
                spare = None
                if length is not None and length >= BIG_REPLY:
                    spare, self._spare = self._spare, None      # one reply at a time uses it
                raw = await read_body(response.content, length, into=spare)
                status = response.status
        except asyncio.TimeoutError:
            await self._lost(RequestTimeout(f"no answer to {method} {path} within "
                                            f"{self.timeout} s"))
            raise RequestTimeout(f"no answer to {method} {path} from {self.address} within "
                                 f"{self.timeout} s; connection closed (is the server "
                                 f"overloaded, or the timeout too short?)") from None
        except aiohttp.ClientConnectorError as e:   # nothing was sent
            await self._lost(e)
            raise Disconnected(f"cannot reach {self.url} for {method} {path} "
                               f"({type(e).__name__}: {e})") from None
        except aiohttp.ClientError as e:
            await self._lost(e)
            raise Disconnected(f"connection to {self.address} lost during {method} {path} "
                               f"({type(e).__name__}: {e}); it may or may not have been "
                               f"applied") from None
        if status < 400:
            return status, raw
        if status == 404 and none_if_missing and _error_id(raw) == 404:
            return status, b""
        raise _error(status, raw, method, path)

    async def _lost(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        if self.session is not None:
            await self.session.close()


def _context(ca_file: str | None) -> ssl.SSLContext:
    """Verify against `ca_file`; without one the certificate is not verified (as over TCP)."""
    if ca_file is not None:
        return ssl.create_default_context(cafile=ca_file)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _error_id(raw: bytes):
    try:
        doc = orjson.loads(raw)
    except ValueError:
        return None
    return doc.get("id") if isinstance(doc, dict) else None


def _error(status: int, raw: bytes, method: str, path: str) -> IggyError:
    """The IggyError of an HTTP error reply (Iggy's error JSON, `id` the error code)."""
    try:
        doc = orjson.loads(raw)
        code, reason = int(doc["id"]), str(doc.get("reason") or "")
    except (ValueError, TypeError, KeyError):
        code, reason = None, raw[:200].decode(errors="replace")
    if status == 413:
        return RequestTooLarge(f"{method} {path}: the server refused a body this large "
                               f"({reason}); send less per call")
    if code is None or code == status:      # an HTTP-layer error, no Iggy code
        return IggyError(f"HTTP {status} for {method} {path}: {reason}")
    return IggyError.from_code(code, reason or None)
