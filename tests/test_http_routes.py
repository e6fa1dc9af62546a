"""Routes added by other parts of the server (ROUTE_HOOKS), as /metrics will be: the endpoint
runs in this test's event loop with a real Server, and a hook's handler authenticates callers
with `endpoint.authenticate(request, allow_pat=True)`: a JWT or a personal access token as the
bearer, anything else 401 with Iggy's error JSON."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from iggy_fast.config import load_config
from iggy_fast.server.app import _start
from iggy_fast.server.transports import http as http_transport
from iggy_fast.testing import free_port


async def test_a_hooked_route_accepts_a_jwt_or_a_personal_access_token(tmp_path):
    def add_whoami(endpoint):
        async def whoami(request):
            user = endpoint.authenticate(request, allow_pat=True)
            return web.json_response({"user": user.username,
                                      "streams": len(endpoint.server.state.streams)})
        endpoint.app.router.add_get("/whoami", whoami)

    http_transport.ROUTE_HOOKS.append(add_whoami)
    cfg = load_config(environ={
        "IGGY_SYSTEM_PATH": str(tmp_path / "data"), "IGGY_TCP_ADDRESS": f"127.0.0.1:{free_port()}",
        "IGGY_HTTP_ADDRESS": f"127.0.0.1:{free_port()}", "IGGY_QUIC_ENABLED": "false",
        "IGGY_WEBSOCKET_ENABLED": "false", "IGGY_ROOT_USERNAME": "iggy",
        "IGGY_ROOT_PASSWORD": "iggy"})
    try:
        server, endpoints = await _start(cfg)
    finally:
        http_transport.ROUTE_HOOKS.remove(add_whoami)
    try:
        base = f"http://127.0.0.1:{server.listen_ports['http']}"
        async with aiohttp.ClientSession() as s:
            async with s.post(base + "/users/login",
                              json={"username": "iggy", "password": "iggy"}) as r:
                jwt = (await r.json())["access_token"]["token"]
            async with s.post(base + "/personal-access-tokens", json={"name": "metrics"},
                              headers={"Authorization": f"Bearer {jwt}"}) as r:
                pat = (await r.json())["token"]
            for token in (jwt, pat):
                async with s.get(base + "/whoami",
                                 headers={"Authorization": f"Bearer {token}"}) as r:
                    assert r.status == 200
                    assert (await r.json())["user"] == "iggy"
            for headers in ({}, {"Authorization": "Bearer not-a-token"},
                            {"Authorization": f"Basic {pat}"}):
                async with s.get(base + "/whoami", headers=headers) as r:
                    assert r.status == 401
                    assert (await r.json())["id"] == 40
    finally:
        for endpoint in endpoints:
            endpoint.close()
        for endpoint in endpoints:
            await endpoint.wait_closed()
        server.close()
