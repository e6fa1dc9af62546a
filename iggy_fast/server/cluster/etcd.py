"""A small asyncio client for etcd's v3 API, spoken through etcd's own JSON gateway.

Why the gateway over aiohttp rather than a gRPC client such as `aetcd`: the gateway is part of
every etcd since 3.4 (`/v3/kv/range`, `/v3/kv/txn`, `/v3/lease/*`, `/v3/watch`), so it needs
no generated protobuf code and no grpcio (a large compiled dependency whose versions the
Python packages pin tightly); aetcd has one maintainer and a single 1.0.0 release. What the
cluster needs is few calls (range, transaction, lease grant/keep-alive/revoke, watch), each a
JSON POST; a watch is one long response of newline-separated JSON messages.

Keys and values are bytes on the wire, base64 in JSON; this module takes and gives `str`
keys and `bytes` values. Integers (revisions, lease ids) are strings in the gateway's JSON
and ints here. Every call tries the configured endpoints in turn; `EtcdUnavailable` says that
none answered.
"""

from __future__ import annotations

import asyncio
import base64
import logging

import aiohttp
import orjson

log = logging.getLogger("iggy_fast.etcd")


class EtcdUnavailable(Exception):
    """No configured etcd endpoint answered."""


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def unb64(data: str) -> bytes:
    return base64.b64decode(data) if data else b""


def prefix_end(prefix: str) -> str:
    """The range end covering every key that starts with `prefix`."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class KV:
    __slots__ = ("key", "value", "mod_revision", "create_revision", "lease")

    def __init__(self, raw: dict):
        self.key = unb64(raw["key"]).decode()
        self.value = unb64(raw.get("value", ""))
        self.mod_revision = int(raw.get("mod_revision", 0))
        self.create_revision = int(raw.get("create_revision", 0))
        self.lease = int(raw.get("lease", 0))


# Transaction building blocks (the gateway's JSON for etcd's Compare and RequestOp).

def value_is(key: str, value: bytes) -> dict:
    return {"key": b64(key), "target": "VALUE", "result": "EQUAL", "value": b64(value)}


def absent(key: str) -> dict:
    return {"key": b64(key), "target": "VERSION", "result": "EQUAL", "version": "0"}


def mod_revision_is(key: str, revision: int) -> dict:
    return {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}


def put(key: str, value: bytes, lease: int = 0) -> dict:
    request = {"key": b64(key), "value": b64(value)}
    if lease:
        request["lease"] = str(lease)
    return {"request_put": request}


def delete(key: str, prefix: bool = False) -> dict:
    request = {"key": b64(key)}
    if prefix:
        request["range_end"] = b64(prefix_end(key))
    return {"request_delete_range": request}


def get(key: str, prefix: bool = False) -> dict:
    request = {"key": b64(key)}
    if prefix:
        request["range_end"] = b64(prefix_end(key))
    return {"request_range": request}


class Etcd:
    def __init__(self, endpoints: list[str], timeout: float = 5.0):
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._preferred = 0      # the endpoint that answered last

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(json_serialize=lambda o: orjson.dumps(o).decode())
        return self._session

    async def call(self, path: str, body: dict) -> dict:
        last = None
        n = len(self.endpoints)
        for i in range(n):
            index = (self._preferred + i) % n
            try:
                async with self._http().post(self.endpoints[index] + path, json=body,
                                             timeout=self._timeout) as reply:
                    data = orjson.loads(await reply.read())
                    if reply.status != 200:
                        raise EtcdError(data.get("message") or data.get("error") or str(data))
                    self._preferred = index
                    return data
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                last = e
        raise EtcdUnavailable(f"etcd unreachable at {', '.join(self.endpoints)}: "
                              f"{last or 'no endpoint'}")

    async def range(self, key: str, prefix: bool = False) -> tuple[list[KV], int]:
        body = get(key, prefix)["request_range"]
        data = await self.call("/v3/kv/range", body)
        return [KV(kv) for kv in data.get("kvs", ())], int(data["header"]["revision"])

    async def txn(self, compare: list, success: list, failure: list = ()) -> tuple[bool, dict]:
        """(succeeded, the reply); its header's revision is the store's after the txn."""
        data = await self.call("/v3/kv/txn", {"compare": compare, "success": success,
                                              "failure": list(failure)})
        return bool(data.get("succeeded")), data

    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        data = await self.call("/v3/kv/put", put(key, value, lease)["request_put"])
        return int(data["header"]["revision"])

    async def grant(self, ttl: int) -> int:
        data = await self.call("/v3/lease/grant", {"TTL": str(ttl)})
        return int(data["ID"])

    async def keepalive(self, lease: int) -> int:
        """Renew a lease once: its new TTL in seconds, 0 when it has expired."""
        data = await self.call("/v3/lease/keepalive", {"ID": str(lease)})
        return int(data.get("result", {}).get("TTL", 0))

    async def revoke(self, lease: int) -> None:
        try:
            await self.call("/v3/lease/revoke", {"ID": str(lease)})
        except EtcdError:
            pass            # already expired: what revoking wanted

    async def watch(self, prefix: str, start_revision: int):
        """Yield lists of events ((type, KV): "PUT" or "DELETE") from `start_revision` on,
        one list per watch message (etcd puts all events of one revision in one message).
        Ends with EtcdUnavailable when the stream breaks; ValueError if the revision was
        compacted."""
        body = {"create_request": {"key": b64(prefix), "range_end": b64(prefix_end(prefix)),
                                   "start_revision": str(start_revision)}}
        last = None
        for endpoint in self.endpoints:
            try:
                async with self._http().post(endpoint + "/v3/watch", json=body,
                                             timeout=aiohttp.ClientTimeout()) as reply:
                    async for line in reply.content:
                        if not line.strip():
                            continue
                        result = orjson.loads(line).get("result", {})
                        if result.get("compact_revision") and int(result["compact_revision"]):
                            raise ValueError(f"revision {start_revision} compacted")
                        events = result.get("events")
                        if events:
                            yield [(e.get("type", "PUT"), KV(e["kv"])) for e in events]
                last = "the stream ended"
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                last = e
        raise EtcdUnavailable(f"etcd watch broken: {last or 'stream ended'}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class EtcdError(Exception):
    """etcd answered with an error (a bad request, a lease not found)."""
